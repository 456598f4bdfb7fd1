"""What a stage call needs of its run: the interface every backend's run context offers.

The driver's :class:`~alto.runtime.run.RunState` is one; a Ray actor's ``_CallRun``
(:mod:`alto.runtime.ray.actor`) is another, which reports to the driver instead of
deciding. An :class:`~alto.runtime.invoke.Invoker` uses nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import anyio

from alto.runtime.metrics import CallSpan

if TYPE_CHECKING:
    from alto.ancestry.ancestry import Ancestry
    from alto.errors import StageError
    from alto.runtime.metrics import RunStats
    from alto.runtime.observe import CallObserver


class RunContext(Protocol):
    """The run, as a stage call sees it.

    Attributes:
        settled: roots that have their outcome (a value or an error): their calls are
            skipped, and the slow ones running are stopped.
        stats: the run's statistics (``stats.spans`` is not ``None`` when calls are traced).
        observer: what observes every stage call of the run (OpenTelemetry's when the
            run is traced, those registered with :func:`alto.runtime.observe.observing`),
            as one; ``None`` when nothing does (see :mod:`alto.runtime.observe`).
    """

    settled: set[int]
    stats: RunStats
    observer: CallObserver | None

    def watch(self, root: int, scope: anyio.CancelScope) -> None:
        """Cancel ``scope`` if ``root`` gets its outcome while the call inside it runs."""

    def unwatch(self, root: int, scope: anyio.CancelScope) -> None:
        """The call inside ``scope`` ended: stop watching it."""

    def fail(self, error: StageError) -> bool:
        """A fragment failed; returns whether a tombstone should stand in for it."""

    def span(
        self, stage: str, anc: Ancestry, start: float, end: float, replica: int, size: int
    ) -> None:
        """Record one call of ``stage`` (when the run keeps a trace)."""


class CallBookkeeping:
    """What every run context does the same way.

    It watches the slow calls now running, by the root each serves, and records the spans of
    calls.

    A root that gets its outcome (a failure elsewhere, a deadline, a cancellation)
    stops the calls still working for it (:meth:`stop`). Subclasses set ``calls`` (the
    scopes by root) and ``stats``.
    """

    __slots__ = ()

    calls: dict[int, set[anyio.CancelScope]]
    stats: RunStats

    def watch(self, root: int, scope: anyio.CancelScope) -> None:
        """Cancel ``scope`` if ``root`` gets its outcome while the call inside it runs."""
        self.calls.setdefault(root, set()).add(scope)

    def unwatch(self, root: int, scope: anyio.CancelScope) -> None:
        """The call inside ``scope`` ended: stop watching it."""
        scopes = self.calls.get(root)
        if scopes is not None:
            scopes.discard(scope)
            if not scopes:
                del self.calls[root]

    def stop(self, root: int) -> None:
        """``root`` has its outcome: cancel the calls still working for it."""
        for scope in self.calls.pop(root, ()):
            scope.cancel()

    def span(
        self, stage: str, anc: Ancestry, start: float, end: float, replica: int, size: int
    ) -> None:
        """Record one call of ``stage`` (when the run keeps a trace)."""
        spans = self.stats.spans
        if spans is not None:
            spans.append(CallSpan(stage, anc, start, end, replica, size))
