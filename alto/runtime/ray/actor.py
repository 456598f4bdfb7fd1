"""The Ray actor that hosts one replica of one stage.

A :class:`StageHost` is a stateless executor: it receives *assembled* calls
from the driver (one ``(ancestry, args)`` per call, or whole batches of a
batched stage), runs them with the same :class:`~alto.runtime.invoke.Invoker`
as the local runtime (keyword binding, timeouts, retries, splits, batches) and
streams what they produce back as Ray streaming-generator items. Each item is
a :data:`Message`: the records produced since the previous item, the failures
(:class:`~alto.errors.StageError`) behind any tombstones among them, counter
deltas, trace spans, and how far the call got (for replay after a crash).

Calls run one at a time per actor, as a local replica runs one call at a
time; for stages whose calls are short, the driver keeps one more call queued
so the actor does not wait on the network between calls. Streaming gathers
(``GatherStream``) run beside the other calls and are fed their children by
:meth:`StageHost.feed`, as they arrive.

Per-actor state: the stage function travels to the actor once per run, in
:meth:`StageHost.load`, and stays until the run ends. A stage that creates a
client or loads a model lazily into a module-level variable (``global _model;
if _model is None: _model = load()``) therefore loads it once per actor and
run, not per call; state kept by a module the workers import (rather than by
the stage function's own globals) lasts as long as the actor's process.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio
import ray
import ray.cloudpickle

from alto.ancestry.ancestry import Ancestry, root_of
from alto.compiler.plan import Node
from alto.errors import AltoError, StageError
from alto.lineage import CallSite, fresh_slot
from alto.runtime.context import CallBookkeeping
from alto.runtime.invoke import Invoker, Pending, runner_for
from alto.runtime.metrics import CallSpan, RunStats, StageStats, now
from alto.runtime.records import EAGER_REMOTE_S

LINGER_S = 0.005
"""Longest a produced record waits on the actor before it is shipped."""

Message = tuple[
    list[Any], list[StageError], tuple[int, float, int, int, int], list[CallSpan], int, int,
    list[Any],
]
"""``(records, errors, (calls, busy_s, retries, fragments_out, bisections), spans, done,
shipped, otel)``.

``done`` counts the units of the call that are finished; ``shipped`` counts
the records of unit ``done`` shipped so far (its children, for a split). ``otel``
holds the OpenTelemetry spans that ended since the last message, when the run is
traced (see :mod:`alto.runtime.ray.span_relay`).
"""


class _CallRun(CallBookkeeping):
    """What an Invoker needs of the run, on the actor side: settled roots, failures, spans."""

    __slots__ = ("settled", "dead_letters", "errors", "stats", "calls", "otel", "observer")

    def __init__(
        self, settled: set[int], calls: dict[int, set[anyio.CancelScope]], dead_letters: bool,
        trace: bool,
    ) -> None:
        self.settled = settled
        self.calls = calls  # shared by the actor's calls: StageHost.forget cancels them
        self.dead_letters = dead_letters
        self.errors: list[StageError] = []
        self.stats = RunStats(spans=[] if trace else None)
        self.otel: Any = None  # the actor's ActorTracing, when the run is traced
        self.observer: Any = None  # what observes the Invoker's calls, then (its CallTracer)

    def fail(self, error: StageError) -> bool:
        """Mirror of :meth:`RunState.fail`; the driver applies the error for real."""
        self.errors.append(_shippable(error))
        if self.dead_letters and error.index not in self.settled:
            return True
        self.settled.add(error.index)
        self.stop(error.index)
        return False


def _shippable(error: StageError) -> StageError:
    """The error, its unpicklable cause or failed inputs replaced by plain stand-ins.

    The failed call's inputs travel with it (dead letters keep them).
    """
    cause, inputs = error.cause, error.inputs
    try:
        ray.cloudpickle.dumps(cause)  # type: ignore[no-untyped-call]  # unannotated in ray
    except Exception:
        cause = RuntimeError(f"{type(error.cause).__name__}: {error.cause}")
    if inputs is not None:
        try:
            ray.cloudpickle.dumps(inputs)  # type: ignore[no-untyped-call]  # unannotated in ray
        except Exception:
            inputs = {name: repr(value) for name, value in inputs.items()}
    if cause is error.cause and inputs is error.inputs:
        return error
    return StageError(
        error.stage, error.ancestry, cause, attempts=error.attempts, inputs=inputs,
        bisected=error.bisected,
    )


class _Sink(Pending):
    """The outbox of one remote call: records wait here until a message ships them.

    Each message is a remote hop (about a millisecond), so only calls slower than
    ``EAGER_REMOTE_S`` ship each output on its own.
    """

    __slots__ = ("send", "receive", "run", "stats", "done", "taken", "mark", "last")

    def __init__(self, run: _CallRun, stats: StageStats) -> None:
        super().__init__(EAGER_REMOTE_S)
        self.send, self.receive = anyio.create_memory_object_stream[Message](1)
        self.run = run
        self.stats = stats
        self.done = 0
        self.taken = 0  # records shipped so far
        self.mark = 0  # value of ``taken`` (plus records waiting) when the current unit began
        self.last = False  # the current unit is the call's last, and returns one value (or batch)

    def due(self, elapsed: float) -> bool:
        due = Pending.due(self, elapsed)  # learns the pace of outputs, also for the last unit
        # the call's last message follows at once: no message of its own for the last unit
        return due and not self.last

    async def flush(self) -> None:
        if self.records:
            await self.send.send(self.take())  # waits while the previous message is unsent

    def begin(self, unit: int) -> None:
        self.done = unit
        self.mark = self.taken + len(self.records)

    def take(self) -> Message:
        records = self.records
        self.records = []
        self.taken += len(records)
        # a message is serialised after it is taken: it must share no list that grows later
        run = self.run
        errors = run.errors
        run.errors = []
        spans = run.stats.spans
        if spans:
            run.stats.spans = []
        else:
            spans = []
        s = self.stats
        counters = (s.calls, s.busy_s, s.retries, s.fragments_out, s.bisections)
        s.calls = s.retries = s.fragments_out = s.bisections = 0
        s.busy_s = 0.0
        otel = run.otel.take() if run.otel is not None else []
        return (records, errors, counters, spans, self.done, self.taken - self.mark, otel)


class _Feed:
    """The children of one streaming gather call, as the driver sends them."""

    __slots__ = ("send", "receive", "ended", "finished")

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[Any](float("inf"))
        self.ended = False  # the driver sent the last children
        self.finished = False  # the stage function returned


class Turns:
    """Numbered jobs take turns in the order of their numbers, from 0.

    ``await take(n)`` returns once jobs ``0 .. n-1`` have ended; ``end(n)``
    ends job ``n``, also one that never took its turn (it is passed over when
    its turn comes). A job older than the turn does not wait (it came late).
    """

    __slots__ = ("turn", "skipped", "waiting")

    def __init__(self) -> None:
        self.turn = 0
        self.skipped: set[int] = set()
        self.waiting: dict[int, anyio.Event] = {}

    async def take(self, seq: int) -> None:
        """Return once jobs ``0 .. seq-1`` have ended (at once when the turn reached ``seq``)."""
        if seq > self.turn:
            event = self.waiting[seq] = anyio.Event()
            await event.wait()

    def end(self, seq: int) -> None:
        """End job ``seq``; the turn passes on to the next job not passed over.

        A job ahead of the turn is passed over when its turn comes; one behind it changes
        nothing.
        """
        if seq != self.turn:
            if seq > self.turn:  # it will not take its turn: pass over it when it comes
                self.skipped.add(seq)
                self.waiting.pop(seq, None)
            return
        turn = seq + 1
        while turn in self.skipped:
            self.skipped.discard(turn)
            turn += 1
        self.turn = turn
        event = self.waiting.pop(turn, None)
        if event is not None:
            event.set()


class HostNotLoaded(AltoError, RuntimeError):
    """A call reached a stage actor that holds no stage (it was restarted since its load).

    The driver takes it as a lost actor: it loads the actor again and runs the call
    again, and a call that cannot run again fails with :class:`~alto.errors.ActorLostError`.
    """

    code = "host-not-loaded"


class StageHost:
    """A Ray async actor that runs one replica of one stage; see the module docstring.

    A host starts empty; :meth:`load` gives it its stage for one run. Hosts
    that ask Ray for no resources are kept between runs and loaded again, so a
    run does not start a process per replica. Ray restarts a crashed host
    empty, and the driver loads it again before sending it calls.
    """

    def __init__(self) -> None:
        self.node: Node | None = None
        self._reset_turns()
        self.running: dict[asyncio.Future[None], anyio.CancelScope] = {}  # calls' work

    @ray.method(enable_task_events=False)
    async def load(
        self,
        node: Node,
        replica: int,
        run: str,
        trace: bool,
        dead_letters: bool,
        otel: bool = False,
    ) -> tuple[float, str, int]:
        """Take on replica ``replica`` of ``node`` for run ``run``, forgetting any earlier one.

        ``otel``: the run is traced with OpenTelemetry (see :mod:`alto.runtime.ray.span_relay`).

        Returns this actor's clock (``perf_counter``), Ray node id and process id.
        """
        self.node = node
        self.replica = replica
        self.trace = trace
        self.dead_letters = dead_letters
        self.settled: set[int] = set()
        # when each root of the calls sent here was submitted (driver's time.monotonic()):
        # what alto.current_call() reports, inside the calls
        self.submitted: dict[int, float] = {}
        self.site = CallSite(run, node.name, self.submitted)
        self.watched: dict[int, set[anyio.CancelScope]] = {}  # root -> scopes of slow calls
        self.feeds: dict[int, _Feed] = {}
        self.batch = node.spec.options.batch
        self.otel: Any = None
        if otel:
            from alto.runtime.ray.span_relay import ActorTracing

            self.otel = ActorTracing(self.settled)
        # moving averages that outlive one remote call: how long calls take (the invoker
        # guards slow ones) and how often outputs come (the sink ships fast ones in chunks)
        self.call_ema = 1.0
        self.flush_ema = 1.0
        self._reset_turns()
        return now(), ray.get_runtime_context().get_node_id(), os.getpid()

    @ray.method(enable_task_events=False)
    async def clock(self) -> float:
        """This actor's clock (``perf_counter``), for the driver's estimate of its offset."""
        return now()

    def _reset_turns(self) -> None:
        # Ray may start the calls of an async actor in any order: the driver numbers them
        self.turns = Turns()

    @ray.method(enable_task_events=False)
    async def skip(self, seq: int) -> None:
        """Call ``seq`` never ran here (Ray failed it before it started): pass its turn on."""
        self.turns.end(seq)

    @ray.method(enable_task_events=False)
    async def stop(self, grace: float) -> None:
        """Stop every call in progress, and wait up to ``grace`` seconds for their cleanup.

        Calls that arrive later (sent before the run was cancelled) do not start.
        """
        self.node = None
        for scope in list(self.running.values()):
            scope.cancel()
        if self.running:
            await asyncio.wait(list(self.running), timeout=grace)

    @ray.method(enable_task_events=False)
    async def unload(self) -> None:
        """Drop the stage (and what its function holds) until the next :meth:`load`."""
        self.node = None
        self.feeds = {}
        self.watched = {}

    def _invoker(self) -> tuple[Invoker, _Sink]:
        if self.node is None:
            msg = "this stage actor was restarted and holds no stage yet"
            raise HostNotLoaded(msg)
        run = _CallRun(self.settled, self.watched, self.dead_letters, self.trace)
        # the invoker's calls run in a task _pump starts from this one: they share the slot
        fresh_slot()
        if self.otel is not None:
            run.otel, run.observer = self.otel, self.otel.calls
        stats = StageStats(self.node.name)
        invoker = Invoker(self.node, run, stats, self.replica, self.site)
        invoker.ema = self.call_ema
        sink = _Sink(run, stats)
        sink.ema = self.flush_ema
        return invoker, sink

    def _learn(self, invoker: Invoker, sink: _Sink) -> None:
        self.call_ema = invoker.ema
        self.flush_ema = sink.ema

    @ray.method(enable_task_events=False)
    async def forget(self, roots: list[int]) -> None:
        """These roots have their outcome: skip their calls, and stop those running."""
        if self.node is not None:
            self._forget(roots)

    def _forget(self, roots: list[int]) -> None:
        self.settled.update(roots)
        submitted = self.submitted
        for root in roots:
            submitted.pop(root, None)
        watched = self.watched
        if watched:
            for root in roots:
                for scope in watched.pop(root, ()):
                    scope.cancel()

    @ray.method(enable_task_events=False)
    async def calls(
        self,
        units: list[Any],
        settled: list[int],
        seq: int,
        submitted: dict[int, float],
        otel: dict[int, Any] | None = None,
    ) -> AsyncIterator[Message]:
        """Run ``units`` in order (one call each, or one batch each for a batched stage).

        ``settled``: roots that got their outcome since the last call. ``submitted``: when
        each root the units serve was submitted. ``otel``: in a traced run, the span
        context of each root the units serve.

        ``seq`` numbers the remote calls the driver sent this actor: they run one at
        a time in that order, and the last message of one leaves before the next
        starts, so the outputs of an actor leave in the order it made them.
        """
        turns = self.turns
        try:
            if self.node is None:  # restarted by Ray since its load: numbered calls are stale
                msg = "this stage actor was restarted and holds no stage yet"
                raise HostNotLoaded(msg)
            self._forget(settled)
            self.submitted.update(submitted)
            if otel and self.otel is not None:
                self.otel.parents.update(otel)
            await turns.take(seq)
            invoker, sink = self._invoker()  # after the wait: the actor may have been stopped
            is_settled = self.settled.__contains__
            last = len(units) - 1
            is_split = invoker.node.is_split

            async def work() -> None:
                if self.batch:
                    for k, batch in enumerate(units):
                        sink.begin(k)
                        sink.last = k == last
                        await invoker.batch(batch, sink)
                else:
                    run_one = runner_for(invoker)
                    for k, (anc, args) in enumerate(units):
                        sink.begin(k)
                        sink.last = k == last and not is_split
                        if not is_settled(root_of(anc)):  # the root already has an outcome
                            await run_one(anc, args, sink)
                sink.begin(len(units))
                self._learn(invoker, sink)

            async for message in _pump(sink, work, self.running):
                yield message
        finally:
            turns.end(seq)

    @ray.method(enable_task_events=False)
    async def stream(
        self,
        cid: int,
        anc: Ancestry,
        settled: list[int],
        submitted: dict[int, float],
        otel: dict[int, Any] | None = None,
    ) -> AsyncIterator[Message]:
        """Run a streaming gather for parent ``anc``; its children come through :meth:`feed`."""
        invoker, sink = self._invoker()
        self._forget(settled)
        self.submitted.update(submitted)
        if otel and self.otel is not None:
            self.otel.parents.update(otel)
        feed = self.feeds.get(cid)
        if feed is None:
            feed = self.feeds[cid] = _Feed()

        async def work() -> None:
            sink.begin(0)
            try:
                await invoker.value(anc, (feed.receive,), sink)
            finally:
                feed.receive.close()
                feed.finished = True
                if feed.ended:  # the driver has sent everything: forget the feed
                    self.feeds.pop(cid, None)
            sink.begin(1)

        async for message in _pump(sink, work, self.running):
            yield message

    @ray.method(enable_task_events=False)
    async def feed(self, cid: int, values: list[Any], end: bool) -> None:
        """More children for streaming gather ``cid`` (in order); ``end``: no more follow."""
        if self.node is None:
            msg = "this stage actor was restarted and holds no stage yet"
            raise HostNotLoaded(msg)
        feed = self.feeds.get(cid)
        if feed is None:
            feed = self.feeds[cid] = _Feed()
        for value in values:
            try:
                feed.send.send_nowait(value)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                break  # the stage stopped reading early; it needs no more children
        if end:
            feed.send.close()
            feed.ended = True
            if feed.finished:
                self.feeds.pop(cid, None)


async def _pump(
    sink: _Sink,
    work: Callable[[], Awaitable[None]],
    running: dict[asyncio.Future[None], anyio.CancelScope],
) -> AsyncIterator[Message]:
    """Run ``work`` and yield the messages it produces, then a last one with the rest.

    Records are shipped when the invoker flushes (a full chunk, or a slow call
    that sends each output at once), and otherwise at most ``LINGER_S`` after
    they were produced, so closes and tombstones never wait behind a long call.
    The work is listed in ``running`` while it runs (see :meth:`StageHost.stop`).
    """
    # Stopping the work goes through an anyio cancel scope, not Task.cancel(): the stage
    # sees cancellation as under the local runtime (shielded cleanup is not interrupted).
    scope = anyio.CancelScope()

    async def run() -> None:
        try:
            with scope:
                await work()
        finally:
            sink.send.close()

    task = asyncio.ensure_future(run())
    running[task] = scope
    task.add_done_callback(lambda t: running.pop(t, None))
    receive = sink.receive
    try:
        while True:
            message: Message | None = None
            with anyio.move_on_after(LINGER_S):
                try:
                    message = await receive.receive()
                except anyio.EndOfStream:
                    break
            if message is None:
                if not sink.records and not sink.run.errors:
                    continue
                message = sink.take()
            yield message
        await task  # raises what went wrong in the host itself (not in the stage)
        yield sink.take()
    finally:
        if not task.done():
            scope.cancel()
            await asyncio.wait([task])
        receive.close()
