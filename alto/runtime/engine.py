"""What every backend does the same way to turn a stage's inbox into calls.

A stage reads chunks of records from its inbox without waiting while there are any,
hands each chunk to its :class:`~alto.runtime.assemble.Assembler`, and passes the
calls that became ready to whatever runs them: replica tasks in this process, or the
Ray driver's queue of calls for its actors. :func:`assemble_calls` is that loop, for
both: backends differ only in what they do when the inbox is empty (``idle``), before
a read (``room``: Ray waits while too many calls wait for an actor) and when the loop
lets other tasks run (``pause``). How a stage's replicas get their work is decided
once per stage, as a :class:`StageWiring`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Awaitable, Callable, TypeVar

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream

from alto.ancestry.plan import Node, PortMode
from alto.runtime.assemble import Assembler
from alto.runtime.invoke import Outbox
from alto.runtime.metrics import StageStats
from alto.runtime.records import CHUNK, YIELD_EVERY

T = TypeVar("T")


async def next_item(
    receive: MemoryObjectReceiveStream[T], idle: Callable[[], Awaitable[T]]
) -> T:
    """The next item of ``receive``: at once when one is there, else what ``idle()``
    returns (it awaits the next). Raises ``anyio.EndOfStream`` at the end."""
    try:
        return receive.receive_nowait()
    except anyio.WouldBlock:
        return await idle()


async def assemble_calls(
    receive: MemoryObjectReceiveStream[Any],
    assembler: Assembler,
    outbox: Outbox,
    stats: StageStats,
    dispatch: Callable[[list[Any]], Awaitable[None]],
    idle: Callable[[], Awaitable[Any]],
    *,
    room: Callable[[], Awaitable[None]] | None = None,
    pause: Callable[[], Awaitable[None]] = anyio.lowlevel.checkpoint,
) -> None:
    """Read the stage's inbox to its end, assembling calls; ``dispatch`` takes each list
    of ready calls (and may keep none of the list: it is cleared after).

    Args:
        receive: the stage's inbox (chunks: ``(port, records)``).
        assembler: the stage's assembler.
        outbox: where pass-through records (closes, tombstones) go; flushed at a chunk.
        stats: the stage's counters (``queued``, ``fragments_in``).
        dispatch: runs, hands out or queues the ready calls.
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
            await dispatch(ready)
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
    """A stage's wiring, decided once per run (:meth:`local` or :meth:`driver`) and read
    wherever inboxes, routes and workers are made.

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
