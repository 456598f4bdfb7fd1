"""The local runtime: one process, anyio, stages connected by bounded streams.

Each stage replica is one worker task that drains its inbox without waiting
while items are there (``receive_nowait``), assembles calls, runs them and
puts what they produce in its outbox. The outbox sends records downstream in
chunks, so one channel operation moves many fragments; a stage whose calls
take long sends each output at once instead, so the next stage starts on it
while this one works on the next (the flush policy adapts to each stage).

Channels are bounded (``buffer`` chunks per inbox): a fast stage waits for a
slow one. Every stage reads all its inputs from one inbox, so joins of
several streams cannot deadlock on a full channel. A keyed stage (join,
broadcast, gather) with several replicas has one task that assembles its calls,
so all fragments of one parent meet in one place, and hands each call to
whichever replica is free. Batched and streaming-gather keyed stages route
records to per-replica inboxes by key instead (a batch forms, and a streaming
gather is fed, where its inputs are).
"""

from __future__ import annotations

from collections import deque
from typing import Any, AsyncIterable, Awaitable, Callable, Iterable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from alto.ancestry.ancestry import Ancestry, key_length, parent_key, root
from alto.ancestry.plan import INPUT_PREFIX, Node, Plan, PortMode
from alto.errors import InputError, StageError
from alto.result import Result
from alto.runtime.assemble import Assembler
from alto.runtime.batching import BatchPolicy
from alto.runtime.engine import StageWiring, Wiring, assemble_calls, next_item
from alto.runtime.invoke import Invoker, runner_for
from alto.runtime.lineage import fresh_slot
from alto.runtime.metrics import RunStats, StageStats, now
from alto.runtime.records import CHUNK, EAGER_S, Close
from alto.runtime.run import RunControl, RunState, bind_input

Chunk = tuple[int, list[Any]]
Call = tuple[Ancestry, Any]
"""An assembled call: the fragment's (or group's) ancestry and its inputs."""


class _Route:
    """Delivers one source's records to one port of one node (one worker's copy)."""

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
        if len(self.sends) == 1:
            if not self.primary or self.mode is not PortMode.SAME:
                records = [r for r in records if r.__class__ is tuple or self._wanted(r)]
            await self._put(self.sends[0], records)
            return
        # A keyed node with several replicas: route by the key each record belongs to.
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
        for send in self.sends:
            await send.aclose()


class _SinkRoute:
    """Delivers level-0 values of one output to the run's outcomes."""

    __slots__ = ("run", "slot")

    def __init__(self, run: RunState, slot: int) -> None:
        self.run = run
        self.slot = slot

    async def send(self, records: list[Any]) -> None:
        output = self.run.output
        for rec in records:
            if rec.__class__ is tuple:
                output(rec[0], rec[1], self.slot)

    async def aclose(self) -> None:
        pass


class _Outbox:
    """Records a worker produced, waiting to be sent to every consumer.

    The replicas of one stage share its routes (``users`` counts the outboxes
    still open); the last outbox to close closes them. One set of send streams
    per stage, not per replica: a stage of *n* replicas feeding a keyed stage of
    *n* replicas would otherwise clone n x n streams.
    """

    __slots__ = ("records", "routes", "ema", "users")

    def __init__(self, routes: list[Any], users: list[int] | None = None) -> None:
        self.records: list[Any] = []
        self.routes = routes
        self.ema = 1.0  # start eager: the first outputs go out at once
        self.users = users if users is not None else [1]

    async def flush(self) -> None:
        records = self.records
        if records:
            self.records = []
            for route in self.routes:
                await route.send(records)

    def due(self, elapsed: float) -> bool:
        self.ema = ema = self.ema * 0.8 + elapsed * 0.2
        return ema > EAGER_S or len(self.records) >= CHUNK

    async def __aenter__(self) -> _Outbox:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        try:
            await self.flush()
        finally:
            self.users[0] -= 1
            if self.users[0] == 0:
                for route in self.routes:
                    await route.aclose()


class LocalRuntime:
    """Runs a plan in this process; see the module docstring."""

    def __init__(
        self,
        plan: Plan,
        on_result: Callable[[Result[Any]], None],
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
            raise ValueError(
                f"concurrency={concurrency!r} is invalid; expected None or an int >= 1"
            )
        if deadline is not None and not deadline > 0:
            raise ValueError(f"deadline={deadline!r} is invalid; expected None or seconds > 0")
        self.plan = plan
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
        self.wiring = {n.name: self.wire(n) for n in plan.nodes}
        # node name -> one (send, receive) pair per inbox
        self.inboxes: dict[
            str, list[tuple[MemoryObjectSendStream[Chunk], MemoryObjectReceiveStream[Chunk]]]
        ] = {}
        for node in plan.nodes:
            self.inboxes[node.name] = self._new_inboxes(node)
        self.feeding = False  # the source is admitting an input (not awaiting the next)
        self.upstream = self._upstream(plan)

    def _upstream(self, plan: Plan) -> dict[str, list[StageStats]]:
        """For every node, the counters of every stage that can send it records."""
        producers: dict[str, set[str]] = {n.name: set() for n in plan.nodes}
        for source, consumers in plan.consumers.items():
            if not source.startswith(INPUT_PREFIX):
                for name, _ in consumers:
                    producers[name].add(source)
        upstream: dict[str, list[StageStats]] = {}
        for node in plan.nodes:
            seen: set[str] = set()
            todo = list(producers[node.name])
            while todo:
                name = todo.pop()
                if name not in seen:
                    seen.add(name)
                    todo.extend(producers[name])
            seen.discard(node.name)
            upstream[node.name] = [self.stats.stages[name] for name in sorted(seen)]
        return upstream

    def _more_coming(self, node: Node) -> bool:
        """Whether records may still reach ``node`` without a new input arriving."""
        if self.feeding:
            return True
        return any(s.working or s.queued for s in self.upstream[node.name])

    def batch_policy(self, node: Node) -> BatchPolicy:
        """The batch policy of batched stage ``node`` in this run."""
        opts = node.spec.options
        stats = self.stats.stages[node.name]
        return BatchPolicy(
            opts.batch or 1,
            opts.batch_timeout,
            lambda: bool(stats.queued) or self._more_coming(node),
        )

    def wire(self, node: Node) -> StageWiring:
        """How the replicas of ``node`` get their work (decided once, in ``__init__``)."""
        return StageWiring.local(node)

    def _new_inboxes(
        self, node: Node
    ) -> list[tuple[MemoryObjectSendStream[Chunk], MemoryObjectReceiveStream[Chunk]]]:
        """The inboxes of ``node``, as its wiring says."""
        wiring = self.wiring[node.name]
        return [
            anyio.create_memory_object_stream[Chunk](wiring.buffer)
            for _ in range(wiring.inboxes)
        ]

    def _routes(self, source: str) -> list[Any]:
        """Fresh routes (with their own send-stream clones) for one producer of ``source``."""
        routes: list[Any] = []
        for name, port in self.plan.consumers.get(source, ()):
            sends = [send.clone() for send, _ in self.inboxes[name]]
            max_chunk = self.wiring[name].max_chunk
            routes.append(
                _Route(self.nodes[name], port, sends, self.stats.stages[name], max_chunk)
            )
        for slot, out in enumerate(self.plan.outputs):
            if out == source:
                routes.append(_SinkRoute(self.run, slot))
        return routes

    async def execute(self, inputs: Iterable[Any] | AsyncIterable[Any]) -> None:
        """Run every input through the plan; outcomes go to ``on_result``."""
        plan = self.plan
        self.stats.started = now()
        source_outboxes = {name: _Outbox(self._routes(INPUT_PREFIX + name)) for name in plan.inputs}
        workers: list[tuple[Node, int, MemoryObjectReceiveStream[Chunk], _Outbox]] = []
        for node in plan.nodes:
            replicas = node.spec.options.replicas
            pairs = self.inboxes[node.name]
            routes = self._routes(node.name)
            wiring = self.wiring[node.name].kind
            if wiring is Wiring.HANDED_OUT:
                # One task assembles every call, the replicas run them (see _assemble)
                users = [replicas + 1]
                workers.append((node, -1, pairs[0][1].clone(), _Outbox(routes, users)))
                continue
            users = [replicas]
            for r in range(replicas):
                receive = (pairs[r] if wiring is Wiring.ROUTED else pairs[0])[1].clone()
                workers.append((node, r, receive, _Outbox(routes, users)))
        for pairs in self.inboxes.values():
            for send, receive in pairs:
                send.close()
                receive.close()
        try:
            async with anyio.create_task_group() as outer:
                if self.deadline is not None:
                    outer.start_soon(self._deadlines, self.deadline)
                try:
                    async with anyio.create_task_group() as tg:
                        for node, r, receive, outbox in workers:
                            tg.start_soon(self._worker, node, r, receive, outbox,
                                          name=f"alto:{node.name}[{r}]")
                        await self._source(inputs, source_outboxes)
                finally:
                    outer.cancel_scope.cancel()
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
        self, inputs: Iterable[Any] | AsyncIterable[Any], outboxes: dict[str, _Outbox]
    ) -> None:
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
                    await run.slots.acquire()
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

    async def _worker(
        self, node: Node, replica: int, receive: MemoryObjectReceiveStream[Chunk], outbox: _Outbox
    ) -> None:
        fresh_slot()  # this task's calls publish their lineage in a slot of its own
        run = self.run
        stats = self.stats.stages[node.name]
        assembler = Assembler(node, run.settled)
        if not assembler.simple:
            run.assemblers.append(assembler)
        if replica < 0:
            await self._assemble(node, receive, assembler, outbox, stats)
            return
        invoker = Invoker(node, run, stats, replica, run.site(node.name))
        stats.working += 1
        try:
            async with receive, outbox:
                await self._work(node, receive, assembler, invoker, outbox, stats)
        finally:
            stats.working -= 1

    async def _work(
        self,
        node: Node,
        receive: MemoryObjectReceiveStream[Chunk],
        assembler: Assembler,
        invoker: Invoker,
        outbox: _Outbox,
        stats: StageStats,
    ) -> None:
        if node.spec.options.batch:
            await self._batch_loop(node, receive, assembler, invoker, outbox, stats)
            return
        run_one = runner_for(invoker)
        if not any(p.mode is PortMode.GATHER_STREAM for p in node.ports):

            async def run_here(ready: list[Any]) -> None:
                for anc, args in ready:
                    await run_one(anc, args, outbox)

            await self._loop(receive, assembler, outbox, stats, run_here)
            return

        async def beside(anc: Ancestry, args: Any) -> None:
            fresh_slot()  # an invoker of its own, publishing in this task's slot
            run_here = runner_for(
                Invoker(node, self.run, stats, invoker.replica, invoker.site)
            )
            stats.working += 1
            try:
                await run_here(anc, args, outbox)
            finally:
                stats.working -= 1

        async with anyio.create_task_group() as tg:

            async def start_beside(ready: list[Any]) -> None:
                # streaming gathers run beside the worker that feeds them
                for anc, args in ready:
                    tg.start_soon(beside, anc, args)

            await self._loop(receive, assembler, outbox, stats, start_beside)

    async def _assemble(
        self,
        node: Node,
        receive: MemoryObjectReceiveStream[Chunk],
        assembler: Assembler,
        outbox: _Outbox,
        stats: StageStats,
    ) -> None:
        """A keyed stage with replicas: assemble here, hand each call to a free replica.

        Joins, broadcasts and gathers keep their state in one place, so every
        fragment of a parent meets the others without routing, a broadcast value
        is stored once, and a call waits only for a free replica (routing calls
        to replicas by key would queue some behind others while replicas idle).
        """
        replicas = node.spec.options.replicas
        send_calls, receive_calls = anyio.create_memory_object_stream[Call](replicas)

        async def hand_out(ready: list[Any]) -> None:
            stats.queued += len(ready)  # calls waiting for a replica
            for call in ready:
                try:
                    send_calls.send_nowait(call)
                except anyio.WouldBlock:
                    await outbox.flush()  # what passed through must not wait for a replica
                    await send_calls.send(call)

        stats.working += 1
        try:
            async with anyio.create_task_group() as tg:
                for r in range(replicas):
                    caller = _Outbox(outbox.routes, outbox.users)
                    tg.start_soon(self._call_loop, node, r, receive_calls.clone(), caller, stats,
                                  name=f"alto:{node.name}[{r}]")
                receive_calls.close()
                async with receive, outbox, send_calls:
                    await self._loop(receive, assembler, outbox, stats, hand_out)
        finally:
            stats.working -= 1

    async def _call_loop(
        self,
        node: Node,
        replica: int,
        calls: MemoryObjectReceiveStream[Call],
        outbox: _Outbox,
        stats: StageStats,
    ) -> None:
        """One replica of a keyed stage: runs the calls its assembler hands out."""
        fresh_slot()
        run_one = runner_for(Invoker(node, self.run, stats, replica, self.run.site(node.name)))
        stats.working += 1
        try:
            async with calls, outbox:

                def idle() -> Awaitable[Call]:
                    return _idle_receive(calls, outbox, stats)

                while True:
                    try:
                        anc, args = await next_item(calls, idle)
                    except anyio.EndOfStream:
                        break
                    stats.queued -= 1
                    await run_one(anc, args, outbox)
                    if len(outbox.records) >= CHUNK:
                        await outbox.flush()
        finally:
            stats.working -= 1

    async def _loop(
        self,
        receive: MemoryObjectReceiveStream[Chunk],
        assembler: Assembler,
        outbox: _Outbox,
        stats: StageStats,
        dispatch: Callable[[list[Any]], Awaitable[None]],
    ) -> None:
        """Assemble calls from the inbox; ``dispatch`` runs (or hands out) each list of them."""

        def idle() -> Awaitable[Chunk]:
            return _idle_receive(receive, outbox, stats)

        await assemble_calls(receive, assembler, outbox, stats, dispatch, idle)

    async def _batch_loop(
        self,
        node: Node,
        receive: MemoryObjectReceiveStream[Chunk],
        assembler: Assembler,
        invoker: Invoker,
        outbox: _Outbox,
        stats: StageStats,
    ) -> None:
        policy = self.batch_policy(node)
        size = policy.size
        pending: list[Any] = []
        ended = False

        def take(item: Chunk) -> None:
            port, records = item
            stats.queued -= len(records)
            closes = assembler.accept(port, records, outbox.records, pending)
            if port == assembler.main:
                stats.fragments_in += len(records) - closes

        while not ended or pending:
            while len(pending) < size and not ended:
                try:
                    take(receive.receive_nowait())
                except anyio.WouldBlock:
                    break
                except anyio.EndOfStream:
                    ended = True
            if pending and not policy.due(len(pending), now(), ended):
                await outbox.flush()
                since = now()
                while not policy.due(len(pending), since, ended):
                    with anyio.move_on_after(policy.recheck_in(since)):
                        try:
                            take(await receive.receive())
                        except anyio.EndOfStream:
                            ended = True
            if pending:
                batch, pending = pending[:size], pending[size:]
                await invoker.batch(batch, outbox)
                await anyio.lowlevel.checkpoint()
                continue
            if ended:
                break
            try:
                take(await _idle_receive(receive, outbox, stats))
            except anyio.EndOfStream:
                ended = True


async def _idle_receive(
    receive: MemoryObjectReceiveStream[Any], outbox: _Outbox, stats: StageStats
) -> Any:
    """The next item of an empty inbox: sends what ``outbox`` holds first, and counts
    the worker as not working while it waits. Raises ``anyio.EndOfStream`` at the end."""
    await outbox.flush()
    stats.working -= 1
    try:
        return await receive.receive()
    finally:
        stats.working += 1


async def run_local(
    plan: Plan,
    inputs: Iterable[Any] | AsyncIterable[Any],
    on_result: Callable[[Result[Any]], None],
    **options: Any,
) -> RunStats:
    """Run ``plan`` over ``inputs`` in this process; returns the run's statistics."""
    runtime = LocalRuntime(plan, on_result, **options)
    await runtime.execute(inputs)
    return runtime.stats


run_local.cancels_inputs = True  # type: ignore[attr-defined]


__all__ = ["LocalRuntime", "run_local"]
