"""Whether OpenTelemetry tracing is on, and through which tracer provider.

Shared by the runtime (run, input and stage-call spans, :mod:`alto.runtime.spans`) and the
operators (model-call spans, :mod:`alto.operators._model_spans`). Nothing here imports
``opentelemetry`` unless tracing was asked for: a provider counts as configured when

* a run was given one (``otel=`` on a run, ``--otel URL`` on the CLI): it is *active* in
  the run's context, so every stage call and model call of the run sees it; or
* the program set a global one (``opentelemetry.trace.set_tracer_provider``), which needs
  ``opentelemetry.trace`` imported already. OpenTelemetry's default global provider (the
  proxy that stands in until one is set, or the no-op one) does not count.

With none configured, nothing creates a span object.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from typing import Any
from weakref import WeakKeyDictionary

from alto._errors import MissingDependency, UsageError
from alto._version import __version__

SCOPE = "alto"
"""The instrumentation scope of Alto's spans."""

_ACTIVE: ContextVar[Any] = ContextVar("alto_otel_provider", default=None)
_TRACERS: WeakKeyDictionary[Any, Any] = WeakKeyDictionary()


def configured_provider() -> Any | None:
    """The tracer provider spans go to here, or ``None`` when tracing is off."""
    provider = _ACTIVE.get()
    if provider is not None:
        return provider
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None  # nobody imported OpenTelemetry, so nobody configured it
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider


def activate(provider: Any) -> Any:
    """Make ``provider`` the active one in this context; returns the token to :func:`deactivate`."""
    return _ACTIVE.set(provider)


def deactivate(token: Any) -> None:
    _ACTIVE.reset(token)


def tracer(provider: Any) -> Any:
    """Alto's tracer from ``provider`` (made once per provider)."""
    try:
        found = _TRACERS.get(provider)
    except TypeError:  # a provider that cannot be weakly referenced
        return _new_tracer(provider)
    if found is None:
        found = _TRACERS[provider] = _new_tracer(provider)
    return found


def _new_tracer(provider: Any) -> Any:
    return provider.get_tracer(SCOPE, __version__)


def otlp_provider(endpoint: str) -> Any:
    """A tracer provider that exports over OTLP/HTTP to ``endpoint`` (a ``/v1/traces`` URL).

    Its resource is ``service.name=alto``, merged with ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` from the environment. Spans are exported in batches by a
    background thread; ``shutdown()`` sends what is left.

    Raises:
        MissingDependency: the OpenTelemetry SDK or OTLP exporter is not installed.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        msg = (
            f"exporting traces to {endpoint!r} needs the OpenTelemetry SDK and OTLP exporter: "
            "pip install 'alto[otel]'"
        )
        raise MissingDependency(msg) from exc
    if not endpoint.startswith(("http://", "https://")):
        msg = (
            f"otel={endpoint!r} is not an OTLP/HTTP endpoint; expected a URL such as "
            "'http://127.0.0.1:6006/v1/traces'"
        )
        raise UsageError(msg)
    provider = TracerProvider(resource=Resource.create({"service.name": SCOPE}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider
