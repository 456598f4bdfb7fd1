"""The LangGraph baselines: every app in every variant returns what the Alto flow returns.

With the scripted fake LLM and the hashing embedder every step is deterministic, so each
variant's outputs must equal the Alto flow's and the plain-Python reference's exactly. Both
are slowed by a few milliseconds that depend on the text, so fragments finish in an order
unrelated to their child order and every fan-in has to restore it.
"""

from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph")

import anyio  # noqa: E402

import baselines_langgraph  # noqa: E402
from alto.testing import FakeLLM, default_reply  # noqa: E402
from baselines_langgraph import APPS, RECURSION_LIMIT, VARIANTS  # noqa: E402
from examples.common import Operators, fake_operators  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.langgraph]

CASES = [(app, variant) for app in APPS for variant in VARIANTS]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def _script(prompt: str) -> str:
    """The fake LLM's default reply, one sentence per line where the prompt asks for lines.

    The default reply is 1-4 sentences on one line, which would give every claim one
    search query and every multihop question one sub-question: no fan-out to re-assemble.
    """
    reply = default_reply(prompt)
    return reply.replace(". ", ".\n") if "one per line" in prompt.lower() else reply


def _jitter(text: str) -> float:
    """1-5 ms, fixed per text."""
    return (1 + hashlib.blake2b(text.encode(), digest_size=1).digest()[0] % 5) / 1000


class JitteryLLM(FakeLLM):
    """The scripted fake LLM, each call delayed by its prompt's jitter; counts calls at once."""

    def __init__(self) -> None:
        super().__init__(_script)
        self.active = self.peak = 0

    async def _answer(self, text: str, max_tokens: int, stop: Any) -> str:
        # every call (chat, stream, structured) goes through _answer
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await anyio.sleep(_jitter(text))
            return await super()._answer(text, max_tokens, stop)
        finally:
            self.active -= 1


class JitteryEmbedder:
    """An embedder whose ``embed`` is delayed by its texts' jitter; all else delegated."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    async def embed(self, texts: list[str]) -> Any:
        await anyio.sleep(_jitter("\n".join(texts)))
        return await self.base.embed(texts)


def _operators(base: Operators) -> Operators:
    return Operators(JitteryLLM(), JitteryEmbedder(base.embedder), base.retriever,
                     dict(base.labels))


@pytest.fixture(scope="module")
async def ops() -> Operators:
    return _operators(await fake_operators())


def _inputs(name: str) -> list[Any]:
    app = importlib.import_module(f"examples.{name}")
    if name != "ingest":
        return app.load_inputs({"factcheck": 6, "multihop": 5, "summarize": 3}[name])
    # Several corpora; the first has near-duplicates injected and the second a document
    # without text, so the reports have duplicate groups and an empty document to show.
    (corpus,) = app.load_inputs(100)
    docs = corpus.documents
    copies = tuple(app.Doc(f"copy-of-{d.id}", d.text + " (mirror)") for d in docs[:3])
    return [
        app.Corpus("mixed", docs[:20] + copies + docs[20:40]),
        app.Corpus("plain", docs[40:100] + (app.Doc("empty", ""),)),
    ]


def _fragments(name: str, output: Any) -> int:
    """How many fragments an output was re-assembled from."""
    return {
        "factcheck": lambda r: len(r.claims),
        "multihop": lambda a: len(a.subanswers),
        "summarize": lambda s: len(s.sections),
        "ingest": lambda r: len(r.duplicate_groups),
    }[name](output)


@pytest.fixture(scope="module")
async def expected(ops: Operators) -> dict[str, tuple[list[Any], list[Any], list[Any]]]:
    """Per app: the inputs, the Alto flow's outputs and the reference's outputs."""
    out = {}
    for name in APPS:
        app = importlib.import_module(f"examples.{name}")
        inputs = _inputs(name)
        if name == "ingest":
            # The Alto ingest flow keeps one index for every run of the flow, so each
            # corpus gets a freshly built flow, as each LangGraph run gets a fresh index.
            alto_out = [(await app.build(ops).run([corpus]))[0] for corpus in inputs]
        else:
            alto_out = await app.build(ops).run(inputs)
        out[name] = (inputs, alto_out, await app.reference(ops, inputs))
    return out


async def test_inputs_exercise_fan_out_and_re_assembly(ops: Operators, expected: dict) -> None:
    """The comparison inputs split into several fragments, so child order is tested."""
    from examples.factcheck import Config, steps

    for name, (inputs, alto_out, reference) in expected.items():
        assert alto_out == reference, name
        assert len(inputs) >= 2, name
        assert max(_fragments(name, out) for out in reference) >= 2, name
    # factcheck's nested split: some claim has several search queries
    claims = [(r.question, c.claim) for r in expected["factcheck"][2] for c in r.claims]
    assert max([len(await steps.queries(ops, q, c, Config())) for q, c in claims]) >= 2


@pytest.mark.parametrize(("name", "variant"), CASES)
async def test_variant_equals_alto_and_reference(
    name: str, variant: str, ops: Operators, expected: dict
) -> None:
    inputs, alto_out, reference = expected[name]
    runner = baselines_langgraph.build(name, variant, ops)
    outputs = [await runner(value) for value in inputs]
    assert outputs == alto_out
    assert outputs == reference


class Scrambled:
    """A compiled graph wrapped to finish its first invocation last, counting those in flight.

    The first invocation waits until every other one has finished, so outputs complete out
    of input order (needs ``concurrency >= 2``, or the others could never start).
    """

    def __init__(self, graph: Any, n: int) -> None:
        self.graph, self.n = graph, n
        self.started = self.in_flight = self.peak = 0
        self.finished: list[int] = []
        self.others_done = anyio.Event()

    async def ainvoke(self, value: Any, config: Any, **kwargs: Any) -> Any:
        k = self.started
        self.started += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if k == 0:
                await self.others_done.wait()
            return await self.graph.ainvoke(value, config, **kwargs)
        finally:
            self.in_flight -= 1
            self.finished.append(k)
            if len(self.finished) == self.n - 1 and k != 0:
                self.others_done.set()


@pytest.mark.parametrize(("name", "variant"), CASES)
async def test_run_many_keeps_input_order(
    name: str, variant: str, ops: Operators, expected: dict
) -> None:
    inputs, alto_out, _ = expected[name]
    runner = baselines_langgraph.build(name, variant, ops)
    concurrency = min(3, len(inputs))
    runner.graph = scrambled = Scrambled(runner.graph, len(inputs))
    assert await runner.run_many(inputs, concurrency) == alto_out
    assert scrambled.finished[-1] == 0  # the first input did finish last
    assert scrambled.peak == concurrency  # closed loop: never more, and the slots were used


async def test_run_many_edges(ops: Operators, expected: dict) -> None:
    inputs, alto_out, _ = expected["multihop"]
    runner = baselines_langgraph.build("multihop", "flat", ops)
    assert await runner.run_many([], 4) == []
    assert await runner.run_many(inputs, 100) == alto_out
    assert await runner.run_many(inputs, 1) == alto_out
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        await runner.run_many(inputs, 0)


async def test_unknown_app_or_variant_names_the_choices(ops: Operators) -> None:
    with pytest.raises(ValueError, match="unknown app 'factchek'.*factcheck, multihop"):
        baselines_langgraph.build("factchek", "flat", ops)
    with pytest.raises(ValueError, match="unknown variant 'graph'.*flat, subgraph, functional"):
        baselines_langgraph.build("factcheck", "graph", ops)


async def test_max_concurrency_is_at_the_top_level_of_the_config(ops: Operators) -> None:
    runner = baselines_langgraph.build("summarize", "flat", ops, max_concurrency=7)
    assert runner.config == {"max_concurrency": 7, "recursion_limit": RECURSION_LIMIT}
    with pytest.raises(ValueError, match="max_concurrency must be at least 1"):
        baselines_langgraph.build("summarize", "flat", ops, max_concurrency=0)
    # the Functional API counts the running entrypoint against the limit: 1 would hang
    with pytest.raises(ValueError, match="functional variant needs max_concurrency >= 2"):
        baselines_langgraph.build("summarize", "functional", ops, max_concurrency=1)


@pytest.mark.parametrize("variant", ["flat", "subgraph"])
async def test_langgraph_honours_max_concurrency(
    variant: str, ops: Operators, expected: dict
) -> None:
    inputs, alto_out, _ = expected["factcheck"]
    # a question whose answer has several claims, so its LLM calls could overlap
    i = max(range(len(inputs)), key=lambda j: len(alto_out[j].claims))
    assert len(alto_out[i].claims) >= 3
    for limit, allowed in [(1, 1), (64, None)]:
        counted = Operators(JitteryLLM(), ops.embedder, ops.retriever)
        runner = baselines_langgraph.build("factcheck", variant, counted, max_concurrency=limit)
        assert await runner(inputs[i]) == alto_out[i]
        if allowed is not None:
            assert counted.llm.peak <= allowed
        else:
            assert counted.llm.peak >= 3  # without the limit the claims' calls do overlap


def test_importing_the_package_does_not_import_langgraph() -> None:
    code = (
        "import sys, alto, baselines_langgraph\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'langgraph'))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=root)
    assert out.stdout.strip() == "[]"
