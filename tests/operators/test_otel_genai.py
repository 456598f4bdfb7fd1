"""Model-call spans of the operators, following the OpenTelemetry GenAI conventions.

Against the serving emulator (usage with cached prompt tokens), a real ``llama_cpp.server``
and the embedded :class:`LocalLLM`; inside a run each model call's span nests under the
span of the stage call that made it.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

import alto

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from alto.operators.llm import LLMServerError, OpenAIClient  # noqa: E402

pytestmark = pytest.mark.anyio

SHARED = "You check facts. Answer yes or no, then one sentence of reason. " * 4


def memory_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def model_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans()
            if "gen_ai.operation.name" in (s.attributes or {})]


def checker_flow(llm: Any) -> Any:
    @alto.stage
    async def ask(claim: str) -> str:
        return await llm.chat([{"role": "system", "content": SHARED},
                               {"role": "user", "content": claim}], max_tokens=8)

    @alto.stage
    async def ask_streamed(claim: str) -> str:
        pieces = [p async for p in llm.stream([{"role": "user", "content": claim}],
                                              max_tokens=8)]
        return "".join(pieces)

    @alto.flow
    def check(claim: str):
        return ask(claim), ask_streamed(claim)

    return check


def assert_nested(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    """Every model span is the child of the stage call that made it; by stage name."""
    spans = exporter.get_finished_spans()
    calls = {s.context.span_id: s for s in spans if "alto.stage" in (s.attributes or {})}
    by_stage: dict[str, list[ReadableSpan]] = {}
    for span in model_spans(exporter):
        parent = calls[span.parent.span_id]
        by_stage.setdefault(str(parent.attributes["alto.stage"]), []).append(span)
    return by_stage


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    from alto.bench.emulator import serve_emulator

    with serve_emulator() as base_url:
        yield base_url


async def test_emulator_calls_carry_genai_attributes(emulator: str) -> None:
    provider, exporter = memory_provider()
    async with OpenAIClient(emulator, "emulated") as llm:
        flow = checker_flow(llm)
        await flow.run(["the sky is green", "water is wet"], otel=provider)
    by_stage = assert_nested(exporter)
    assert len(by_stage["ask"]) == 2 and len(by_stage["ask_streamed"]) == 2
    for span in by_stage["ask"] + by_stage["ask_streamed"]:
        attrs = span.attributes
        assert span.name == "chat emulated"
        assert span.kind is SpanKind.CLIENT
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.provider.name"] == "openai"
        assert attrs["gen_ai.request.model"] == "emulated"
        assert attrs["gen_ai.request.max_tokens"] == 8
        assert attrs["server.address"] == "127.0.0.1"
        assert attrs["gen_ai.usage.input_tokens"] > 0
        assert 0 < attrs["gen_ai.usage.output_tokens"] <= 8
        assert "gen_ai.usage.cache_read.input_tokens" in attrs
    for span in by_stage["ask_streamed"]:
        assert span.attributes["gen_ai.server.time_to_first_token"] > 0
        assert span.attributes["alto.stream.chunks"] > 0
        assert [e.name for e in span.events] == ["gen_ai.first_token"]
    # the shared system prompt: the second call finds its blocks in the prefix cache
    cached = sorted(s.attributes["gen_ai.usage.cache_read.input_tokens"] for s in by_stage["ask"])
    assert cached[-1] >= 16


async def test_a_failed_call_is_an_error_span() -> None:
    import httpx

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "bad model"}})

    provider, exporter = memory_provider()
    llm = OpenAIClient("http://127.0.0.1:9/v1", "nope", transport=httpx.MockTransport(refuse))

    @alto.stage
    async def ask(claim: str) -> str:
        return await llm.chat([{"role": "user", "content": claim}])

    @alto.flow
    def f(claim: str):
        return ask(claim)

    with pytest.raises(alto.PipelineError):
        await f.run(["x"], otel=provider)
    (span,) = model_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == LLMServerError.__qualname__


async def test_outside_a_run_with_no_provider_nothing_is_made(emulator: str) -> None:
    from alto.operators import _model_spans

    async with OpenAIClient(emulator, "emulated") as llm:
        with _model_spans.model_call("chat", "m", "openai") as call:
            assert call is _model_spans.UNTRACED
        assert await llm.chat([{"role": "user", "content": "hi"}], max_tokens=2)


async def test_embedding_and_retrieval_spans() -> None:
    from alto.operators.embedding import HashEmbedder
    from alto.operators.retriever import Retriever

    pytest.importorskip("faiss")
    retriever = Retriever(HashEmbedder(dim=64))
    await retriever.add(["cats purr", "dogs bark", "birds sing"])
    provider, exporter = memory_provider()

    @alto.stage
    async def look(question: str) -> str:
        (hits,) = await retriever.search([question], k=2)
        return hits[0].text

    @alto.flow
    def f(question: str):
        return look(question)

    assert await f.run(["do cats purr"], otel=provider) == ["cats purr"]
    spans = {s.name: s for s in model_spans(exporter)}
    search = next(s for s in spans.values() if s.attributes["gen_ai.operation.name"] == "retrieval")
    embed = next(s for s in spans.values() if s.attributes["gen_ai.operation.name"] == "embeddings")
    assert search.attributes["alto.retrieval.k"] == 2
    assert search.attributes["alto.retrieval.passages"] == 3
    assert embed.attributes["gen_ai.embeddings.dimension.count"] == 64
    assert embed.parent.span_id == search.context.span_id  # the query embedding, inside
    calls = [s for s in exporter.get_finished_spans() if s.name == "look"]
    assert search.parent.span_id == calls[0].context.span_id


@pytest.fixture(scope="module")
def llama_server() -> Iterator[Any]:
    pytest.importorskip("llama_cpp.server")
    from faultkit import LlamaServer

    from alto.operators.llm import default_model_path

    server = LlamaServer(default_model_path())
    yield server
    server.stop()


@pytest.mark.server
@pytest.mark.models
async def test_real_llama_server_calls_carry_genai_attributes(llama_server: Any) -> None:
    provider, exporter = memory_provider()
    async with OpenAIClient(llama_server.url, "smollm2") as llm:
        flow = checker_flow(llm)
        await flow.run(["the sky is green"], otel=provider)
    by_stage = assert_nested(exporter)
    (plain,) = by_stage["ask"]
    (streamed,) = by_stage["ask_streamed"]
    for span in (plain, streamed):
        assert span.attributes["gen_ai.request.model"] == "smollm2"
        assert span.attributes["server.port"] == llama_server.port
    assert 0 < plain.attributes["gen_ai.usage.output_tokens"] <= 8
    assert plain.attributes["gen_ai.usage.input_tokens"] > 40  # the shared system prompt
    assert plain.attributes["gen_ai.response.finish_reasons"]
    assert "gen_ai.usage.cache_read.input_tokens" not in plain.attributes  # not reported
    # llama_cpp.server sends no usage in streams: no token counts, but the time to first token
    assert "gen_ai.usage.output_tokens" not in streamed.attributes
    assert 0 < streamed.attributes["alto.stream.chunks"] <= 8
    assert streamed.attributes["gen_ai.server.time_to_first_token"] > 0


@pytest.mark.models
async def test_local_llm_calls_carry_genai_attributes() -> None:
    pytest.importorskip("llama_cpp")
    from alto.operators.llm import LocalLLM

    llm = LocalLLM(n_ctx=512)
    provider, exporter = memory_provider()
    prompt = "Count: 1, 2, 3,"
    async with llm:

        @alto.stage
        async def go(text: str) -> str:
            return await llm.complete(text, max_tokens=6)

        @alto.flow
        def f(text: str):
            return go(text)

        await f.run([prompt], otel=provider)
        tokens = llm._instances[0].tokenize(prompt.encode(), add_bos=True)
    (span,) = model_spans(exporter)
    attrs = span.attributes
    assert attrs["gen_ai.operation.name"] == "text_completion"
    assert attrs["gen_ai.provider.name"] == "llama_cpp"
    assert attrs["gen_ai.usage.input_tokens"] == len(tokens)
    assert 0 < attrs["gen_ai.usage.output_tokens"] <= 6
    assert attrs["gen_ai.server.time_to_first_token"] > 0
    assert span.kind is SpanKind.INTERNAL
