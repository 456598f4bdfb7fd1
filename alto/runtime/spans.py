"""OpenTelemetry spans of a run: one for the run, one per root input, one per stage call.

A run is traced when a tracer provider is configured (see :mod:`alto._tracing`): the check is
made once, when the run starts; without a provider nothing here is imported and no span
object is ever made. With one, the run's spans form one trace::

    run factcheck                       alto.flow, alto.backend, alto.inputs, alto.failures
    └── input 3                         alto.root, alto.outcome (from submission to outcome)
        ├── claims                      a stage call: alto.stage, alto.ancestry, alto.root,
        │                               alto.roots, alto.batch.size, alto.attempts, alto.outcome
        └── verify
            └── chat SmolLM2-135M       a model call made inside it (gen_ai.* attributes,
                                        :mod:`alto.operators._model_spans`)

Every stage-call span is a child of its root input's span. A batched call serves fragments of
several roots: it is a child of the first one's span, links to the others', and lists every
root it served in ``alto.roots`` (and every fragment's ancestry in ``alto.batch.ancestries``).
A stage call is the current span while the stage function runs, so spans made inside it (by
Alto's operators, or by the user's code) nest under it.

Stage calls are observed through the runtime's call-observer protocol
(:mod:`alto.runtime.observe`): a traced run's observer is a :class:`CallTracer`, whose
context around each call is the call's span. An untraced run has no such observer, so it
makes no span and pays one attribute test per call.
"""

from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Iterator

from alto import _tracing
from alto.ancestry.ancestry import format_ancestry, level, root_of
from alto.errors import AltoError, DeadlineExceeded, InputCancelled, InputError, StageError
from alto.runtime.observe import StageCall

if TYPE_CHECKING:
    from alto.compiler.plan import Plan

RUN: ContextVar[RunTracer | None] = ContextVar("alto_otel_run", default=None)
"""The tracer of the run started in this context (read once, by the run's :class:`RunState`)."""


def current_run() -> RunTracer | None:
    """The tracer of the run being started in this context; ``None`` when it is not traced."""
    return RUN.get()


@asynccontextmanager
async def traced_run(plan: Plan, backend: str, otel: Any = None) -> AsyncIterator[Any]:
    """Trace the run started inside this block, if a tracer provider is configured.

    Args:
        plan: the run's plan.
        backend: the backend's name.
        otel: ``None`` (trace only if a global provider is configured), a tracer provider,
            or the URL of an OTLP/HTTP traces endpoint (a provider made for this run,
            shut down, its spans sent, when the run ends).

    Yields:
        The run's :class:`RunTracer`, or ``None`` when the run is not traced.
    """
    owned = False
    if otel is None:
        provider = _tracing.configured_provider()
    elif isinstance(otel, str):
        provider = _tracing.otlp_provider(otel)
        owned = True
    else:
        provider = otel
    if provider is None:
        yield None
        return
    tracer = RunTracer(provider, plan, backend)
    run_token = RUN.set(tracer)
    provider_token = _tracing.activate(provider)
    try:
        yield tracer
    except BaseException as exc:
        tracer.close(exc)
        raise
    else:
        tracer.close(None)
    finally:
        _tracing.deactivate(provider_token)
        RUN.reset(run_token)
        if owned:
            import anyio.to_thread

            await anyio.to_thread.run_sync(provider.shutdown)


class RunTracer:
    """The spans of one run, made by the driver (the process that called ``run``).

    Attributes:
        provider: the tracer provider the spans go to.
        tracer: Alto's tracer from it.
    """

    def __init__(self, provider: Any, plan: Plan, backend: str) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.provider = provider
        self.tracer = _tracing.tracer(provider)
        self.span = self.tracer.start_span(
            f"run {plan.name}",
            attributes={
                "alto.flow": plan.name,
                "alto.backend": backend,
                "alto.stages": [node.name for node in plan.nodes],
                "openinference.span.kind": "CHAIN",
            },
        )
        self.context = trace.set_span_in_context(self.span)
        self.roots: dict[int, Any] = {}
        self.contexts: dict[int, Any] = {}
        self.outcomes: dict[int, AltoError | None] = {}
        self.inputs = 0
        self.failures = 0

    # -- root inputs ---------------------------------------------------------------------------

    def root_started(self, index: int) -> None:
        """Input ``index`` was submitted: its span starts."""
        span = self.tracer.start_span(
            f"input {index}",
            context=self.context,
            attributes={"alto.root": index, "openinference.span.kind": "CHAIN"},
        )
        self.roots[index] = span
        self.contexts[index] = self._trace.set_span_in_context(span)
        self.inputs += 1

    def root_finished(self, index: int, error: AltoError | None) -> None:
        """Input ``index`` got its outcome: its span ends with it."""
        self.outcomes[index] = error
        self.contexts.pop(index, None)
        span = self.roots.pop(index, None)
        if span is None:
            return
        span.set_attribute("alto.outcome", root_outcome(error))
        if error is not None:
            self.failures += 1
            if isinstance(error, StageError):
                span.set_attribute("alto.error.stage", error.stage)
                span.set_attribute("alto.error.ancestry", format_ancestry(error.ancestry))
            _error(span, self._trace, error)
        span.end()

    def parent_of(self, root: int) -> Any:
        """The context a stage call serving ``root`` starts in (the root's span)."""
        context = self.contexts.get(root)
        return context if context is not None else self.context

    def stopped(self, roots: Iterable[int]) -> bool:
        """Whether one of ``roots`` failed or was stopped (its calls still going were cut)."""
        return any(self.outcomes.get(r) is not None for r in roots)

    # -- the run -------------------------------------------------------------------------------

    def close(self, exc: BaseException | None) -> None:
        """End the run's span (and those of inputs left without an outcome)."""
        for index in list(self.roots):  # the run stopped before they got an outcome
            span = self.roots.pop(index)
            span.set_attribute("alto.outcome", "unfinished")
            span.end()
        span = self.span
        span.set_attribute("alto.inputs", self.inputs)
        span.set_attribute("alto.failures", self.failures)
        if exc is not None:
            _error(span, self._trace, exc)
        span.end()


def root_outcome(error: BaseException | None) -> str:
    """The ``alto.outcome`` of a root input's span.

    ``unfinished`` for one left without an outcome when its run stopped, e.g. a stream
    closed early.
    """
    if error is None:
        return "ok"
    if isinstance(error, InputCancelled):
        return "cancelled"
    if isinstance(error, DeadlineExceeded):
        return "deadline"
    if isinstance(error, InputError):
        return "rejected"
    return "error"


def _error(span: Any, trace: Any, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))


# -- stage calls ---------------------------------------------------------------------------------


class _Call:
    """What one stage call did, as its span learns it.

    It is the call's :class:`~alto.runtime.observe.CallWatch`.
    """

    __slots__ = ("attempts", "error", "stopped")

    def __init__(self) -> None:
        self.attempts = 1
        self.error: BaseException | None = None
        self.stopped = False

    def backed_off(self, attempt: int, again: bool) -> None:
        if again:
            self.attempts = attempt + 1
        else:
            self.stopped = True

    def failed(self, error: Exception, attempts: int) -> None:
        self.error = error
        self.attempts = attempts


class CallTracer:
    """Makes the spans of one stage's calls.

    It is the run's :class:`~alto.runtime.observe.CallObserver` when the run is traced.

    The driver's is made by :func:`driver_calls`; a Ray actor has its own (see
    :mod:`alto.runtime.ray.span_relay`), whose parents are the driver's input spans.
    """

    def __init__(self, provider: Any, parents: Any, stopped: Any) -> None:
        from opentelemetry import context, trace

        self._trace = trace
        self._context = context
        self.provider = provider
        self.tracer = _tracing.tracer(provider)
        self.parent_of = parents
        self.stopped = stopped

    @contextmanager
    def call(self, call: StageCall) -> Iterator[_Call]:
        """The span of ``call``, current while the call runs."""
        trace = self._trace
        ancestries = call.ancestries
        first = ancestries[0]
        roots = list(dict.fromkeys(root_of(a) for a in ancestries))
        attributes: dict[str, Any] = {
            "alto.stage": call.stage,
            "alto.call": call.kind,
            "alto.ancestry": format_ancestry(first),
            "alto.level": level(first),
            "alto.root": root_of(first),
            "alto.roots": roots,
            "alto.batch.size": len(ancestries),
            "alto.replica": call.replica,
            "openinference.span.kind": "CHAIN",
        }
        if len(ancestries) > 1:
            attributes["alto.batch.ancestries"] = [format_ancestry(a) for a in ancestries]
        links = []
        for root in roots[1:]:
            other = trace.get_current_span(self.parent_of(root)).get_span_context()
            if other.is_valid:
                links.append(trace.Link(other, {"alto.root": root}))
        span = self.tracer.start_span(
            call.stage, context=self.parent_of(root_of(first)), attributes=attributes, links=links
        )
        record = _Call()
        provider_token = _tracing.activate(self.provider)
        context_token = self._context.attach(trace.set_span_in_context(span))
        try:
            yield record
        except Exception as exc:  # a bug in the engine: the call did not end as a call does
            record.error = record.error or exc
            raise
        except BaseException:  # cancelled, with its run
            record.stopped = True
            raise
        finally:
            self._context.detach(context_token)
            _tracing.deactivate(provider_token)
            if record.error is not None:
                outcome = "error"
            elif record.stopped or self.stopped(roots):
                outcome = "stopped"
            else:
                outcome = "ok"
            span.set_attribute("alto.attempts", record.attempts)
            span.set_attribute("alto.outcome", outcome)
            if record.error is not None:
                _error(span, trace, record.error)
            span.end()


def driver_calls(run: RunTracer) -> CallTracer:
    """The :class:`CallTracer` of stage calls made in the driver's process."""
    return CallTracer(run.provider, run.parent_of, run.stopped)
