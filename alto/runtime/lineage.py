"""The lineage of the stage call running now: :func:`current_call` and :class:`CallInfo`.

Operators read it to schedule the model calls a stage makes (oldest root first, the
replica holding a root's prefix, ...). The engine sets it once per stage call, on every
backend (on Ray, inside the actor that runs the call): one contextvar set and reset
around the call, holding a small tuple. The :class:`CallInfo` itself is made only when
:func:`current_call` is called, so a call whose code never asks costs no object.

    >>> import alto
    >>> alto.current_call() is None  # outside a stage call
    True
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Mapping

from alto.ancestry.ancestry import Ancestry, root_of


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a stage call is working on.

    Attributes:
        run: the id of the run the call belongs to (unique per run).
        stage: the stage's name.
        ancestries: the ancestry of each fragment in the call, in call order: one for a
            plain, split or gather call (a gather's is its parent's), several for a
            batched call.
        roots: the root input index of each fragment (aligned with ``ancestries``).
        submitted: when each fragment's root input entered the run (aligned with
            ``roots``), on the driver's ``time.monotonic()`` clock.
    """

    run: str
    stage: str
    ancestries: tuple[Ancestry, ...]
    roots: tuple[int, ...]
    submitted: tuple[float, ...]


class CallSite:
    """What every call of one stage in one run shares; makes their :class:`CallInfo`.

    Args:
        run: the run's id.
        stage: the stage's name.
        submitted: root input index -> its submission time on the driver's
            ``time.monotonic()`` clock, minus ``offset``; read when a call asks, so it
            may be a mapping that grows as the run admits inputs.
        offset: added to every ``submitted`` value (the difference between the clock the
            mapping uses and ``time.monotonic()``).
    """

    __slots__ = ("run", "stage", "submitted", "offset")

    def __init__(
        self, run: str, stage: str, submitted: Mapping[int, float], offset: float = 0.0
    ) -> None:
        self.run = run
        self.stage = stage
        self.submitted = submitted
        self.offset = offset

    def info(self, ancestries: tuple[Ancestry, ...]) -> CallInfo:
        roots = tuple(root_of(a) for a in ancestries)
        known = self.submitted
        offset = self.offset
        submitted = tuple(known[r] + offset for r in roots)
        return CallInfo(self.run, self.stage, ancestries, roots, submitted)


CALL: ContextVar[tuple[CallSite | None, tuple[Ancestry, ...]] | None] = ContextVar(
    "alto_call", default=None
)
"""The call running in this context: its stage's :class:`CallSite` (``None`` where the
invoker publishes no lineage) and its fragments' ancestries. Set by
:class:`~alto.runtime.invoke.Invoker` around every stage call."""


def current_call() -> CallInfo | None:
    """The lineage of the stage call running now, or ``None`` outside a stage call.

    Returns:
        A :class:`CallInfo` (run, stage, the ancestry, root index and root submission
        time of each fragment in the call); ``None`` when not called from inside a stage
        function (or from a task it started).

    Example:
        An operator that serves the oldest root first::

            async def complete(prompt: str) -> str:
                call = alto.current_call()
                priority = min(call.submitted) if call is not None else time.monotonic()
                return await queue.submit(prompt, priority=priority)
    """
    entry = CALL.get()
    if entry is None:
        return None
    site, ancestries = entry
    return None if site is None else site.info(ancestries)


__all__ = ["CALL", "CallInfo", "CallSite", "current_call"]
