"""Runtimes that execute a compiled plan: ``local`` (anyio, this process) and ``ray``.

Instrumentation attaches through the call-observer protocol of :mod:`alto.runtime.observe`:
the invoker (:mod:`alto.runtime.invoke`) enters each observer's context around every stage
call it makes and reports retries and failures to it. OpenTelemetry's spans
(:mod:`alto.runtime.spans`) are made by such an observer; others attach with
:func:`alto.runtime.observe.observing`.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from alto.errors import MissingDependency, UsageError

BACKENDS = ("local", "ray")


def get_backend(name: str) -> Callable[..., Awaitable[Any]]:
    """The ``run(plan, inputs, on_result, **options)`` coroutine of a backend.

    Backends are imported on first use, so ``import alto`` never imports Ray.
    """
    if name == "local":
        from alto.runtime.local import run_local

        return run_local
    if name == "ray":
        try:
            from alto.runtime.ray.backend import run_ray
        except ImportError as exc:
            msg = "backend='ray' needs Ray: pip install 'alto[ray]'"
            raise MissingDependency(msg) from exc
        return run_ray
    msg = f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}"
    raise UsageError(msg)
