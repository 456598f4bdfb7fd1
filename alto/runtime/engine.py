"""The engine: what every backend does the same way to run a plan.

:class:`Engine` owns what every backend shares: the inboxes, links and outboxes wired
from the plan (a stage's replica wiring decided once, as a :class:`StageWiring`), the
input source, deadlines, the task-group skeleton of a run, and the batch policy.
:func:`assemble_calls` is the read -> assemble loop every stage runs (backends differ
only in what they do when the inbox is empty, before a read, and when the loop lets
other tasks run). A backend is an :class:`Executor` that runs the assembled calls:
replica tasks in this process (:mod:`alto.runtime.local`), or actors on Ray
(:mod:`alto.runtime.ray.backend`).

Records move between stages in chunks (``(port, records)``): a producer's
:class:`StageOutbox` gathers what its calls produce and sends it along its links, each
link to one port of one consumer (by key to the replica inboxes of a routed stage). The
flush policy adapts to each stage (:class:`~alto.runtime.invoke.Pending`): a stage whose
calls take long sends each output at once, so the next stage starts on it while this one
works on the next.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import (
    Any,
    AsyncIterable,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Protocol,
    TypeVar,
)

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from alto.ancestry.ancestry import key_length, parent_key, root
from alto.compiler.plan import INPUT_PREFIX, Node, Plan, PortMode
from alto.errors import InputError, StageError, UsageError
from alto.result import Result
from alto.runtime.assemble import Assembler
from alto.runtime.batching import BatchPolicy
from alto.runtime.invoke import Outbox, Pending
from alto.runtime.metrics import RunStats, StageStats, now
from alto.runtime.records import CHUNK, EAGER_S, YIELD_EVERY, Close
from alto.runtime.run import RunControl, RunState, bind_input

T = TypeVar("T")
Chunk = tuple[int, list[Any]]
"""What an inbox carries: ``(port index, records)``."""
StageTask = tuple[str, Callable[[], Coroutine[Any, Any, None]]]
"""A task that runs (part of) a stage: its name, and what it runs."""


async def next_item(
    receive: MemoryObjectReceiveStream[T], idle: Callable[[], Awaitable[T]]
) -> T:
    """The next item of ``receive``.

    At once when one is there, else what ``idle()`` returns (it awaits the next). Raises
    ``anyio.EndOfStream`` at the end.
    """
    try:
        return receive.receive_nowait()
    except anyio.WouldBlock:
        return await idle()


async def assemble_calls(
    receive: MemoryObjectReceiveStream[Any],
    assembler: Assembler,
    outbox: Outbox,
    stats: StageStats,
    submit: Callable[[list[Any]], Awaitable[None]],
    idle: Callable[[], Awaitable[Any]],
    *,
    room: Callable[[], Awaitable[None]] | None = None,
    pause: Callable[[], Awaitable[None]] = anyio.lowlevel.checkpoint,
) -> None:
    """Read the stage's inbox to its end, assembling calls.

    ``submit`` takes each list of ready calls (and may keep none of the list: it is
    cleared after).

    Args:
        receive: the stage's inbox (chunks: ``(port, records)``).
        assembler: the stage's assembler.
        outbox: where pass-through records (closes, tombstones) go; flushed at a chunk.
        stats: the stage's counters (``queued``, ``fragments_in``).
        submit: runs, hands out or queues the ready calls.
        idle: awaited when the inbox is empty; returns its next chunk.
        room: awaited before each read, if given (backpressure of the backend).
        pause: awaited every ``YIELD_EVERY`` records, so that other tasks run.
    """
    accept = assembler.accept
    main = assembler.main
    ready: list[Any] = []
    handled = 0
    while True:
        if room is not None:
            await room()
        try:
            port, records = await next_item(receive, idle)
        except anyio.EndOfStream:
            break
        n = len(records)
        stats.queued -= n
        closes = accept(port, records, outbox.records, ready)
        if port == main:
            stats.fragments_in += n - closes
        if ready:
            await submit(ready)
            ready.clear()
        if len(outbox.records) >= CHUNK:
            await outbox.flush()
        handled += n
        if handled >= YIELD_EVERY:
            handled = 0
            await pause()


class Wiring(Enum):
    """How the replicas of a stage get their work."""

    SHARED = "shared"
    """One inbox that every replica reads, each assembling its own calls: a stage of one
    input with no state (the fast path; records go one per chunk when replicas share it,
    to spread them)."""
    ROUTED = "routed"
    """One inbox per replica, records routed by key: a batched or streaming-gather keyed
    stage (a batch forms, and a streaming gather is fed, where its inputs are)."""
    HANDED_OUT = "handed out"
    """One inbox and one assembler, which hands each call to whichever replica is free:
    other keyed stages (joins, broadcasts, gathers) with replicas."""
    DRIVER = "driver"
    """One inbox read by a driver that assembles every call and sends it to the stage's
    actors (the Ray executor)."""


@dataclass(frozen=True, slots=True)
class StageWiring:
    """A stage's wiring, decided once per run (:meth:`local` or :meth:`driver`).

    Read wherever inboxes, links and workers are made.

    Attributes:
        kind: how the replicas get their work.
        inboxes: how many inboxes the stage has.
        buffer: chunks each inbox holds.
        max_chunk: most records in one chunk sent to the stage.
    """

    kind: Wiring
    inboxes: int
    buffer: int
    max_chunk: int

    @staticmethod
    def local(node: Node) -> StageWiring:
        """The wiring of ``node`` in the local runtime."""
        opts = node.spec.options
        replicas = opts.replicas
        if not node.is_keyed:
            spread = replicas > 1 and not opts.batch  # one fragment per chunk spreads the work
            return StageWiring(Wiring.SHARED, 1, opts.buffer * replicas, 1 if spread else CHUNK)
        streams = any(p.mode is PortMode.GATHER_STREAM for p in node.ports)
        if replicas > 1 and (opts.batch or streams):
            return StageWiring(Wiring.ROUTED, replicas, opts.buffer, CHUNK)
        kind = Wiring.HANDED_OUT if replicas > 1 else Wiring.SHARED
        return StageWiring(kind, 1, opts.buffer * replicas, CHUNK)

    @staticmethod
    def driver(node: Node) -> StageWiring:
        """The wiring of ``node`` when a driver assembles its calls for remote replicas."""
        opts = node.spec.options
        return StageWiring(Wiring.DRIVER, 1, opts.buffer * opts.replicas, CHUNK)


# -- links and outboxes ----------------------------------------------------------------------


class Link:
    """Delivers one producer's records to one port of one stage (one producer's copy)."""

    __slots__ = ("port", "sends", "stats", "max_chunk", "mode", "key_len", "primary")

    def __init__(
        self,
        node: Node,
        port: int,
        sends: list[MemoryObjectSendStream[Chunk]],
        stats: StageStats,
        max_chunk: int,
    ) -> None:
        self.port = port
        self.sends = sends
        self.stats = stats
        self.max_chunk = max_chunk
        self.mode = node.ports[port].mode
        self.key_len = key_length(node.level)
        self.primary = node.primary == port

    def _wanted(self, close: Close) -> bool:
        if self.mode is PortMode.GATHER or self.mode is PortMode.GATHER_STREAM:
            if len(close.parent) == self.key_len:
                return True
        return self.primary

    async def send(self, records: list[Any]) -> None:
        """Send ``records`` to the stage's inbox, or by key to its replicas' inboxes when routed.

        Closes this port does not act on are left out; records go in chunks of up to
        ``max_chunk``.
        """
        if len(self.sends) == 1:
            if not self.primary or self.mode is not PortMode.SAME:
                records = [r for r in records if r.__class__ is tuple or self._wanted(r)]
            await self._put(self.sends[0], records)
            return
        # A routed stage (one inbox per replica): route by the key each record belongs to.
        n = len(self.sends)
        parts: list[list[Any]] = [[] for _ in range(n)]
        mode = self.mode
        for rec in records:
            if rec.__class__ is tuple:
                if mode is PortMode.SAME:
                    parts[hash(rec[0]) % n].append(rec)
                elif mode is PortMode.BROADCAST:
                    for part in parts:
                        part.append(rec)
                else:
                    parts[hash(parent_key(rec[0])) % n].append(rec)
            elif self._wanted(rec):
                parts[hash(rec.parent) % n].append(rec)
        for send, part in zip(self.sends, parts):
            if part:
                await self._put(send, part)

    async def _put(self, send: MemoryObjectSendStream[Chunk], records: list[Any]) -> None:
        if not records:
            return
        stats = self.stats
        stats.queued += len(records)
        if stats.queued > stats.peak_queue:
            stats.peak_queue = stats.queued
        step = self.max_chunk
        for i in range(0, len(records), step):
            chunk = (self.port, records if step >= len(records) else records[i : i + step])
            try:
                send.send_nowait(chunk)
            except anyio.WouldBlock:
                await send.send(chunk)

    async def aclose(self) -> None:
        """Close the send streams to the port's inboxes."""
        for send in self.sends:
            await send.aclose()


class SinkLink:
    """Delivers the level-0 values of one flow output to the run's outcomes."""

    __slots__ = ("run", "slot")

    def __init__(self, run: RunState, slot: int) -> None:
        self.run = run
        self.slot = slot

    async def send(self, records: list[Any]) -> None:
        """Give each value to the run as flow output number ``slot``; closes are ignored."""
        output = self.run.output
        for rec in records:
            if rec.__class__ is tuple:
                output(rec[0], rec[1], self.slot)

    async def aclose(self) -> None:
        """Nothing to close: the run's outcomes outlive the route."""
        pass


class StageOutbox(Pending):
    """Records one task of a stage produced, waiting to be sent to every consumer.

    An :class:`~alto.runtime.invoke.Outbox`.

    The tasks of one stage share its links (``users`` counts the outboxes still open);
    the last outbox to close closes them. One set of send streams per stage, not per
    replica: a stage of *n* replicas feeding a routed stage of *n* replicas would
    otherwise clone n x n streams.
    """

    __slots__ = ("links", "users")

    def __init__(self, links: list[Any], users: list[int] | None = None) -> None:
        super().__init__(EAGER_S)
        self.links = links
        self.users = users if users is not None else [1]

    def sharing(self) -> StageOutbox:
        """Another outbox on the same links.

        Counted among their users by whoever made ``users`` (see :meth:`Engine.outboxes`).
        """
        return StageOutbox(self.links, self.users)

    async def flush(self) -> None:
        """Send the records held to every route, and hold none."""
        records = self.records
        if records:
            self.records = []
            for link in self.links:
                await link.send(records)

    async def __aenter__(self) -> StageOutbox:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Flush, then close the routes if this was the last outbox open on them."""
        try:
            await self.flush()
        finally:
            self.users[0] -= 1
            if self.users[0] == 0:
                for link in self.links:
                    await link.aclose()


async def idle_receive(
    receive: MemoryObjectReceiveStream[T], outbox: Outbox, stats: StageStats
) -> T:
    """The next item of an empty inbox, sending what ``outbox`` holds first.

    Counts the stage as not working while it waits. Raises ``anyio.EndOfStream`` at the end.
    """
    await outbox.flush()
    stats.working -= 1
    try:
        return await receive.receive()
    finally:
        stats.working += 1


# -- executors -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StagePorts:
    """What the engine hands an executor for one stage.

    Attributes:
        node: the stage.
        wiring: its wiring (what :meth:`Executor.wiring` said).
        inboxes: the receive end of each of its inboxes; the executor clones those it
            reads (the engine closes these after :meth:`Executor.stage_tasks`).
        outbox: where its records go; :meth:`StageOutbox.sharing` gives more outboxes on
            the same links, counted in ``outbox.users`` (set it to how many there are).
    """

    node: Node
    wiring: StageWiring
    inboxes: list[MemoryObjectReceiveStream[Chunk]]
    outbox: StageOutbox


class Executor(Protocol):
    """Runs the assembled calls of a plan's stages; the :class:`Engine` does the rest.

    The engine asks :meth:`wiring` for every stage when it is made; in :meth:`Engine.run`
    it calls :meth:`start`, then :meth:`stage_tasks` for every stage, runs those tasks and
    :meth:`beside` in the run's task group, and always calls :meth:`close` at the end.
    """

    def wiring(self, node: Node) -> StageWiring:
        """How the replicas of ``node`` get their work (asked once per stage)."""
        ...

    async def start(self, engine: Engine) -> None:
        """Get ready to run the calls of ``engine``'s run (on Ray: start the actors)."""
        ...

    def stage_tasks(self, ports: StagePorts) -> list[StageTask]:
        """The tasks (name, function) that read one stage's inboxes to their end.

        They assemble its calls, run them, and close its outbox.
        """
        ...

    def busy(self, stage: str) -> bool:
        """Whether ``stage`` may still send records on without a new root input."""
        ...

    async def beside(self) -> None:
        """Work that runs beside the stages until the run ends (it is cancelled then).

        May return at once.
        """
        ...

    async def close(self, clean: bool) -> None:
        """The run ended: release what :meth:`start` took.

        ``clean``: not by an error or a cancellation. Called once, also when :meth:`start`
        failed.
        """
        ...


# -- the engine ------------------------------------------------------------------------------


class Engine:
    """Runs a plan over inputs with an executor; see the module docstring.

    Args:
        plan: the compiled flow.
        on_result: called with each root input's outcome, as it is known.
        executor: what runs the stage calls.
        concurrency: most root inputs in the run at once (``None``: no limit).
        stats: the run's statistics (a fresh one if ``None``).
        trace: keep a span per stage call.
        dead_letters: collects failed fragments instead of failing their roots.
        progress: a progress bar (``update(1)`` per root with an outcome).
        deadline: seconds a root input may take before it fails.
        control: the handle that cancels single inputs of this run.
    """

    def __init__(
        self,
        plan: Plan,
        on_result: Callable[[Result[Any]], None],
        executor: Executor,
        *,
        concurrency: int | None = None,
        stats: RunStats | None = None,
        trace: bool = False,
        dead_letters: list[StageError] | None = None,
        progress: Any = None,
        deadline: float | None = None,
        control: RunControl | None = None,
    ) -> None:
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            msg = f"concurrency={concurrency!r} is invalid; expected None or an int >= 1"
            raise UsageError(msg)
        if deadline is not None and not deadline > 0:
            msg = f"deadline={deadline!r} is invalid; expected None or seconds > 0"
            raise UsageError(msg)
        self.plan = plan
        self.executor = executor
        self.trace = trace
        self.stats = stats if stats is not None else RunStats()
        self.run = RunState(plan, on_result, self.stats, trace=trace, dead_letters=dead_letters)
        self.run.progress = progress
        if concurrency is not None:
            self.run.slots = anyio.Semaphore(concurrency)
        self.deadline = deadline
        if deadline is not None:
            self.run.admitted = deque()
        if control is not None:
            control.attach(self.run)
        self.nodes = {n.name: n for n in plan.nodes}
        self.wiring = {n.name: executor.wiring(n) for n in plan.nodes}
        # stage name -> one (send, receive) pair per inbox
        self.inboxes: dict[
            str, list[tuple[MemoryObjectSendStream[Chunk], MemoryObjectReceiveStream[Chunk]]]
        ] = {
            name: [anyio.create_memory_object_stream[Chunk](w.buffer) for _ in range(w.inboxes)]
            for name, w in self.wiring.items()
        }
        self.feeding = False  # the source is admitting an input (not awaiting the next)
        self.upstream = _upstream(plan)

    def more_coming(self, node: Node) -> bool:
        """Whether records may still reach ``node`` without a new input arriving."""
        if self.feeding:
            return True
        busy = self.executor.busy
        return any(busy(name) for name in self.upstream[node.name])

    def batch_policy(self, node: Node) -> BatchPolicy:
        """The batch policy of batched stage ``node`` in this run."""
        opts = node.spec.options
        stats = self.stats.stages[node.name]
        return BatchPolicy(
            opts.batch or 1,
            opts.batch_timeout,
            lambda: bool(stats.queued) or self.more_coming(node),
        )

    def outbox(self, source: str) -> StageOutbox:
        """An outbox on fresh links (their own send-stream clones) for ``source``'s records."""
        links: list[Any] = []
        for name, port in self.plan.consumers.get(source, ()):
            sends = [send.clone() for send, _ in self.inboxes[name]]
            max_chunk = self.wiring[name].max_chunk
            links.append(Link(self.nodes[name], port, sends, self.stats.stages[name], max_chunk))
        for slot, out in enumerate(self.plan.outputs):
            if out == source:
                links.append(SinkLink(self.run, slot))
        return StageOutbox(links)

    def _close_inbox_ends(self) -> None:
        """Close the engine's own ends of every inbox (the stages hold clones)."""
        for pairs in self.inboxes.values():
            for send, receive in pairs:
                send.close()
                receive.close()

    async def execute(self, inputs: Iterable[Any] | AsyncIterable[Any]) -> None:
        """Run every input through the plan; outcomes go to ``on_result``."""
        plan = self.plan
        executor = self.executor
        self.stats.started = now()
        clean = False
        try:
            try:
                await executor.start(self)
                sources = {name: self.outbox(INPUT_PREFIX + name) for name in plan.inputs}
                tasks = [
                    task
                    for node in plan.nodes
                    for task in executor.stage_tasks(
                        StagePorts(
                            node,
                            self.wiring[node.name],
                            [receive for _, receive in self.inboxes[node.name]],
                            self.outbox(node.name),
                        )
                    )
                ]
            finally:
                self._close_inbox_ends()
            async with anyio.create_task_group() as outer:
                if self.deadline is not None:
                    outer.start_soon(self._deadlines, self.deadline)
                outer.start_soon(executor.beside)
                try:
                    async with anyio.create_task_group() as tg:
                        for name, task in tasks:
                            tg.start_soon(task, name=name)
                        await self._source(inputs, sources)
                finally:
                    outer.cancel_scope.cancel()
            clean = True
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    await executor.close(clean)
            finally:
                self.stats.finished = now()
        self.run.settle_the_rest()

    async def _deadlines(self, deadline: float) -> None:
        """Fail inputs older than ``deadline``; checks a few times per deadline."""
        every = min(0.05, deadline / 4)
        while True:
            await anyio.sleep(every)
            self.run.expire(deadline)

    async def _source(
        self, inputs: Iterable[Any] | AsyncIterable[Any], outboxes: dict[str, StageOutbox]
    ) -> None:
        """Admit the inputs (within ``concurrency``) and send their arguments to the plan."""
        run = self.run
        plan = self.plan
        is_async = hasattr(inputs, "__aiter__")

        async def flush_all() -> None:
            for outbox in outboxes.values():
                await outbox.flush()

        async def admit(index: int, item: Any) -> None:
            if run.slots is not None:
                try:
                    run.slots.acquire_nowait()
                except anyio.WouldBlock:
                    await flush_all()
                    # no input comes in until a root ends: a partial batch must not wait on it
                    self.feeding = False
                    try:
                        await run.slots.acquire()
                    finally:
                        self.feeding = True
            try:
                args = bind_input(plan, index, item)
            except InputError as exc:
                run.reject(exc)
                return
            if not run.start(index):
                return  # cancelled before it entered
            anc = root(index)
            for name, value in args.items():
                outboxes[name].records.append((anc, value))

        try:
            index = 0
            if is_async:
                async for item in inputs:  # type: ignore[union-attr]
                    self.feeding = True
                    await admit(index, item)
                    index += 1
                    await flush_all()  # inputs that arrive over time go in at once
                    self.feeding = False
            else:
                self.feeding = True
                for item in inputs:  # type: ignore[union-attr]
                    await admit(index, item)
                    index += 1
                    if index % CHUNK == 0:
                        await flush_all()
                        await anyio.lowlevel.checkpoint()
        finally:
            try:
                for outbox in outboxes.values():
                    await outbox.aclose()
            finally:
                self.feeding = False


def _upstream(plan: Plan) -> dict[str, list[str]]:
    """For every stage, the stages that can send it records (directly or not)."""
    producers: dict[str, set[str]] = {n.name: set() for n in plan.nodes}
    for source, consumers in plan.consumers.items():
        if not source.startswith(INPUT_PREFIX):
            for name, _ in consumers:
                producers[name].add(source)
    upstream: dict[str, list[str]] = {}
    for node in plan.nodes:
        seen: set[str] = set()
        todo = list(producers[node.name])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(producers[name])
        seen.discard(node.name)
        upstream[node.name] = sorted(seen)
    return upstream
