"""OpenTelemetry on the Ray backend: spans made in stage actors join the driver's trace.

The driver sends, with each remote call, the span context (trace and span ids) of the root
input each call serves. The actor traces its stage calls (and the model calls made inside
them) with a tracer provider of its own whose parents are those contexts, collects the
spans as they end, and ships them back with the call's messages. The driver hands them to
its own provider's span processors as they are, ids and times kept, so they reach the same
exporter as the driver's spans and form one trace per run; the actor needs no exporter and
no network route to the collector.

Only traced runs load this module (the actor is told so when it loads its stage).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from alto.ancestry.ancestry import root_of
from alto.runtime.spans import CallTracer, RunTracer

Shipped = tuple[Any, ...]
"""A finished span as plain values (see :func:`_ship`)."""


class _Collector(SpanProcessor):
    """A span processor that keeps the spans that end, to be shipped to the driver."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


class ActorTracing:
    """The tracing of one stage actor for one run.

    Attributes:
        calls: the :class:`CallTracer` that observes the actor's stage calls.
        parents: root input index -> ``(trace_id, span_id)`` of its span in the driver.
    """

    def __init__(self, settled: set[int]) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        self._trace = trace
        self.collector = _Collector()
        provider = TracerProvider()
        provider.add_span_processor(self.collector)
        self.parents: dict[int, tuple[int, int]] = {}
        self.settled = settled
        self.calls = CallTracer(provider, self.parent_of, self.stopped)

    def parent_of(self, root: int) -> Any:
        """The context that places a call's span under root ``root``'s span in the driver.

        ``None`` when the driver sent no span for it (the root had its outcome already): the
        call's span then starts a trace of its own.
        """
        trace = self._trace
        ids = self.parents.get(root)
        if ids is None:
            return None  # not sent (the root had its outcome already): a trace of its own
        context = trace.SpanContext(
            ids[0], ids[1], is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(context))

    def stopped(self, roots: list[int]) -> bool:
        """Whether one of ``roots`` has had its outcome (a call for it then ends ``stopped``)."""
        return any(root in self.settled for root in roots)

    def take(self) -> list[Shipped]:
        """The spans that ended since the last call, ready to pickle."""
        spans = self.collector.spans
        if not spans:
            return []
        self.collector.spans = []
        return [_ship(span) for span in spans]


def _ship(span: Any) -> Shipped:
    parent = span.parent
    return (
        span.name,
        span.context.trace_id,
        span.context.span_id,
        parent.span_id if parent is not None else None,
        span.kind.value,
        span.start_time,
        span.end_time,
        dict(span.attributes or {}),
        span.status.status_code.value,
        span.status.description,
        [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events],
        [(link.context.trace_id, link.context.span_id, dict(link.attributes or {}))
         for link in span.links],
        span.instrumentation_scope.name if span.instrumentation_scope else "alto",
        span.instrumentation_scope.version if span.instrumentation_scope else None,
    )


def parents_for(run: RunTracer, units: list[Any], batched: bool) -> dict[int, tuple[int, int]]:
    """The span context of each root the call units serve (what :class:`ActorTracing` needs)."""
    roots: set[int] = set()
    if batched:
        for batch in units:
            roots.update(root_of(anc) for anc, _ in batch)
    else:
        roots.update(root_of(anc) for anc, _ in units)
    parents = {}
    for root in roots:
        span = run.roots.get(root)
        if span is not None:
            context = span.get_span_context()
            parents[root] = (context.trace_id, context.span_id)
    return parents


def export(run: RunTracer, shipped: list[Shipped]) -> None:
    """Hand spans made in an actor to the driver's span processors, as they are."""
    processor = getattr(run.provider, "_active_span_processor", None)
    if processor is None:  # not the SDK's provider: it has no way to take finished spans
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import Event
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
    resource = getattr(run.provider, "resource", None)
    for (name, trace_id, span_id, parent_id, kind, start, end, attributes, code, description,
         events, links, scope, version) in shipped:
        parent = (
            trace.SpanContext(trace_id, parent_id, is_remote=True, trace_flags=flags)
            if parent_id is not None else None
        )
        span = ReadableSpan(
            name=name,
            context=trace.SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags),
            parent=parent,
            resource=resource,
            attributes=attributes,
            events=[Event(n, a, timestamp=t) for n, t, a in events],
            links=[
                trace.Link(trace.SpanContext(t, s, is_remote=True, trace_flags=flags), a)
                for t, s, a in links
            ],
            kind=trace.SpanKind(kind),
            status=trace.Status(trace.StatusCode(code), description),
            start_time=start,
            end_time=end,
            instrumentation_scope=InstrumentationScope(scope, version),
        )
        processor.on_end(span)
