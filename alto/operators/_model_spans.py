"""OpenTelemetry spans of model calls, following the GenAI semantic conventions.

Each model call made by an operator (a chat or completion by :class:`OpenAIClient` or
:class:`LocalLLM`, a batch of embeddings, a retrieval) gets a span when a tracer provider is
configured (:mod:`alto._tracing`); inside an Alto stage it is a child of the stage call's span.
Without a provider, :func:`model_call` hands back a shared do-nothing recorder and no span
object is made.

Attributes (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/):
``gen_ai.operation.name`` (``chat``, ``text_completion``, ``embeddings``, ``retrieval``),
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.request.max_tokens``,
``gen_ai.request.temperature``, ``gen_ai.request.stop_sequences``, ``gen_ai.response.model``,
``gen_ai.response.id``, ``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``, ``gen_ai.usage.cache_read.input_tokens`` (prompt tokens the
server found in its prefix cache, where it reports them), ``server.address``/``server.port``,
``error.type`` on failure; for streams, ``gen_ai.server.time_to_first_token`` (seconds from
the request to the first piece of text), a ``gen_ai.first_token`` event and
``alto.stream.chunks`` (pieces streamed: a server that reports no usage for streams, as
``llama_cpp.server``, leaves the token counts out rather than have them guessed).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, AsyncGenerator, Callable, Iterator, Mapping
from urllib.parse import urlsplit

from alto import _tracing

_KIND = {
    "chat": "LLM",
    "text_completion": "LLM",
    "embeddings": "EMBEDDING",
    "retrieval": "RETRIEVER",
}
"""OpenInference's span kind of each operation (what Arize Phoenix shows spans by)."""


class _Untraced:
    """The recorder of a call made while tracing is off: every method does nothing."""

    __slots__ = ()
    recording = False

    def answered(self, data: Mapping[str, Any]) -> None:
        pass

    def usage(self, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        pass

    def first_token(self) -> None:
        pass

    def set(self, key: str, value: Any) -> None:
        pass


UNTRACED = _Untraced()


class _Traced:
    """The recorder of a call with a span."""

    __slots__ = ("span", "started", "first")
    recording = True

    def __init__(self, span: Any) -> None:
        self.span = span
        self.started = time.monotonic()
        self.first = False

    def answered(self, data: Mapping[str, Any]) -> None:
        """Read what an OpenAI-compatible answer (or a stream's usage chunk) says of itself."""
        span = self.span
        if not isinstance(data, Mapping):
            return
        model = data.get("model")
        if isinstance(model, str):
            span.set_attribute("gen_ai.response.model", model)
        ident = data.get("id")
        if isinstance(ident, str):
            span.set_attribute("gen_ai.response.id", ident)
        choices = data.get("choices")
        if isinstance(choices, list):
            reasons = [
                c["finish_reason"]
                for c in choices
                if isinstance(c, Mapping) and isinstance(c.get("finish_reason"), str)
            ]
            if reasons:
                span.set_attribute("gen_ai.response.finish_reasons", reasons)
        usage = data.get("usage")
        if isinstance(usage, Mapping):
            self.usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
            details = usage.get("prompt_tokens_details")
            if isinstance(details, Mapping) and isinstance(details.get("cached_tokens"), int):
                span.set_attribute("gen_ai.usage.cache_read.input_tokens", details["cached_tokens"])

    def usage(self, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        if isinstance(input_tokens, int):
            self.span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        if isinstance(output_tokens, int):
            self.span.set_attribute("gen_ai.usage.output_tokens", output_tokens)

    def first_token(self) -> None:
        """The first piece of the answer arrived (call once per call; later calls do nothing)."""
        if not self.first:
            self.first = True
            self.span.set_attribute(
                "gen_ai.server.time_to_first_token", time.monotonic() - self.started
            )
            self.span.add_event("gen_ai.first_token")

    def set(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)


@contextmanager
def model_call(
    operation: str,
    model: str,
    provider: str,
    *,
    server: str | None = None,
    request: Mapping[str, Any] | None = None,
    name: str | None = None,
    stream: bool = False,
) -> Iterator[_Traced | _Untraced]:
    """A span for one model call, current while the block runs; a no-op when tracing is off.

    Args:
        operation: ``gen_ai.operation.name``.
        model: ``gen_ai.request.model``.
        provider: ``gen_ai.provider.name`` (e.g. ``openai`` for an OpenAI-compatible server).
        server: the server's base URL, for ``server.address``/``server.port``.
        request: the request's body, for ``gen_ai.request.*`` (max_tokens, temperature, stop).
        name: the span's name (default ``"{operation} {model}"``).
        stream: the call is a stream, consumed piece by piece: its span is not made the
            current span (the consumer runs between pieces).

    Yields:
        A recorder: ``answered(json)`` reads an OpenAI-style answer, ``usage(...)`` sets
        token counts, ``first_token()`` marks the first streamed piece.
    """
    tracing = _tracing.configured_provider()
    if tracing is None:
        yield UNTRACED
        return
    from opentelemetry import context, trace

    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "openinference.span.kind": _KIND.get(operation, "UNKNOWN"),
    }
    if server:
        parts = urlsplit(server)
        if parts.hostname:
            attributes["server.address"] = parts.hostname
        if parts.port:
            attributes["server.port"] = parts.port
    if request:
        for key, attribute in _REQUEST.items():
            value = request.get(key)
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                attributes[attribute] = value
        stop = request.get("stop")
        if isinstance(stop, list) and stop:
            attributes["gen_ai.request.stop_sequences"] = [str(s) for s in stop]
    kind = trace.SpanKind.CLIENT if server else trace.SpanKind.INTERNAL
    tracer = _tracing.tracer(tracing)
    span = tracer.start_span(name or f"{operation} {model}", kind=kind, attributes=attributes)
    # a stream's span is never made current: between its pieces the consumer runs, and a
    # generator may be closed from another context than the one it started in
    token = None if stream else context.attach(trace.set_span_in_context(span))
    try:
        yield _Traced(span)
    except Exception as exc:
        span.set_attribute("error.type", type(exc).__qualname__)
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{exc}"[:500]))
        raise
    finally:
        if token is not None:
            context.detach(token)
        span.end()


_REQUEST = {
    "max_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "seed": "gen_ai.request.seed",
}


async def traced_stream(
    make: Callable[[_Traced | _Untraced], AsyncGenerator[str, None]], **call_args: Any
) -> AsyncGenerator[str, None]:
    """The stream ``make(call)`` opens, inside a :func:`model_call` span that ends with it.

    ``call_args`` are :func:`model_call`'s; the first piece marks the time to first token.
    """
    with model_call(**call_args, stream=True) as call:
        pieces = make(call)
        chunks = 0
        try:
            async for piece in pieces:
                if not chunks:
                    call.first_token()
                chunks += 1
                yield piece
        finally:
            call.set("alto.stream.chunks", chunks)
            await pieces.aclose()
