"""Observing stage calls: the hooks an invoker calls around every call it makes.

An observer is any object with a ``call`` method (:class:`CallObserver`). For each stage
call (one value, one split, one batched call) the invoker enters ``observer.call(...)``
before the call starts and leaves it when the call has ended, so whatever the observer
makes current on entry (a span, a log context) is current while the stage function runs,
and code inside the stage sees it. What the invoker learns during the call goes to the
:class:`CallWatch` the context yields::

    with observer.call(StageCall("verify", 0, "value", (anc,))) as watch:
        ...                             # first try
        watch.backed_off(1, True)       # a backoff ended; try 2 follows
        ...                             # second try
        watch.failed(error, 2)          # failed for good after 2 tries
    # left normally: the call ended (ok, failed, or stopped during a backoff);
    # left with an exception: the run was cancelled (or the engine has a bug)

Each call of a bisected batch (see :mod:`alto.runtime.invoke`) is a call of its own. A
call the run skips (its root got an outcome while the call waited its turn) is not made,
and is not observed.

Observers attach to runs through :func:`observing`: every run started inside the block
reads the registered observers once, when it starts, as it checks for OpenTelemetry
(:mod:`alto.runtime.spans`, which is an observer itself). A run with none registered pays
one attribute test per call::

    import time
    from contextlib import contextmanager
    from alto.runtime.observe import CallWatch, StageCall, observing

    class Tries(CallWatch):             # a watch need only override what it uses
        def __init__(self) -> None:
            self.tries = 1

        def backed_off(self, attempt: int, again: bool) -> None:
            if again:
                self.tries = attempt + 1

    class SlowCalls:                    # prints the calls that took over a second
        @contextmanager
        def call(self, call: StageCall):
            watch, start = Tries(), time.perf_counter()
            yield watch
            if time.perf_counter() - start > 1.0:
                print(call.stage, call.ancestries, watch.tries)

    with observing(SlowCalls()):
        await flow.run(inputs)

Observers see the calls made in the process that registered them: every call of the local
backend. The Ray backend makes its calls in stage actors, so it refuses a run with
observers registered (OpenTelemetry traces Ray runs through an observer in each actor,
:mod:`alto.runtime.ray.span_relay`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Literal, Protocol, Sequence

from alto.ancestry.ancestry import Ancestry
from alto.errors import UsageTypeError

CallKind = Literal["value", "split", "batch"]
"""A call that returns one value, a split (yields children), or a batched call."""


@dataclass(frozen=True, slots=True)
class StageCall:
    """One call of a stage function, as observers see it.

    Attributes:
        stage: the stage's name.
        replica: the stage replica that makes the call.
        kind: ``"value"``, ``"split"`` or ``"batch"``.
        ancestries: the ancestry of each fragment the call serves, in batch order (one,
            unless ``kind`` is ``"batch"``).
    """

    stage: str
    replica: int
    kind: CallKind
    ancestries: tuple[Ancestry, ...]


class CallWatch(Protocol):
    """What the invoker tells an observer during one call.

    Both methods do nothing here: a class that subclasses this one overrides those it
    needs.
    """

    def backed_off(self, attempt: int, again: bool) -> None:
        """The wait before retry ``attempt`` (1 for the first) ended.

        Args:
            attempt: the retry waited for: try ``attempt + 1`` follows if ``again``.
            again: False when a root the call serves got its outcome during the wait
                (a failure elsewhere, a deadline, a cancellation): the call stops there,
                without output.
        """

    def failed(self, error: Exception, attempts: int) -> None:
        """The call failed for good: ``error`` is what its last try raised.

        That was after ``attempts`` tries. The fragment (or, for a batch, the part the call
        served) fails, or is bisected further.
        """


class CallObserver(Protocol):
    """Sees every stage call of the runs it is registered for (see :func:`observing`)."""

    def call(self, call: StageCall) -> AbstractContextManager[CallWatch]:
        """A context entered as ``call`` starts and left when it ends.

        It is left with the exception that escaped the call, if any (a cancellation of
        the run); a call that failed for good is reported to :meth:`CallWatch.failed`
        first, and leaves the context normally.
        """


_REGISTERED: ContextVar[tuple[CallObserver, ...]] = ContextVar("alto_observers", default=())


@contextmanager
def observing(*observers: CallObserver) -> Iterator[None]:
    """Observe the stage calls of every run started inside this block.

    Blocks nest: an inner one adds its observers to the outer one's. The registration
    follows the context, as a :class:`~contextvars.ContextVar` does: runs started in
    tasks made inside the block see it too.

    Args:
        observers: objects with a ``call(StageCall)`` method (see :class:`CallObserver`).

    Raises:
        UsageTypeError: one of ``observers`` has no ``call`` method.
    """
    for observer in observers:
        if not callable(getattr(observer, "call", None)):
            msg = (
                f"observing() takes call observers (objects with a call(StageCall) method "
                f"returning a context manager); got {observer!r:.80}"
            )
            raise UsageTypeError(msg)
    token = _REGISTERED.set(_REGISTERED.get() + observers)
    try:
        yield
    finally:
        _REGISTERED.reset(token)


def registered() -> tuple[CallObserver, ...]:
    """The observers registered in this context (by :func:`observing`)."""
    return _REGISTERED.get()


def combined(observers: Sequence[CallObserver]) -> CallObserver | None:
    """One observer that tells ``observers`` everything, in order; ``None`` for none."""
    if not observers:
        return None
    if len(observers) == 1:
        return observers[0]
    return _Several(tuple(observers))


class _Several:
    """Several observers as one: entered in order, left in reverse order."""

    __slots__ = ("observers",)

    def __init__(self, observers: tuple[CallObserver, ...]) -> None:
        self.observers = observers

    @contextmanager
    def call(self, call: StageCall) -> Iterator[CallWatch]:
        with ExitStack() as stack:
            yield _Watches(tuple(stack.enter_context(o.call(call)) for o in self.observers))


class _Watches:
    __slots__ = ("watches",)

    def __init__(self, watches: tuple[CallWatch, ...]) -> None:
        self.watches = watches

    def backed_off(self, attempt: int, again: bool) -> None:
        for watch in self.watches:
            watch.backed_off(attempt, again)

    def failed(self, error: Exception, attempts: int) -> None:
        for watch in self.watches:
            watch.failed(error, attempts)
