"""The lineage of the stage call running now: :func:`current_call` and :class:`CallInfo`.

Operators read it to schedule the model calls a stage makes (oldest root first, the
replica holding a root's prefix, ...). The engine sets it once per stage call, on every
backend (on Ray, inside the actor that runs the call). Both import it, and it imports
only the ancestry algebra, so the operators need no runtime to read it.

Each task that runs stage calls holds one :class:`CallSlot` in a contextvar (set when the
task starts, by :func:`fresh_slot`); a call only stores its site and ancestry in its task's
slot and clears it after, which costs a few tens of nanoseconds where setting and resetting
a contextvar per call costs a few hundred. The :class:`CallInfo` itself is made only when
:func:`current_call` is called, so a call whose code never asks costs no object.

A task that a stage call starts sees that call (it shares the slot of the task that
started it) while the call runs; one that outlives the call is not supported (it would
see the next call of that task).

    >>> import alto
    >>> alto.current_call() is None  # outside a stage call
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

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
        """The :class:`CallInfo` of a call on the fragments of ``ancestries``.

        It carries their roots' submission times (``submitted`` plus ``offset``).
        """
        roots = tuple(root_of(a) for a in ancestries)
        known = self.submitted
        offset = self.offset
        submitted = tuple(known[r] + offset for r in roots)
        return CallInfo(self.run, self.stage, ancestries, roots, submitted)


class CallSlot:
    """Where the call running in one task is kept.

    Written by :class:`~alto.runtime.invoke.Invoker` (plain attribute stores: no object per
    call).

    Attributes:
        site: the :class:`CallSite` of the last call (``None``: no lineage published).
        one: the ancestry of the fragment of the one-fragment call running now.
        many: the ancestries of the batched call running now.
    """

    __slots__ = ("site", "one", "many")

    def __init__(self) -> None:
        self.site: CallSite | None = None
        self.one: Ancestry | None = None
        self.many: tuple[Ancestry, ...] | None = None


CALL: ContextVar[CallSlot | None] = ContextVar("alto_call", default=None)
"""The :class:`CallSlot` of the task running now."""


def fresh_slot() -> CallSlot:
    """Give the task running now a slot of its own.

    The engine does it in every task that runs stage calls, so that tasks never share one.
    """
    slot = CallSlot()
    CALL.set(slot)
    return slot


def call_slot() -> CallSlot:
    """The slot of the task running now; made on first use in a task that has none."""
    slot = CALL.get()
    return slot if slot is not None else fresh_slot()


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
    slot = CALL.get()
    if slot is None or slot.site is None:
        return None
    if slot.one is not None:
        return slot.site.info((slot.one,))
    if slot.many is not None:
        return slot.site.info(slot.many)
    return None


@contextmanager
def within_call(info: CallInfo | None) -> Iterator[None]:
    """Run a block as if inside the stage call ``info`` describes.

    There, :func:`current_call` returns an equal :class:`CallInfo` (``None``: as outside any
    stage call).

    For code that acts for a stage call somewhere else: a dispatcher shared by the processes
    of a Ray cluster admits each model call with the lineage its caller sent along
    (``CallInfo`` pickles). Tasks the block starts see the same call while it lasts.

    Example:
        >>> import alto
        >>> info = alto.CallInfo("run-1", "verify", ((3, "claims", 2),), (3,), (12.5,))
        >>> with alto.within_call(info):
        ...     alto.current_call() == info
        True
        >>> alto.current_call() is None
        True
    """
    slot = CallSlot()
    if info is not None:
        slot.site = CallSite(info.run, info.stage, dict(zip(info.roots, info.submitted)))
        if len(info.ancestries) == 1:
            slot.one = info.ancestries[0]
        else:
            slot.many = info.ancestries
    token = CALL.set(slot)
    try:
        yield
    finally:
        CALL.reset(token)


RootEnded = Callable[[str, int], None]
"""``listener(run, root)``: root input ``root`` of run ``run`` has its outcome."""

_root_listeners: list[RootEnded] = []


def on_root_end(listener: RootEnded) -> None:
    """Call ``listener(run, root)`` whenever a root input of any run gets its outcome.

    The outcome is an output, a failure or a cancellation; the call is made on the driver,
    once per root. It is for what keeps state per root outside the run (a model client's
    dispatcher remembers where each root's calls went). Registering the same listener again
    does nothing. A listener must be quick and must not raise.
    """
    if listener not in _root_listeners:
        _root_listeners.append(listener)


def root_ended(run: str, root: int) -> None:
    """Tell every :func:`on_root_end` listener that ``root`` of ``run`` has its outcome."""
    for listener in _root_listeners:
        listener(run, root)


__all__ = [
    "CALL",
    "CallInfo",
    "CallSite",
    "CallSlot",
    "call_slot",
    "current_call",
    "fresh_slot",
    "on_root_end",
    "root_ended",
    "within_call",
]
