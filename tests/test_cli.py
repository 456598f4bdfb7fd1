"""The ``alto`` command: every subcommand, and every kind of bad input, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FAST = ["--llm", "fake", "--embedder", "hash"]


def alto(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alto.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alto: error:"), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_list() -> None:
    result = alto("list")
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == ["factcheck", "multihop", "summarize", "ingest"]


@pytest.mark.parametrize("app", ["factcheck", "multihop", "summarize", "ingest"])
def test_graph(app: str) -> None:
    result = alto("graph", app)
    assert result.returncode == 0
    assert f"flow {app}(" in result.stdout and "@level 1" in result.stdout
    assert "flowchart TD" in result.stdout and "gather" in result.stdout
    assert alto("graph", app, "--mermaid").stdout.startswith("flowchart TD")


def test_run_readable_and_json(tmp_path: Path) -> None:
    result = alto("run", "factcheck", "--n", "2", *FAST)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Q: ") == 2 and "factcheck: 2/2 inputs" in result.stdout

    result = alto("run", "summarize", "--n", "2", "--json", *FAST)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["app"] == "summarize" and len(data["results"]) == 2
    assert all(r["error"] is None and r["output"]["summary"] for r in data["results"])
    assert [s["name"] for s in data["stats"]["stages"]][0] == "sections"


def test_run_from_file_with_trace(tmp_path: Path) -> None:
    inputs = tmp_path / "questions.jsonl"
    inputs.write_text('"What is a compiler?"\n{"question": "What is an interpreter?"}\n')
    trace = tmp_path / "trace.json"
    result = alto("run", "multihop", "--input", str(inputs), "--trace", str(trace), *FAST)
    assert result.returncode == 0, result.stderr
    assert "Q: What is a compiler?" in result.stdout
    events = json.loads(trace.read_text())["traceEvents"]
    stages = {e["name"] for e in events if e.get("ph") == "X" and e.get("cat") == "stage"}
    assert {"subquestions", "embed", "search", "rerank", "answer", "compose"} <= stages


def test_run_on_the_timing_emulator() -> None:
    result = alto("run", "multihop", "--n", "2", "--llm", "emulated", "--embedder", "hash",
                  "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "timing emulation" in data["operators"]["llm"]
    assert all(r["error"] is None and r["output"]["answer"] for r in data["results"])


def test_ingest_file_is_one_corpus(tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"id": f"d{i}", "text": f"text number {i} " * 30})
                              for i in range(5)))
    result = alto("run", "ingest", "--input", str(docs), "--json", *FAST)
    assert result.returncode == 0, result.stderr
    (out,) = json.loads(result.stdout)["results"]
    assert out["input"] == {"corpus": "file-5", "documents": 5}
    assert out["output"]["documents"] == 5


def test_unknown_app() -> None:
    assert_one_line_error(alto("run", "nope"), "unknown app 'nope'", "factcheck")
    assert_one_line_error(alto("graph", "nope"), "unknown app 'nope'")


def test_missing_and_bad_input_files(tmp_path: Path) -> None:
    assert_one_line_error(alto("run", "factcheck", "--input", str(tmp_path / "none.jsonl")),
                          "does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert_one_line_error(alto("run", "factcheck", "--input", str(bad), *FAST), "not JSON")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"title": "ok", "text": "fine"}\n{"title": 3}\n')
    assert_one_line_error(alto("run", "summarize", "--input", str(wrong), *FAST), "input 1")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert_one_line_error(alto("run", "factcheck", "--input", str(empty)), "no inputs")


def test_config_file(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"max_claims": 1}')
    result = alto("run", "factcheck", "--n", "2", "--json", "--config", str(good), *FAST)
    assert result.returncode == 0, result.stderr
    assert all(len(r["output"]["claims"]) <= 1 for r in json.loads(result.stdout)["results"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"max_claims": "lots", "colour": 1}')
    assert_one_line_error(alto("run", "factcheck", "--config", str(bad), *FAST),
                          "not a valid factcheck config", "max_claims", "colour")
    assert_one_line_error(alto("run", "factcheck", "--config", str(tmp_path / "no.json")),
                          "does not exist")


def test_unreachable_llm_server() -> None:
    result = alto("run", "factcheck", "--llm", "openai", "--llm-url", "http://127.0.0.1:9/v1")
    assert_one_line_error(result, "cannot reach the LLM server at http://127.0.0.1:9/v1")
    assert_one_line_error(alto("run", "factcheck", "--llm", "openai"), "--llm-url")


def test_bad_numbers_and_debug() -> None:
    assert_one_line_error(alto("run", "factcheck", "--n", "0"), "--n must be at least 1")
    result = alto("--debug", "run", "nope")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_argument_errors_use_argparse() -> None:
    result = alto("run", "factcheck", "--llm", "gpt")
    assert result.returncode == 2 and "invalid choice: 'gpt'" in result.stderr


@pytest.mark.models
@pytest.mark.slow
def test_run_on_the_embedded_models() -> None:
    result = alto("run", "summarize", "--n", "1", "--json", timeout=900)
    assert result.returncode == 0, result.stderr
    (out,) = json.loads(result.stdout)["results"]
    assert out["error"] is None and out["output"]["summary"]
    assert "SmolLM2" in json.loads(result.stdout)["operators"]["llm"]


@pytest.mark.ray
@pytest.mark.slow
def test_run_on_ray_gives_the_local_outputs() -> None:
    outputs = {}
    for backend in ("local", "ray"):
        result = alto("run", "summarize", "--n", "2", "--json", "--backend", backend, *FAST,
                      timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        data = json.loads(result.stdout)
        assert data["backend"] == backend
        outputs[backend] = [r["output"] for r in data["results"]]
    assert outputs["ray"] == outputs["local"]
