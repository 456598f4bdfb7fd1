"""Calling a stage function on assembled inputs: one fragment, a split, a batch.

An :class:`Invoker` owns the call conventions (keyword binding, constants,
timeouts, retries with backoff, isolating the fragment that fails a batch,
validating arguments through :mod:`alto.runtime.validate`) and writes what the
call produced into an :class:`Outbox`. It never touches channels, so every
backend can use it.

Failures in a batched call are bisected, the way batch systems isolate poison
records: a batch whose call fails (after its retries) is called again in two
halves, recursively, down to single fragments. Each of those calls is a call
like the first: the stage's ``retries``/``retry_on`` policy applies to it in
full. A fragment fails only when a call of its own fails, so one bad fragment
fails its own root alone, and the batch's other fragments, whatever root they
belong to, deliver their outputs. A batch of ``n`` with one culprit costs
about ``2 log2(n)`` extra calls; one where every fragment fails, ``2n - 2``.
The outputs and failures of a bisected batch are delivered together when the
bisection ends (a backend that replays a lost call sees the batch as one unit).
Before a batch is called, each fragment's arguments are validated: one that does
not validate fails alone and the batch is called without it.

Every call an invoker makes is observed by the run's :class:`~alto.runtime.observe.CallObserver`,
when it has one (OpenTelemetry's, :mod:`alto.runtime.spans`, or those registered with
:func:`~alto.runtime.observe.observing`): the observer's context is entered as the call
starts and left when it ends (a value call, a split, each batched call of a bisection), and
hears of each retry's backoff and of a failure for good. The observer is read once, when
the invoker is made; without one, a call costs one attribute test more.
"""

from __future__ import annotations

import random
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Awaitable, Callable, Coroutine, Iterator, Protocol

import anyio

from alto.ancestry.ancestry import ROOT, Ancestry, child_of, root_of
from alto.compiler.plan import Node
from alto.compiler.spec import OutputKind
from alto.errors import AltoError, StageError, StageTimeout
from alto.lineage import CallSite, call_slot
from alto.runtime.context import RunContext
from alto.runtime.metrics import StageStats, now
from alto.runtime.observe import CallKind, CallWatch, StageCall
from alto.runtime.records import CHUNK, DROPPED, Close
from alto.runtime.validate import ArgumentError, argument_check

GUARD_S = 1e-3
"""Stages whose calls take longer than this (moving average) can have a call stopped
when its root gets an outcome (a failure elsewhere, a deadline, a cancellation)."""

STOPPED: Any = object()


class Outbox(Protocol):
    """Where an invoker puts the records a call produced.

    Two kinds: the engine's stage outbox and a Ray actor's message sink; both build on
    :class:`Pending`.
    """

    records: list[Any]

    def due(self, elapsed: float) -> bool:
        """Records were appended after ``elapsed`` seconds of work: is a flush worth it now?"""

    async def flush(self) -> None:
        """Send the records on."""


class Pending:
    """The records an outbox holds, and when sending them is worth it.

    A stage whose calls take longer than ``eager`` seconds (moving average of the work
    between outputs) sends each output on at once, so the next stage starts on it while
    this one works; a faster one sends them in chunks of ``CHUNK``.

    Args:
        eager: the threshold, in seconds: what one send costs on this backend, roughly.
    """

    __slots__ = ("records", "ema", "eager")

    def __init__(self, eager: float) -> None:
        self.records: list[Any] = []
        self.ema = 1.0  # start eager: the first outputs go out at once
        self.eager = eager

    def due(self, elapsed: float) -> bool:
        """Records were appended after ``elapsed`` seconds of work: is a flush worth it now?"""
        self.ema = ema = self.ema * 0.8 + elapsed * 0.2
        return ema > self.eager or len(self.records) >= CHUNK


class Invoker:
    """Runs one node's function for one replica.

    Every call it makes runs with :func:`alto.current_call` describing it, made by
    ``site`` (``None``: the calls publish no lineage, and ``current_call()`` is ``None``).
    An invoker runs its calls in the task that made it (its calls publish their lineage
    in that task's :class:`~alto.lineage.CallSlot`).
    """

    def __init__(
        self,
        node: Node,
        run: RunContext,
        stats: StageStats,
        replica: int = 0,
        site: CallSite | None = None,
    ) -> None:
        spec = node.spec
        self.node = node
        self.name = node.name
        self.run = run
        self.settled = run.settled
        self.stats = stats
        self.replica = replica
        self.site = site
        # where this invoker's calls publish their lineage: the slot of the task that made
        # it, the one task that runs its calls (the engine makes one invoker per task)
        self.slot = call_slot()
        self.kind = spec.output
        options = spec.options
        self.timeout = options.timeout
        self.retries = options.retries
        self.retry_on = options.retry_on
        self.backoff = options.retry_backoff
        self.trace = run.stats.spans is not None
        call = self._caller()
        # a batched stage checks each fragment's arguments (in batch), so that one bad
        # fragment fails alone; other stages check the arguments of each call
        self.check = argument_check(node)
        if self.check is not None and not options.batch:
            check = self.check
            self.call: Callable[[Any], Any] = lambda args: call(check(args))
        else:
            self.call = call
        self.ema = 1.0  # moving average of call time; starts high, so first calls are guarded
        self.observer = run.observer  # None (the usual case): calls are not observed
        self.watch: CallWatch | None = None  # the observed call's, while one runs

    @contextmanager
    def _observed(self, kind: CallKind, ancestries: tuple[Ancestry, ...]) -> Iterator[None]:
        """The observer's context of one call (:attr:`watch` is the call's, inside it)."""
        assert self.observer is not None
        with self.observer.call(StageCall(self.name, self.replica, kind, ancestries)) as watch:
            self.watch = watch
            try:
                yield
            finally:
                self.watch = None

    def _caller(self) -> Callable[[Any], Any]:
        """A function of the assembled inputs that starts the stage's call."""
        node = self.node
        fn = node.spec.fn
        consts = dict(node.consts)
        names = tuple(p.param for p in node.ports)
        if node.spec.options.batch:

            def call_batch(columns: tuple[list[Any], ...]) -> Any:
                kwargs = dict(zip(names, columns))
                n = len(columns[0]) if columns else 0
                for k, v in consts.items():
                    kwargs[k] = [v] * n
                return fn(**kwargs)

            return call_batch
        if not node.is_keyed:
            (name,) = names
            first = node.spec.params[0]
            if first.name == name and not first.keyword_only:
                if consts:
                    return lambda value: fn(value, **consts)
                return fn
            return lambda value: fn(**{name: value}, **consts)

        def call_keyed(values: tuple[Any, ...]) -> Any:
            kwargs = dict(zip(names, values))
            kwargs.update(consts)
            return fn(**kwargs)

        return call_keyed

    async def _backoff(self, attempt: int, root: int | None = None) -> bool:
        """Wait before retry ``attempt``; False if ``root`` got its outcome meanwhile.

        Its retry would be wasted work: the wait is cut short and no retry follows.
        """
        delay = self.backoff * (2 ** (attempt - 1)) * (0.5 + random.random())
        if root is None:
            await anyio.sleep(delay)
        elif root in self.settled:
            return False
        else:
            with anyio.CancelScope() as scope:
                self.run.watch(root, scope)
                try:
                    await anyio.sleep(delay)
                finally:
                    self.run.unwatch(root, scope)
            if root in self.settled:
                return False
        self.stats.retries += 1
        return True

    def _named(self, args: Any) -> dict[str, Any]:
        """A call's assembled inputs by parameter name (what its StageError keeps)."""
        names = tuple(p.param for p in self.node.ports)
        return dict(zip(names, args)) if self.node.is_keyed else {names[0]: args}

    def _fail(
        self,
        anc: Ancestry,
        exc: BaseException,
        attempts: int,
        outbox: Outbox,
        args: Any,
        bisected: int | None = None,
    ) -> None:
        """A call returning one value failed: fail its root, or leave a tombstone."""
        error = StageError(
            self.name, anc, exc, attempts=attempts, inputs=self._named(args), bisected=bisected
        )
        if self.run.fail(error):
            outbox.records.append((anc, DROPPED))

    async def _attempt(self, args: Any) -> Any:
        """One try of the call; past the stage's timeout it fails with :class:`StageTimeout`."""
        if self.timeout is None:
            return await self.call(args)
        with anyio.move_on_after(self.timeout):
            return await self.call(args)
        raise StageTimeout(self.name, self.timeout)  # reached only when the timeout fired

    async def _guarded(self, root: int, args: Any) -> Any:
        """A call that stops (returning ``STOPPED``) if its root gets an outcome meanwhile.

        The cancel scope costs a few microseconds, so only stages whose calls take
        longer than ``GUARD_S`` on average run their calls guarded.
        """
        run = self.run
        with anyio.CancelScope() as scope:
            run.watch(root, scope)
            try:
                return await self._attempt(args)
            finally:
                run.unwatch(root, scope)
        return STOPPED  # only reached when the scope was cancelled

    async def retry(
        self,
        error: Exception,
        again: Callable[[Any], Awaitable[Any]],
        args: Any,
        root: int | None = None,
        allowed: Callable[[], bool] | None = None,
    ) -> Any:
        """The retries of a call whose first try failed with ``error``.

        Tries ``again(args)`` while the stage's ``retries`` and ``retry_on`` allow it
        (never after an :class:`ArgumentError` or a :class:`BatchShapeError`, nor once
        ``allowed()`` says no), each after its backoff. Every kind of call (one value,
        a split, a batch) retries through here.

        Args:
            error: what the first try raised.
            again: one more try of the call.
            args: the call's inputs.
            root: the root the call serves; if it gets its outcome during a backoff, the
                retries stop (``None``: a batch, which serves several).
            allowed: whether a retry may still be made (a split that emitted children
                may not).

        Returns:
            What the first try that succeeded returned; ``STOPPED`` if ``root`` got its
            outcome during a backoff; or a :class:`Failure` with the last error and
            the number of tries made.
        """
        attempt = 1
        while (
            attempt <= self.retries
            and isinstance(error, self.retry_on)
            and not isinstance(error, NOT_RETRIED)
            and (allowed is None or allowed())
        ):
            retrying = await self._backoff(attempt, root)
            if self.watch is not None:
                self.watch.backed_off(attempt, retrying)
            if not retrying:
                return STOPPED
            attempt += 1
            try:
                return await again(args)
            except Exception as exc:
                error = exc
        return Failure(error, attempt)

    def _count(self, t0: float) -> float:
        """Count a call that started at ``t0`` and ended now; returns now."""
        t1 = now()
        stats = self.stats
        stats.calls += 1
        stats.busy_s += t1 - t0
        return t1

    async def value(self, anc: Ancestry, args: Any, outbox: Outbox) -> None:
        """One call that returns one value."""
        root = anc[ROOT]
        if root in self.settled:
            return  # the root got its outcome while this call waited its turn
        if self.observer is not None and self.watch is None:
            with self._observed("value", (anc,)):
                await self.value(anc, args, outbox)  # the same call, now observed
            return
        guarded = self.ema > GUARD_S
        if outbox.records and guarded:
            await outbox.flush()  # what passed through (other roots' closes) must not wait
        t0 = now()
        slot = self.slot
        slot.site = self.site
        slot.one = anc
        try:
            try:
                if guarded:
                    result = await self._guarded(root, args)
                elif self.timeout is None:
                    result = await self.call(args)
                else:
                    result = await self._attempt(args)
            except Exception as exc:
                again = partial(self._guarded, root) if guarded else self._attempt
                result = await self.retry(exc, again, args, root)
        finally:
            slot.one = None
        if result is STOPPED:
            return
        t1 = now()
        stats = self.stats
        stats.calls += 1
        stats.busy_s += t1 - t0
        if result.__class__ is Failure:
            if self.watch is not None:
                self.watch.failed(result.error, result.attempts)
            self._fail(anc, result.error, result.attempts, outbox, args)
            return
        self.ema = self.ema * 0.8 + (t1 - t0) * 0.2
        stats.fragments_out += 1
        if self.trace:
            self.run.span(self.name, anc, t0, t1, self.replica, 1)
        outbox.records.append((anc, result))
        if outbox.due(t1 - t0):
            await outbox.flush()

    async def split(self, anc: Ancestry, args: Any, outbox: Outbox) -> None:
        """One call that yields children; emits them as they come, then the close."""
        if self.observer is not None and self.watch is None:
            with self._observed("split", (anc,)):
                await self.split(anc, args, outbox)  # the same call, now observed
            return
        if outbox.records and self.ema > GUARD_S:
            await outbox.flush()  # what passed through (other roots' closes) must not wait
        made = [0]  # children emitted so far, also when the call fails or times out

        async def children(args: Any) -> None:
            if self.timeout is None:
                await self._children(anc, args, outbox, made)
                return
            with anyio.move_on_after(self.timeout) as timer:
                await self._children(anc, args, outbox, made)
            if timer.cancelled_caught:
                raise StageTimeout(self.name, self.timeout, split=True)

        t0 = now()
        slot = self.slot
        slot.site = self.site
        slot.one = anc
        try:
            result: Any = None
            try:
                await children(args)
            except Exception as exc:
                result = await self.retry(
                    exc, children, args, root_of(anc), allowed=lambda: made[0] == 0
                )
        finally:
            slot.one = None
        if result is STOPPED:
            return
        t1 = self._count(t0)
        if result.__class__ is Failure:
            if self.watch is not None:
                self.watch.failed(result.error, result.attempts)
            error = StageError(
                self.name, anc, result.error, attempts=result.attempts, inputs=self._named(args)
            )
            if self.run.fail(error):
                outbox.records.append(Close(anc, made[0]))  # the children so far survive
            return
        if self.trace:
            self.run.span(self.name, anc, t0, t1, self.replica, 1)
        outbox.records.append(Close(anc, made[0]))

    async def _children(self, anc: Ancestry, args: Any, outbox: Outbox, made: list[int]) -> None:
        # outbox.records is replaced on every flush: never hold on to it across an await
        name = self.name
        settled = self.settled
        stats = self.stats
        root = root_of(anc)
        make_child = child_of(anc)
        run = self.run
        try:
            async with aclosing(self.call(args)) as children:
                following = children.__anext__
                t = now()
                while True:
                    if self.ema > GUARD_S:  # a slow split: stop it if its root ends meanwhile
                        with anyio.CancelScope() as scope:
                            run.watch(root, scope)
                            try:
                                item = await following()
                            except StopAsyncIteration:
                                break
                            finally:
                                run.unwatch(root, scope)
                        if scope.cancelled_caught:
                            return
                    else:
                        try:
                            item = await following()
                        except StopAsyncIteration:
                            break
                    outbox.records.append((make_child((name, made[0])), item))
                    made[0] += 1
                    if root in settled:
                        break  # the root already has an outcome: stop splitting it
                    t1 = now()
                    self.ema = self.ema * 0.8 + (t1 - t) * 0.2
                    # flushing happens outside any cancel scope: records of other roots
                    # are never lost to a cancellation
                    if outbox.due(t1 - t):
                        await outbox.flush()
                    t = t1
        finally:
            stats.fragments_out += made[0]

    async def batch(self, items: list[tuple[Ancestry, Any]], outbox: Outbox) -> None:
        """One call on a batch of assembled inputs from any parents.

        A failed call is bisected to isolate the fragments that fail (see the
        module docstring): only those fail, each with a :class:`StageError` whose
        ``bisected`` is this batch's size; every other fragment delivers its output.
        """
        if outbox.records:
            await outbox.flush()  # what passed through (other roots' closes) must not wait
        t0 = now()
        if self.check is not None:
            items = self._valid(items, outbox)
        done: list[tuple[Ancestry, Any]] = []
        failed: list[tuple[Ancestry, Any, Exception, int]] = []
        if items:
            await self._isolate(items, done, failed, first=True)
        bisected = len(items) if len(items) > 1 else None
        for anc, values, exc, attempts in failed:  # errors before records: tombstones follow
            self._fail(anc, exc, attempts, outbox, values, bisected)
        outbox.records.extend(done)
        if outbox.due(now() - t0):
            await outbox.flush()

    def _valid(
        self, items: list[tuple[Ancestry, Any]], outbox: Outbox
    ) -> list[tuple[Ancestry, Any]]:
        """The fragments of a batch whose arguments validate, with their validated values.

        Each other fragment fails alone with its :class:`ArgumentError` (its root fails,
        or a tombstone stands in for it), as a call of its own would; it is not called.
        """
        check = self.check
        assert check is not None
        valid: list[tuple[Ancestry, Any]] = []
        for anc, values in items:
            try:
                valid.append((anc, check(values)))
            except ArgumentError as exc:
                self._fail(anc, exc, 1, outbox, values)
        return valid

    async def _isolate(
        self,
        items: list[tuple[Ancestry, Any]],
        done: list[tuple[Ancestry, Any]],
        failed: list[tuple[Ancestry, Any, Exception, int]],
        first: bool = False,
    ) -> None:
        """Call ``items`` as one batch; if that fails, call each half the same way."""
        if not first:
            items = [item for item in items if root_of(item[0]) not in self.settled]
            if not items:
                return  # their roots got an outcome meanwhile: nothing to isolate
            self.stats.bisections += 1
        outcome = await self._batch_call(items, done)
        if outcome is None:
            return
        if len(items) == 1:
            anc, values = items[0]
            failed.append((anc, values, *outcome))
            return
        mid = len(items) // 2
        await self._isolate(items[:mid], done, failed)
        await self._isolate(items[mid:], done, failed)

    async def _batch_call(
        self, items: list[tuple[Ancestry, Any]], done: list[tuple[Ancestry, Any]]
    ) -> tuple[Exception, int] | None:
        """One batched call, with its retries; its outputs go to ``done``.

        Returns ``None``, or the error and the attempts made when it failed.
        """
        if self.observer is not None and self.watch is None:
            with self._observed("batch", tuple(anc for anc, _ in items)):
                return await self._batch_call(items, done)  # the same call, now observed
        n = len(items)
        if self.node.is_keyed:
            columns = tuple(list(col) for col in zip(*(values for _, values in items)))
        else:
            columns = ([value for _, value in items],)
        t0 = now()
        slot = self.slot
        slot.site = self.site
        slot.many = tuple(anc for anc, _ in items)
        try:
            try:
                results = await self._batch_try(columns)
            except Exception as exc:
                results = await self.retry(exc, self._batch_try, columns)
        finally:
            slot.many = None
        t1 = self._count(t0)
        if results.__class__ is Failure:
            if self.watch is not None:
                self.watch.failed(results.error, results.attempts)
            return results.error, results.attempts
        self.stats.fragments_out += n
        if self.trace:
            first, _ = items[0]
            self.run.span(self.name, first, t0, t1, self.replica, n)
        done.extend((anc, result) for (anc, _), result in zip(items, results))
        return None

    async def _batch_try(self, columns: tuple[list[Any], ...]) -> Any:
        """One try of a batched call; a result of the wrong shape fails it."""
        n = len(columns[0])
        results = await self._attempt(columns)
        if not isinstance(results, (list, tuple)) or len(results) != n:
            got = (
                f"{len(results)} results"
                if isinstance(results, (list, tuple))
                else f"a {type(results).__name__}"
            )
            msg = (
                f"batched stage {self.name!r} returned {got} for a batch of {n}; "
                "a batched stage returns a list with one result per input"
            )
            raise BatchShapeError(msg)
        return results


@dataclass(frozen=True, slots=True)
class Failure:
    """A call that failed for good: its last error, and how many tries it made."""

    error: Exception
    attempts: int


class BatchShapeError(AltoError, TypeError):
    """A batched stage returned the wrong number of results.

    It is the ``cause`` of the batch's fragments' :class:`~alto.errors.StageError`; never
    retried.
    """

    code = "batch-shape"


NOT_RETRIED = (ArgumentError, BatchShapeError)
"""Errors that another try of the same call would raise again."""


def runner_for(invoker: Invoker) -> Callable[[Ancestry, Any, Outbox], Coroutine[Any, Any, None]]:
    """The invoker method that runs one assembled call of its node."""
    return invoker.value if invoker.kind is OutputKind.VALUE else invoker.split
