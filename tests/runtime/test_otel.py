"""OpenTelemetry spans of runs: the run, each root input, each stage call (alto.runtime.spans).

Spans go to the SDK's in-memory exporter through a provider passed as ``otel=``; the global
provider is only ever set in a subprocess (it can be set once per process).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

import alto
from alto import Gather, Split

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode  # noqa: E402

pytestmark = pytest.mark.anyio


def memory_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def by_kind(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    """Spans sorted into ``run``, ``input`` and one list per stage."""
    kinds: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        attrs = span.attributes or {}
        if "alto.flow" in attrs:
            kind = "run"
        elif "alto.stage" in attrs:
            kind = str(attrs["alto.stage"])
        elif "alto.root" in attrs:
            kind = "input"
        else:
            kind = span.name
        kinds.setdefault(kind, []).append(span)
    return kinds


@alto.stage
async def words(text: str) -> Split[str]:
    for word in text.split():
        yield word


@alto.stage(batch=6, batch_timeout=5.0)
async def sizes(items: list[str]) -> list[int]:
    return [len(w) for w in items]


@alto.stage
async def total(values: Gather[int]) -> int:
    return sum(values)


@alto.flow
def letters(text: str):
    return total(sizes(words(text)))


TEXTS = ["a bb", "ccc dd", "e ffff"]  # six words: one full batch of six


async def test_span_tree_of_a_split_batch_gather_flow(backend: str) -> None:
    provider, exporter = memory_provider()
    assert await letters.run(TEXTS, backend=backend, otel=provider) == [3, 5, 5]
    kinds = by_kind(exporter.get_finished_spans())

    (run,) = kinds["run"]
    assert run.parent is None
    assert run.name == "run letters"
    assert run.attributes["alto.backend"] == backend
    assert run.attributes["alto.inputs"] == 3
    assert run.attributes["alto.failures"] == 0
    trace_id = run.context.trace_id

    inputs = {span.attributes["alto.root"]: span for span in kinds["input"]}
    assert sorted(inputs) == [0, 1, 2]
    for index, span in inputs.items():
        assert span.parent.span_id == run.context.span_id
        assert span.attributes["alto.outcome"] == "ok"
        assert span.name == f"input {index}"

    calls = kinds["words"] + kinds["sizes"] + kinds["total"]
    for span in calls:  # every stage call is a child of its root's span, in the run's trace
        attrs = span.attributes
        assert span.context.trace_id == trace_id
        assert span.parent.span_id == inputs[attrs["alto.root"]].context.span_id
        assert attrs["alto.outcome"] == "ok"
        assert attrs["alto.attempts"] == 1
    assert sorted(s.attributes["alto.ancestry"] for s in kinds["words"]) == [
        "root 0", "root 1", "root 2"
    ]
    assert {s.attributes["alto.call"] for s in kinds["words"]} == {"split"}
    assert sorted(s.attributes["alto.ancestry"] for s in kinds["total"]) == [
        "root 0", "root 1", "root 2"
    ]

    # the batched stage: every fragment served once, each batch lists every root it served
    served = []
    for span in kinds["sizes"]:
        attrs = span.attributes
        ancestries = list(attrs.get("alto.batch.ancestries", [attrs["alto.ancestry"]]))
        assert attrs["alto.batch.size"] == len(ancestries)
        assert attrs["alto.level"] == 1
        roots = sorted({int(a.split(" > ")[0].removeprefix("root ")) for a in ancestries})
        assert sorted(attrs["alto.roots"]) == roots
        assert attrs["alto.root"] == attrs["alto.roots"][0]
        linked = sorted(link.attributes["alto.root"] for link in span.links)
        assert linked == sorted(attrs["alto.roots"][1:])
        for link in span.links:
            assert link.context.span_id == inputs[link.attributes["alto.root"]].context.span_id
        served += ancestries
    assert sorted(served) == [
        "root 0 > words[0]", "root 0 > words[1]", "root 1 > words[0]",
        "root 1 > words[1]", "root 2 > words[0]", "root 2 > words[1]",
    ]
    assert max(len(s.attributes["alto.roots"]) for s in kinds["sizes"]) > 1


_tries: dict[str, int] = {}


@alto.stage(retries=2, retry_backoff=0.001)
async def flaky(text: str) -> str:
    _tries[text] = _tries.get(text, 0) + 1
    if text == "bad" or _tries[text] == 1:
        msg = f"no good: {text}"
        raise ValueError(msg)
    return text.upper()


@alto.flow
def shout(text: str):
    return flaky(text)


async def test_failure_and_retry_attributes() -> None:
    _tries.clear()
    provider, exporter = memory_provider()
    with pytest.raises(alto.PipelineError):
        await shout.run(["ok", "bad"], otel=provider)
    kinds = by_kind(exporter.get_finished_spans())
    calls = {s.attributes["alto.root"]: s for s in kinds["flaky"]}
    inputs = {s.attributes["alto.root"]: s for s in kinds["input"]}

    good, bad = calls[0], calls[1]
    assert good.attributes["alto.attempts"] == 2
    assert good.attributes["alto.outcome"] == "ok"
    assert good.status.status_code is StatusCode.UNSET
    assert bad.attributes["alto.attempts"] == 3
    assert bad.attributes["alto.outcome"] == "error"
    assert bad.status.status_code is StatusCode.ERROR
    assert [e.name for e in bad.events] == ["exception"]
    assert bad.events[0].attributes["exception.type"] == "ValueError"

    assert inputs[0].attributes["alto.outcome"] == "ok"
    assert inputs[1].attributes["alto.outcome"] == "error"
    assert inputs[1].attributes["alto.error.stage"] == "flaky"
    assert inputs[1].attributes["alto.error.ancestry"] == "root 1"
    assert inputs[1].status.status_code is StatusCode.ERROR
    (run,) = kinds["run"]
    assert run.attributes["alto.failures"] == 1


async def test_rejected_and_cancelled_inputs_have_outcomes() -> None:
    provider, exporter = memory_provider()
    with pytest.raises(alto.PipelineError):
        await shout.run(["fine", 3], otel=provider)  # 3 is no str: rejected before it runs
    inputs = {s.attributes["alto.root"]: s for s in by_kind(exporter.get_finished_spans())["input"]}
    assert inputs[1].attributes["alto.outcome"] == "rejected"


def _count_spans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every span object made from now on (SDK spans and non-recording ones)."""
    import opentelemetry.sdk.trace as sdk
    import opentelemetry.trace as api

    made = [0]
    for cls in (sdk.Span, api.NonRecordingSpan):
        init = cls.__init__

        def counting(self: Any, *args: Any, __init: Any = init, **kwargs: Any) -> None:
            made[0] += 1
            __init(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    return made


async def test_no_provider_no_span_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    import opentelemetry.trace as api

    assert isinstance(api.get_tracer_provider(), api.ProxyTracerProvider)  # none configured
    made = _count_spans(monkeypatch)
    assert await letters.run(TEXTS) == [3, 5, 5]
    assert made[0] == 0
    provider, _ = memory_provider()
    assert await letters.run(TEXTS, otel=provider) == [3, 5, 5]
    assert made[0] >= 1 + 3 + 3 + 1 + 3  # the count does see spans when there are some


def test_global_provider_is_used_and_default_one_is_not() -> None:
    code = textwrap.dedent(
        """
        import alto
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        @alto.stage
        async def double(x: int) -> int:
            return 2 * x

        @alto.flow
        def f(x: int):
            return double(x)

        assert alto.run(f, [1, 2]) == [2, 4]  # the default (proxy) provider: not configured
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        assert alto.run(f, [1, 2]) == [2, 4]
        print(sorted(s.name for s in exporter.get_finished_spans()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(["double", "double", "input 0", "input 1", "run f"])


async def test_stream_is_traced_too() -> None:
    provider, exporter = memory_provider()
    results = [r async for r in letters.stream(TEXTS, otel=provider)]
    assert sorted(r.value for r in results) == [3, 5, 5]
    kinds = by_kind(exporter.get_finished_spans())
    assert len(kinds["run"]) == 1 and len(kinds["input"]) == 3


async def test_spans_made_in_a_stage_nest_under_its_call() -> None:
    provider, exporter = memory_provider()
    tracer = provider.get_tracer("user")

    @alto.stage
    async def own(x: int) -> int:
        with tracer.start_as_current_span("user work"):
            return x + 1

    @alto.flow
    def f(x: int):
        return own(x)

    assert await f.run([1], otel=provider) == [2]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["user work"].parent.span_id == spans["own"].context.span_id


def test_otlp_url_is_checked() -> None:
    with pytest.raises(ValueError, match="OTLP/HTTP endpoint"):
        alto.run(shout, ["x"], otel="127.0.0.1:6006")


@pytest.fixture(scope="module")
def emulator() -> Any:
    from alto.bench.emulator import serve_emulator

    with serve_emulator() as base_url:
        yield base_url


async def test_model_calls_nest_under_the_stage_call_that_made_them(
    backend: str, emulator: str
) -> None:
    from alto.operators.llm import OpenAIClient

    llm = OpenAIClient(emulator, "emulated")

    @alto.stage
    async def claims(answer: str) -> Split[str]:
        for sentence in answer.split(". "):
            yield sentence

    @alto.stage
    async def verify(claim: str) -> str:
        return await llm.chat([{"role": "user", "content": f"True? {claim}"}], max_tokens=4)

    @alto.stage
    async def verdicts(answers: Gather[str]) -> int:
        return len(answers)

    @alto.flow
    def check(answer: str):
        return verdicts(verify(claims(answer)))

    provider, exporter = memory_provider()
    try:
        assert await check.run(["a. b", "c"], backend=backend, otel=provider) == [2, 1]
    finally:
        await llm.aclose()
    spans = exporter.get_finished_spans()
    (run,) = [s for s in spans if s.name == "run check"]
    assert {s.context.trace_id for s in spans} == {run.context.trace_id}  # one trace
    calls = {s.context.span_id: s for s in spans if s.name == "verify"}
    chats = [s for s in spans if s.name == "chat emulated"]
    assert len(chats) == len(calls) == 3
    for chat in chats:
        parent = calls[chat.parent.span_id]
        assert chat.attributes["gen_ai.usage.output_tokens"] > 0
        assert chat.start_time >= parent.start_time and chat.end_time <= parent.end_time
    assert sorted(s.attributes["alto.ancestry"] for s in calls.values()) == [
        "root 0 > claims[0]", "root 0 > claims[1]", "root 1 > claims[0]"
    ]


async def test_a_cancelled_input_and_its_stopped_call() -> None:
    import anyio

    @alto.stage(replicas=2)
    async def slow(x: int) -> int:
        if x == 0:
            await anyio.sleep(60)
        return x

    @alto.flow
    def f(x: int):
        return slow(x)

    provider, exporter = memory_provider()
    outcomes = {}
    async with f.stream([0, 1], otel=provider) as stream:
        async for result in stream:
            outcomes[result.index] = result
            if result.index == 1:
                assert stream.cancel(0)
    assert isinstance(outcomes[0].error, alto.InputCancelled)
    kinds = by_kind(exporter.get_finished_spans())
    inputs = {s.attributes["alto.root"]: s for s in kinds["input"]}
    calls = {s.attributes["alto.root"]: s for s in kinds["slow"]}
    assert inputs[0].attributes["alto.outcome"] == "cancelled"
    assert calls[0].attributes["alto.outcome"] == "stopped"
    assert calls[1].attributes["alto.outcome"] == "ok"
