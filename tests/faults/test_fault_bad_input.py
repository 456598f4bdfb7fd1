"""Bad input: many inputs with a few bad ones, inputs that are not inputs, and the CLI.

Per-input checks (wrong shape, wrong type, a pydantic model that does not validate at the
flow or at a stage parameter) must fail exactly the bad inputs, with a message naming the
input's index and the parameter, while every other input of the same run completes; the
run's own arguments (``inputs`` that is not a collection of inputs) are refused at once, in
one clear error. The single-input cases live in ``tests/runtime/test_control.py`` and
``tests/runtime/test_local_flows.py``; the CLI's basic errors in ``tests/test_cli.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pydantic
import pytest
from faultkit import (
    Reply,
    Request,
    ScriptedServer,
    assert_released,
    fault,
    find,
    snapshot,
)

import alto
from alto import Gather, Split

pytestmark = pytest.mark.anyio


class Doc(pydantic.BaseModel):
    title: str
    words: list[str]


class Summary(pydantic.BaseModel):
    title: str
    size: int = pydantic.Field(ge=1)


@alto.stage
async def words(doc: Doc, k: int) -> Split[str]:
    for w in doc.words[:k]:
        yield w


@alto.stage(replicas=2)
async def shout(word: str) -> str:
    return word.upper()


@alto.stage
async def summarize(ws: Gather[str], doc: Doc) -> dict[str, Any]:
    return {"title": doc.title, "size": len(ws)}


@alto.stage(retries=3, retry_backoff=0.001)  # a validation failure is never retried
async def render(summary: Summary) -> str:
    return f"{summary.title}:{summary.size}"


@alto.flow
def docs(doc: Doc, k: int = 2):
    return render(summarize(shout(words(doc, k)), doc))


def reference(doc: dict[str, Any], k: int = 2) -> str:
    return f"{doc['title']}:{len(doc['words'][:k])}"


def good(i: int) -> dict[str, Any]:
    return {"title": f"doc{i}", "words": [f"w{j}" for j in range(1 + i % 3)]}


# index -> (bad input, what the error says, the parameter it names)
BAD: dict[int, tuple[Any, str, str | None]] = {
    7: ("just a string", "got a str; flow 'docs' takes 2 parameters (doc, k)", None),
    40: ((good(1), 2, "extra"), "3 values given; flow 'docs' takes 2", None),
    99: ({"k": 1}, "missing parameter 'doc'", "doc"),
    123: ({"doc": good(2), "colour": "red"}, "unknown parameter 'colour'", "colour"),
    200: ((good(3), "two"), "parameter 'k' expects int, got str 'two'", "k"),
    256: ({"doc": {"title": 3, "words": []}}, "parameter 'doc' is not a valid Doc: title: "
          "Input should be a valid string", "doc"),
    300: ({"doc": {"title": "x"}}, "doc' is not a valid Doc: words: Field required", "doc"),
}
EMPTY = 444  # a valid Doc without words: the stage `render` rejects its summary (size >= 1)
N = 500


def inputs() -> list[Any]:
    items: list[Any] = []
    for i in range(N):
        if i in BAD:
            items.append(BAD[i][0])
        elif i == EMPTY:
            items.append({"doc": {"title": "empty", "words": []}, "k": 3})
        elif i % 2:
            items.append((good(i), 2))
        else:
            items.append({"doc": good(i)})
    return items


def check(results: list[Any]) -> None:
    """Every good input's output, and for each bad one an error naming index and parameter."""
    for i, out in enumerate(results):
        if i in BAD:
            _, text, parameter = BAD[i]
            assert isinstance(out, alto.InputError), (i, out)
            assert out.index == i and out.parameter == parameter
            assert str(out).startswith(f"input {i}: ") and text in str(out)
        elif i == EMPTY:
            assert isinstance(out, alto.StageError) and out.stage == "render" and out.index == i
            assert out.attempts == 1 and out.inputs == {"summary": {"title": "empty", "size": 0}}
            assert "parameter 'summary' of stage 'render' is not a valid Summary" in str(out)
            assert "size: Input should be greater than or equal to 1" in str(out)
        else:
            assert out == reference(good(i)), (i, out)


@fault("500 inputs, 8 of them bad: wrong shape, wrong type, invalid pydantic input at the "
       "flow and at a stage parameter", where="the inputs",
       observed="InputError (index, parameter, what was expected and found) or StageError "
       "(stage, parameter, pydantic's message; never retried), raised after the others finish",
       roots="only the bad inputs; the other 492 complete correctly, under concurrency limits")
async def test_a_few_bad_inputs_among_many() -> None:
    with anyio.fail_after(60):
        with pytest.raises(alto.PipelineError) as err:
            await docs.run(inputs(), concurrency=3)
    e = err.value
    check(e.results)
    assert [f.index for f in e.failures] == sorted([*BAD, EMPTY])
    assert str(e).startswith(f"8 of {N} inputs failed; first: input 7: ")


async def test_a_few_bad_inputs_among_many_streamed_as_they_arrive() -> None:
    async def arriving() -> Any:
        for item in inputs():
            yield item
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(60):
        results = {r.index: r async for r in docs.stream(arriving(), concurrency=5)}
    assert sorted(results) == list(range(N))
    check([results[i].value if results[i].ok else results[i].error for i in range(N)])


@fault("`inputs` that is not a collection of inputs (a number, None, a string)",
       where="the run's arguments",
       observed="TypeError at once from run()/stream(), saying what was given and how to pass "
       "inputs; nothing starts", roots="n/a (the run does not start)")
async def test_inputs_that_are_not_a_collection_are_refused_at_once() -> None:
    for given, shown in ((5, "got int 5"), (None, "got NoneType None"),
                         ("one question", "got a str")):
        with pytest.raises(TypeError) as err:
            await docs.run(given)
        assert shown in str(err.value) and "one item per input" in str(err.value)
        with pytest.raises(TypeError):
            docs.stream(given)


@fault("the inputs iterator raises half-way (e.g. a bad line in a file being read)",
       where="the run's inputs",
       observed="run() raises the iterator's own exception (in an ExceptionGroup); the inputs "
       "already in flight are cancelled; no task, thread or process is left",
       roots="all (the run cannot go on without its inputs)")
async def test_inputs_iterator_that_raises() -> None:
    def reading() -> Any:
        for i in range(50):
            yield {"doc": good(i)}
        msg = "line 51 of inputs.jsonl is not JSON"
        raise ValueError(msg)

    before = snapshot()
    with anyio.fail_after(30):
        with pytest.raises(BaseException) as err:
            await docs.run(reading())
        await assert_released(before)
    cause = find(err.value, ValueError)
    assert cause is not None and "line 51" in str(cause)


# -- the command line --------------------------------------------------------------------------


def alto_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alto.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alto: error:"), result.stderr
    for needle in needles:
        assert needle in lines[0]


FAST = ["--llm", "fake", "--embedder", "hash"]


@fault("CLI: an input or config file that is not UTF-8 text, a folder given as a file, a "
       "config that is not JSON or not an object, a bad input deep in a long file",
       where="alto run arguments",
       observed="one line on stderr naming the file (and the input's index), exit status 2, "
       "no traceback, nothing run", roots="n/a (the run does not start)")
def test_cli_file_errors_name_the_file(tmp_path: Path) -> None:
    binary = tmp_path / "questions.jsonl"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    one_line_error(alto_cli("run", "factcheck", "--input", str(binary), *FAST),
                   str(binary), "not UTF-8 text")
    one_line_error(alto_cli("run", "factcheck", "--config", str(binary), *FAST),
                   str(binary), "not UTF-8 text")
    one_line_error(alto_cli("run", "factcheck", "--input", str(tmp_path), *FAST),
                   str(tmp_path), "not a file")
    not_json = tmp_path / "config.json"
    not_json.write_text("{max_claims: 2}")
    one_line_error(alto_cli("run", "factcheck", "--config", str(not_json), *FAST),
                   "not a valid factcheck config", "Invalid JSON")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    one_line_error(alto_cli("run", "factcheck", "--config", str(listed), *FAST),
                   "not a valid factcheck config", "Input should be an object")
    many = tmp_path / "many.jsonl"
    lines = [json.dumps({"question": f"What is item {i}?"}) for i in range(60)]
    lines[37] = json.dumps({"question": 37})
    many.write_text("\n".join(lines))
    result = alto_cli("run", "factcheck", "--input", str(many), *FAST)
    one_line_error(result, str(many), "input 37")
    assert result.stdout == ""
    one_line_error(alto_cli("run", "factcheck", "--concurrency", "0", *FAST),
                   "--concurrency must be at least 1")


def factcheck_server() -> ScriptedServer:
    """Answers the factcheck app's three kinds of request; a question with "melt" fails."""

    async def handler(req: Request, reply: Reply, n: int) -> None:
        body = req.json()
        text = json.dumps(body["messages"])
        if "melt" in text:
            await reply.json(500, {"error": {"message": "the GPU melted"}})
        elif "response_format" in body:
            await reply.chat('{"supported": true, "reason": "The passage says so."}')
        elif body.get("stream"):
            await reply.stream("Compilers translate code. Interpreters run code.")
        else:
            await reply.chat("compiler translation\ninterpreter execution")

    return ScriptedServer(handler)


@fault("CLI run over a file of questions where the LLM server fails some of them",
       where="alto run --llm openai against a scripted server",
       observed="the others are printed; each failed input is printed as 'input i: FAILED:' "
       "with the stage and the LLM error (URL, HTTP 500, attempts); exit status 1",
       roots="only the questions whose LLM calls fail")
def test_cli_reports_each_failed_input_and_prints_the_rest(tmp_path: Path) -> None:
    questions = tmp_path / "questions.jsonl"
    asked = ["What is a compiler?", "Why did it melt?", "What is an interpreter?",
             "Does lead melt?"]
    questions.write_text("\n".join(json.dumps(q) for q in asked))
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    with factcheck_server() as server:
        result = alto_cli("run", "factcheck", "--input", str(questions), "--llm", "openai",
                          "--llm-url", server.url, "--embedder", "hash", env=env)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert out.count("Q: What is") == 2 and "factcheck: 2/4 inputs" in out
    for i in (1, 3):
        (line,) = [ln for ln in out.splitlines() if ln.startswith(f"input {i}: FAILED:")]
        assert "stage 'claims' failed on input" in line and f"{server.url}/chat/completions" in line
        assert "HTTP 500 after 4 attempts" in line and "the GPU melted" in line
