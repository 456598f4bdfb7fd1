"""The local executor: one process, anyio; each stage replica a task.

Each stage replica is one worker task that drains its inbox without waiting while
items are there (``receive_nowait``), assembles calls, runs them and puts what they
produce in its outbox (:class:`~alto.runtime.engine.StageOutbox`). The engine
(:mod:`alto.runtime.engine`) wires the inboxes, links and outboxes, admits the
inputs and keeps the deadlines; this module runs the calls.

Channels are bounded (``buffer`` chunks per inbox): a fast stage waits for a slow
one. Every stage reads all its inputs from one inbox, so joins of several streams
cannot deadlock on a full channel. A stage's wiring (:class:`~alto.runtime.engine.
StageWiring`) says how its replicas get their work: a stage without state shares one
inbox among its replicas (the fast path); a keyed stage (join, broadcast, gather)
with several replicas has one task that assembles its calls, so all fragments of one
parent meet in one place, and hands each call to whichever replica is free; batched
and streaming-gather keyed stages route records to per-replica inboxes by key instead
(a batch forms, and a streaming gather is fed, where its inputs are).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, AsyncIterable, Awaitable, Callable, Iterable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from alto.ancestry.ancestry import Ancestry
from alto.compiler.plan import Node, Plan, PortMode
from alto.lineage import fresh_slot
from alto.result import Result
from alto.runtime.assemble import Assembler
from alto.runtime.engine import (
    Chunk,
    Engine,
    StageOutbox,
    StagePorts,
    StageTask,
    StageWiring,
    Wiring,
    assemble_calls,
    idle_receive,
    next_item,
)
from alto.runtime.invoke import Invoker, runner_for
from alto.runtime.metrics import RunStats, StageStats, now
from alto.runtime.records import CHUNK

Call = tuple[Ancestry, Any]
"""An assembled call: the fragment's (or group's) ancestry and its inputs."""


@dataclass(frozen=True, slots=True)
class _ReplicaContext:
    """What a replica task reads and feeds, made once per task.

    The stage, its inbox, the assembler of its calls, its outbox and its counters.
    """

    node: Node
    receive: MemoryObjectReceiveStream[Chunk]
    assembler: Assembler
    outbox: StageOutbox
    stats: StageStats


class LocalExecutor:
    """Runs every stage's calls in replica tasks of this process.

    An :class:`~alto.runtime.engine.Executor`; see the module docstring.
    """

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def wiring(self, node: Node) -> StageWiring:
        """How the replicas of ``node`` get their work."""
        return StageWiring.local(node)

    async def start(self, engine: Engine) -> None:
        """Nothing to start: the replicas are tasks of the run."""
        self.engine = engine
        self.run = engine.run
        self.stages = engine.stats.stages

    def busy(self, stage: str) -> bool:
        """Whether a replica of ``stage`` works, or its inboxes hold records."""
        stats = self.stages[stage]
        return bool(stats.working or stats.queued)

    async def beside(self) -> None:
        """Nothing runs beside the stages."""

    async def close(self, clean: bool) -> None:
        """Nothing to release: the replica tasks ended with the run."""

    def stage_tasks(self, ports: StagePorts) -> list[StageTask]:
        """One task per replica, each reading its inbox to the end.

        A stage whose calls are handed out also gets an assembling task, which reads its
        inbox to the end too.
        """
        node = ports.node
        name = node.name
        replicas = node.spec.options.replicas
        outbox = ports.outbox
        kind = ports.wiring.kind
        if kind is Wiring.HANDED_OUT:
            # One task assembles every call, the replicas run them (see _assemble)
            outbox.users[0] = replicas + 1
            receive = ports.inboxes[0].clone()
            return [(f"alto:{name}[-1]", partial(self._worker, node, -1, receive, outbox))]
        outbox.users[0] = replicas
        tasks: list[StageTask] = []
        for r in range(replicas):
            receive = ports.inboxes[r if kind is Wiring.ROUTED else 0].clone()
            mine = outbox if r == 0 else outbox.sharing()
            tasks.append((f"alto:{name}[{r}]", partial(self._worker, node, r, receive, mine)))
        return tasks

    async def _worker(
        self,
        node: Node,
        replica: int,
        receive: MemoryObjectReceiveStream[Chunk],
        outbox: StageOutbox,
    ) -> None:
        fresh_slot()  # this task's calls publish their lineage in a slot of its own
        run = self.run
        stats = self.stages[node.name]
        assembler = Assembler(node, run.settled)
        if not assembler.simple:
            run.assemblers.append(assembler)
        ctx = _ReplicaContext(node, receive, assembler, outbox, stats)
        if replica < 0:
            await self._assemble(ctx)
            return
        invoker = Invoker(node, run, stats, replica, run.site(node.name))
        stats.working += 1
        try:
            async with receive, outbox:
                await self._work(ctx, invoker)
        finally:
            stats.working -= 1

    async def _work(self, ctx: _ReplicaContext, invoker: Invoker) -> None:
        node, outbox, stats = ctx.node, ctx.outbox, ctx.stats
        if node.spec.options.batch:
            await self._batch_loop(ctx, invoker)
            return
        run_one = runner_for(invoker)
        if not any(p.mode is PortMode.GATHER_STREAM for p in node.ports):

            async def run_here(ready: list[Any]) -> None:
                for anc, args in ready:
                    await run_one(anc, args, outbox)

            await self._loop(ctx, run_here)
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

            await self._loop(ctx, start_beside)

    async def _assemble(self, ctx: _ReplicaContext) -> None:
        """A keyed stage with replicas: assemble here, hand each call to a free replica.

        Joins, broadcasts and gathers keep their state in one place, so every
        fragment of a parent meets the others without routing, a broadcast value
        is stored once, and a call waits only for a free replica (routing calls
        to replicas by key would queue some behind others while replicas idle).
        """
        node, receive, outbox, stats = ctx.node, ctx.receive, ctx.outbox, ctx.stats
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
                    caller = outbox.sharing()
                    tg.start_soon(self._call_loop, node, r, receive_calls.clone(), caller, stats,
                                  name=f"alto:{node.name}[{r}]")
                receive_calls.close()
                async with receive, outbox, send_calls:
                    await self._loop(ctx, hand_out)
        finally:
            stats.working -= 1

    async def _call_loop(
        self,
        node: Node,
        replica: int,
        calls: MemoryObjectReceiveStream[Call],
        outbox: StageOutbox,
        stats: StageStats,
    ) -> None:
        """One replica of a keyed stage: runs the calls its assembler hands out."""
        fresh_slot()
        run_one = runner_for(Invoker(node, self.run, stats, replica, self.run.site(node.name)))
        stats.working += 1
        try:
            async with calls, outbox:

                def idle() -> Awaitable[Call]:
                    return idle_receive(calls, outbox, stats)

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
        self, ctx: _ReplicaContext, submit: Callable[[list[Any]], Awaitable[None]]
    ) -> None:
        """Assemble calls from the inbox; ``submit`` runs (or hands out) each list of them."""
        receive, outbox, stats = ctx.receive, ctx.outbox, ctx.stats

        def idle() -> Awaitable[Chunk]:
            return idle_receive(receive, outbox, stats)

        await assemble_calls(receive, ctx.assembler, outbox, stats, submit, idle)

    async def _batch_loop(self, ctx: _ReplicaContext, invoker: Invoker) -> None:
        node, receive, assembler = ctx.node, ctx.receive, ctx.assembler
        outbox, stats = ctx.outbox, ctx.stats
        assert self.engine is not None
        policy = self.engine.batch_policy(node)
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
                take(await idle_receive(receive, outbox, stats))
            except anyio.EndOfStream:
                ended = True


async def run_local(
    plan: Plan,
    inputs: Iterable[Any] | AsyncIterable[Any],
    on_result: Callable[[Result[Any]], None],
    **options: Any,
) -> RunStats:
    """Run ``plan`` over ``inputs`` in this process; returns the run's statistics."""
    engine = Engine(plan, on_result, LocalExecutor(), **options)
    await engine.execute(inputs)
    return engine.stats


run_local.cancels_inputs = True  # type: ignore[attr-defined]


__all__ = ["LocalExecutor", "run_local"]
