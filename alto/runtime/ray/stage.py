"""The driver side of one stage on Ray: assembling calls and keeping its actors busy.

A :class:`StageDriver` reads the stage's inbox, assembles calls with the same
:class:`~alto.runtime.assemble.Assembler` as the local runtime (joins,
broadcasts, gathers: one assembler per stage, so every group is complete in
one place) and hands the ready calls to the stage's actors in *remote calls*
of several units each:

* **Batching.** A remote call costs about a millisecond, so a call carries as
  many units as make about ``TARGET_S`` of work (measured as the run goes),
  up to ``call_items``: many fragments per call for a fast stage, one per call
  for a slow one, so slow calls still spread across replicas.
* **Backpressure.** Each actor has at most ``inflight`` remote calls (one
  running, the others queued on the actor; one in all for stages whose calls
  take ``QUEUE_BELOW_S`` or more, so no call waits behind a slow one while
  another actor is free); beyond that, calls wait here, and beyond ``high``
  of those the driver stops reading its inbox, which fills and stops the
  stages upstream. A remote call streams its results back (a Ray streaming
  generator) with a bounded backlog, so a fast split cannot run ahead of a
  driver that is not reading its results.
* **Order.** The remote calls sent to one actor are numbered: the actor runs
  them in that order and the driver applies their results in that order.
* **Failures.** A call that dies with its actor is replayed from the unit
  that was running, on whichever replica is up (Ray restarts the actor);
  see :meth:`StageDriver._recover` for the exact rules.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import ray
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream
from ray.exceptions import ObjectLostError, RayActorError, WorkerCrashedError

from alto.ancestry.ancestry import Ancestry, root_of
from alto.compiler.plan import Node, PortMode
from alto.errors import ActorLostError, StageError, UsageError
from alto.runtime.assemble import Assembler
from alto.runtime.engine import assemble_calls
from alto.runtime.metrics import CallSpan, now
from alto.runtime.ray.actor import HostNotLoaded, Turns
from alto.runtime.records import DROPPED, Close

if TYPE_CHECKING:
    from alto.runtime.batching import BatchPolicy
    from alto.runtime.engine import StageOutbox
    from alto.runtime.metrics import RunStats
    from alto.runtime.run import RunState

TARGET_S = 0.02
"""Work (seconds) one remote call should carry, to amortise Ray's cost per call."""

QUEUE_BELOW_S = 0.1
"""Stages whose calls take less than this (moving average) queue calls on their actors."""

BACKLOG = 4
"""Messages a remote call may produce ahead of the driver reading them."""

FEED_MAX = 4096
"""Most children of a streaming gather sent to its actor in one remote call."""

ACTOR_LOST = (RayActorError, WorkerCrashedError, ObjectLostError)
"""Ray errors that mean the actor (or its process, or its node) went away."""

UP, _PROBING, _DEAD = "up", "probing", "dead"
_stream_ids = itertools.count()


class ActorReplica:
    """One actor of a stage, as the driver sees it."""

    __slots__ = (
        "index", "handle", "args", "pooled", "load", "offset", "sent", "state", "node_id", "pid",
        "roots", "alone", "seq", "turns",
    )

    def __init__(self, index: int, handle: Any, args: tuple[Any, ...], pooled: bool) -> None:
        self.index = index
        self.handle = handle
        self.args = args  # of StageHost.load
        self.pooled = pooled  # the host was idle in the pool
        self.load = 0  # remote calls in flight
        self.offset = 0.0  # actor clock minus driver clock (perf_counter)
        self.sent = 0  # how many of the run's finished roots this actor was told about
        self.state = UP
        self.node_id = ""
        self.pid = 0
        self.roots: dict[int, int] = {}  # root -> units of it in flight on this actor
        self.alone = False  # running a unit that must be alone on it (after a crash)
        self.seq = 0  # remote calls sent since the actor was loaded (it runs them in order)
        self.turns = Turns()  # and their results are applied here in that order

    def working(self, units: list[Any], batched: bool, step: int) -> None:
        """Count the roots of ``units`` in flight (``step`` 1) or done (``step`` -1)."""
        roots = self.roots
        for unit in units:
            for anc, _ in unit if batched else (unit,):
                root = root_of(anc)
                n = roots.get(root, 0) + step
                if n:
                    roots[root] = n
                else:
                    del roots[root]

    async def start(self) -> None:
        """Load the stage into the actor (again, after a restart); measure its clock offset."""
        _, self.node_id, self.pid = await self.handle.load.remote(*self.args)
        # a second, cheap call: load's round trip may hold the actor's start-up, which
        # would put its clock's midpoint seconds off
        t0 = now()
        clock = await self.handle.clock.remote()
        t1 = now()
        self.offset = clock - (t0 + t1) / 2
        self.sent = 0  # a freshly loaded actor knows no finished roots
        self.seq = 0
        self.turns = Turns()
        self.state = UP


@dataclass(frozen=True, slots=True)
class DriverOptions:
    """The Ray options of a run that its stage drivers follow (see ``docs/ray.md``)."""

    call_items: int
    inflight: int
    restarts: int
    start_timeout: float

    def __post_init__(self) -> None:
        for name, low in (("call_items", 1), ("inflight", 1), ("restarts", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                msg = f"{name}={value!r} is invalid; expected an int >= {low}"
                raise UsageError(msg)
        if not self.start_timeout > 0:
            msg = f"start_timeout={self.start_timeout!r} is invalid; expected seconds > 0"
            raise UsageError(msg)


class StageDriver:
    """Feeds one stage's actors; see the module docstring.

    Args:
        node: the stage.
        options: the run's Ray options.
        run: the run's state (outcomes of its roots).
        stats: the run's statistics.
        finished: roots with an outcome, in order (appended to as the run goes).
        policy: the stage's batch policy.
        replicas: the stage's actors.
        receive: the stage's inbox.
        outbox: where the records its calls produce go.
    """

    def __init__(
        self,
        node: Node,
        options: DriverOptions,
        run: RunState,
        stats: RunStats,
        finished: list[int],
        policy: BatchPolicy,
        replicas: list[ActorReplica],
        receive: MemoryObjectReceiveStream[Any],
        outbox: StageOutbox,
    ) -> None:
        self.node = node
        self.name = node.name
        self.state = run
        self.finished = finished
        self.stats = stats.stages[node.name]
        self.spans = stats.spans
        self.otel = run.otel  # the run's RunTracer, when traced (OpenTelemetry)
        self.root_start = stats.root_start
        self.monotonic_offset = run.monotonic_offset
        self.replicas = replicas
        self.receive = receive
        self.outbox = outbox
        self.call_items = options.call_items
        self.inflight = options.inflight
        self.restarts = options.restarts
        self.probe_timeout = options.start_timeout
        self.size = node.spec.options.batch or 0
        self.policy = policy  # when a partial batch runs
        self.is_split = node.is_split
        self.streams = any(p.mode is PortMode.GATHER_STREAM for p in node.ports)
        self.assembler = Assembler(node, run.settled)
        if not self.assembler.simple:
            run.assemblers.append(self.assembler)
        self.pending: list[Any] = []  # assembled calls waiting for an actor
        self.since = 0.0  # when the oldest pending call arrived (for partial batches)
        self.high = max(self.call_items, self.size) * max(len(replicas), 2)
        self.ended = False
        self.calls = 0  # remote calls in flight
        self.cost: float | None = None  # moving average of seconds per unit
        self.replays: dict[Ancestry, int] = {}  # ancestry -> times its actor died running it alone
        self.alone: set[Ancestry] = set()  # ancestries to run in calls of their own (after a crash)
        self._work = anyio.Event()
        self._room = anyio.Event()
        self._tg: TaskGroup | None = None

    # -- the two loops -------------------------------------------------------------------

    async def run(self) -> None:
        """Read the inbox and dispatch calls to the actors, until both loops end.

        The inbox and the outbox are closed at the end.
        """
        async with self.receive, self.outbox:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._read, name=f"alto:{self.name}:read")
                await self._send_calls()

    async def _read(self) -> None:
        """Assemble the stage's calls from its inbox and queue them for the actors.

        The calls are assembled by :func:`alto.runtime.engine.assemble_calls`.
        """
        receive = self.receive
        pending = self.pending

        async def room() -> None:
            while len(pending) >= self.high:
                await self._wait_room()

        async def idle() -> Any:
            self._work.set()
            await self.outbox.flush()
            return await receive.receive()

        async def enqueue(ready: list[Any]) -> None:
            if self.streams:
                assert self._tg is not None
                for anc, (children,) in ready:
                    self._tg.start_soon(self._stream, anc, children)
                return
            if not pending:
                self.since = now()
            pending.extend(ready)

        async def pause() -> None:
            self._work.set()
            await anyio.lowlevel.checkpoint()

        await assemble_calls(
            receive, self.assembler, self.outbox, self.stats, enqueue, idle,
            room=room, pause=pause,
        )
        self.ended = True
        self._work.set()

    async def _send_calls(self) -> None:
        assert self._tg is not None
        pending = self.pending
        while True:
            # A second call queued on an actor hides the network, but work queued behind a
            # slow call waits even when another actor is free: stages whose calls take
            # seconds (model calls) keep one call per actor, as the local runtime does.
            cost = self.cost
            cap = self.inflight if cost is not None and cost < QUEUE_BELOW_S else 1
            while pending:
                first, _ = pending[0]
                alone = bool(self.alone) and first in self.alone
                replica = self._pick(1 if alone else cap)
                if replica is None:
                    break
                units = self._take(replica, alone)
                if units is None:
                    break
                replica.load += 1
                replica.alone = alone
                self.calls += 1
                self._tg.start_soon(self._call, replica, units)
            if not pending and self.ended and self.calls == 0:
                break
            if pending and all(r.state is _DEAD for r in self.replicas):
                self._fail_units(self._units(pending), self._all_dead(), 1)
                pending.clear()
                await self.outbox.flush()
                continue
            if len(pending) < self.high:
                self._room.set()
            await self._wait_work(self._deadline())

    # -- choosing work ---------------------------------------------------------------------

    def _pick(self, cap: float) -> ActorReplica | None:
        best = None
        for r in self.replicas:
            if r.state is UP and r.load < cap and not r.alone:
                if best is None or r.load < best.load:
                    best = r
        return best

    def _per_call(self) -> int:
        cost = self.cost
        if cost is None:
            return 1  # nothing measured yet: start small, as the first outputs go out at once
        return max(1, min(self.call_items, int(TARGET_S / max(cost, 1e-9))))

    def _take(self, replica: ActorReplica, alone: bool) -> list[Any] | None:
        """The units of the next remote call, or ``None`` while a partial batch may still fill."""
        pending = self.pending
        if alone:  # a unit whose call crashed runs alone on an idle actor: a crash is its own
            item = pending.pop(0)
            return [[item]] if self.size else [item]
        idle = sum(1 for r in self.replicas if r.state is UP and r.load == 0) or 1
        if self.size:
            size = self.size
            full = len(pending) // size
            if full == 0:
                if not self.policy.due(len(pending), self.since, self.ended):
                    return None
                units = [pending[:]]
                pending.clear()
                return units
            n = min(full, self._per_call(), max(1, math.ceil(full / idle)))
            units = [pending[i * size : (i + 1) * size] for i in range(n)]
            del pending[: n * size]
        else:
            n = min(len(pending), self._per_call(), max(1, math.ceil(len(pending) / idle)))
            units = pending[:n]
            del pending[:n]
        self.since = now()
        return units

    def _deadline(self) -> float | None:
        if self.size and self.pending and not self.ended:
            return self.policy.recheck_in(self.since)
        return None

    def busy(self) -> bool:
        """Whether this stage may still send records on without a new input arriving."""
        return bool(
            self.stats.queued
            or self.pending
            or self.outbox.records
            or any(r.load for r in self.replicas)
        )

    def _units(self, items: list[Any]) -> list[Any]:
        if self.size:
            return [items[i : i + self.size] for i in range(0, len(items), self.size)]
        return list(items)

    # -- remote calls ----------------------------------------------------------------------

    def _dead_for(self, replica: ActorReplica) -> list[int]:
        """Roots that finished since this actor last heard (it skips their calls)."""
        finished = self.finished
        delta = finished[replica.sent :]
        replica.sent = len(finished)
        return delta

    async def _call(self, replica: ActorReplica, units: list[Any]) -> None:
        batched = bool(self.size)
        replica.working(units, batched, 1)
        seq = replica.seq
        replica.seq += 1
        turns = replica.turns
        try:
            gen = replica.handle.calls.options(_generator_backpressure_num_objects=BACKLOG).remote(
                units,
                self._dead_for(replica),
                seq,
                self._submitted(units, batched),
                **self._otel_parents(units, batched),
            )
            try:
                done, shipped, error = await self._consume(gen, replica, (turns, seq))
            finally:
                turns.end(seq)
            if error is not None:
                if not _is_lost(error):
                    await self._skip(replica, seq)
                self._recover(replica, units, done, shipped, error)
                await self.outbox.flush()
        finally:
            replica.working(units, batched, -1)
            replica.load -= 1
            replica.alone = False
            self.calls -= 1
            self._work.set()

    async def _consume(
        self, gen: Any, replica: ActorReplica, turn: tuple[Turns, int] | None = None
    ) -> tuple[int, int, Exception | None]:
        """Apply the messages of one remote call; returns how far it got, and its error.

        With ``turn``, the messages wait until the calls sent to the same actor
        before this one were applied: Ray may deliver the messages of two calls
        of one actor in either order, and the actor made them in call order.
        """
        done = shipped = 0
        it = gen.__aiter__()
        try:
            while True:
                try:
                    message = await (await it.__anext__())
                except StopAsyncIteration:
                    return done, shipped, None
                except Exception as exc:
                    return done, shipped, exc
                if turn is not None:
                    await turn[0].take(turn[1])
                    turn = None
                done, shipped = message[4], message[5]
                self._apply(message, replica)
                await self.outbox.flush()
        except BaseException:  # cancelled: stop the remote call
            _cancel(gen)
            raise

    def _apply(self, message: Any, replica: ActorReplica) -> None:
        records, errors, (calls, busy, retries, out, bisections), spans, _, _, otel = message
        if otel and self.otel is not None:
            from alto.runtime.ray.span_relay import export

            export(self.otel, otel)
        stats = self.stats
        if calls:
            stats.calls += calls
            stats.busy_s += busy
            per = busy / calls
            self.cost = per if self.cost is None else self.cost * 0.7 + per * 0.3
        stats.retries += retries
        stats.bisections += bisections
        stats.fragments_out += out
        for error in errors:
            self.state.fail(error)  # before the records: a tombstone's error must be known first
        if spans and self.spans is not None:
            off = replica.offset
            self.spans.extend(
                CallSpan(s.stage, s.ancestry, s.start - off, s.end - off, s.replica, s.size)
                for s in spans
            )
        if records:
            self.outbox.records.extend(records)

    def _submitted(self, units: list[Any], batched: bool) -> dict[int, float]:
        """When each root ``units`` serve was submitted, on this process's monotonic clock.

        This is the time ``alto.current_call()`` reports inside their calls
        (``time.monotonic()``).
        """
        start = self.root_start
        offset = self.monotonic_offset
        submitted = {}
        for unit in units:
            for anc, _ in unit if batched else (unit,):
                root = root_of(anc)
                if root not in submitted:
                    submitted[root] = start[root] + offset
        return submitted

    def _otel_parents(self, units: list[Any], batched: bool) -> dict[str, Any]:
        """In a traced run, the span contexts a remote call takes along (else nothing)."""
        if self.otel is None:
            return {}
        from alto.runtime.ray.span_relay import parents_for

        return {"otel": parents_for(self.otel, units, batched)}

    # -- failures --------------------------------------------------------------------------

    def _recover(
        self, replica: ActorReplica, units: list[Any], done: int, shipped: int, error: Exception
    ) -> None:
        """A remote call failed after ``done`` units (and ``shipped`` records of the next).

        Units already finished stay finished. Unit ``done`` is finished too if
        its output was shipped whole (a value, a batch); a split that had
        shipped children cannot run again without repeating them, so its root
        fails (dead letters: the children so far survive). When the actor was
        lost, the other units run again, each in a call of its own, so that
        the one that kills its actor is known: a unit whose actor dies while
        running it alone is run again at most ``restarts`` times, then fails
        with a clear error. When the call failed otherwise, its units fail
        with the error.
        """
        lost = _is_lost(error)
        rest = units[done:]
        if rest and shipped:
            first, rest = rest[0], rest[1:]
            if self.is_split:
                cause = self._lost(replica, error, shipped) if lost else error
                anc, _ = first
                attempts = self.replays.get(anc, 0) + 1
                if self.state.fail(StageError(self.name, anc, cause, attempts=attempts)):
                    self.outbox.records.append(Close(anc, shipped))
        if not lost:
            self._fail_units(rest, error, 1)
            return
        self._suspect(replica)
        alone = len(rest) == 1 and not shipped  # then it is the unit that was running
        again: list[Any] = []
        for unit in rest:
            for item in unit if self.size else (unit,):
                anc = item[0]
                if root_of(anc) in self.state.settled:
                    continue
                if alone:
                    runs = self.replays.get(anc, 0) + 1
                    if runs > self.restarts:
                        self._fail_units([[item]] if self.size else [item],
                                         self._lost(replica, error, 0), runs)
                        continue
                    self.replays[anc] = runs
                self.alone.add(anc)
                again.append(item)
        if again:
            self.pending[:0] = again
            self.since = now()

    def _lost(self, replica: ActorReplica, error: Exception, shipped: int) -> ActorLostError:
        what = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        why = (
            f"; {shipped} of its children had already gone downstream, so it cannot run again"
            if shipped
            else ""
        )
        return ActorLostError(
            f"the Ray actor of stage {self.name!r} (replica {replica.index}, pid {replica.pid}) "
            f"died while running this fragment{why} ({type(error).__name__}: {what})"
        )

    def _all_dead(self) -> ActorLostError:
        return ActorLostError(
            f"every Ray actor of stage {self.name!r} died and none came back within "
            f"{self.probe_timeout:g}s (start_timeout)"
        )

    def _fail_units(self, units: list[Any], cause: BaseException, attempts: int) -> None:
        run = self.state
        records = self.outbox.records
        for unit in units:
            for anc, _ in unit if self.size else [unit]:
                if root_of(anc) in run.settled:
                    continue
                if run.fail(StageError(self.name, anc, cause, attempts=attempts)):
                    records.append(Close(anc, 0) if self.is_split else (anc, DROPPED))

    async def _skip(self, replica: ActorReplica, seq: int) -> None:
        """The call may have failed before it ran: the actor must not keep its turn for it."""
        try:
            await replica.handle.skip.remote(seq)
        except Exception:  # the actor is gone: nothing waits on it
            pass

    def _suspect(self, replica: ActorReplica) -> None:
        """Send nothing more to ``replica`` until it answers again."""
        if replica.state is UP:
            replica.state = _PROBING
            assert self._tg is not None
            self._tg.start_soon(self._probe, replica)

    async def _probe(self, replica: ActorReplica) -> None:
        """After a crash: wait for Ray to restart the actor and load it, or learn it is gone."""
        try:
            with anyio.fail_after(self.probe_timeout):
                await replica.start()
        except Exception:
            replica.state = _DEAD
        self._work.set()

    # -- streaming gathers -----------------------------------------------------------------

    async def _stream(self, anc: Ancestry, children: MemoryObjectReceiveStream[Any]) -> None:
        """Run a streaming gather on an actor, sending it the children as they arrive."""
        replica = self._pick(math.inf)
        if replica is None:
            children.close()
            self._fail_units([(anc, None)], self._all_dead(), 1)
            await self.outbox.flush()
            return
        cid = next(_stream_ids)
        replica.load += 1
        unit = [(anc, None)]
        replica.working(unit, False, 1)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._feed, replica, cid, children)
                gen = replica.handle.stream.options(
                    _generator_backpressure_num_objects=BACKLOG
                ).remote(
                    cid,
                    anc,
                    self._dead_for(replica),
                    self._submitted(unit, False),
                    **self._otel_parents(unit, False),
                )
                done, shipped, error = await self._consume(gen, replica)
                tg.cancel_scope.cancel()
            if error is not None and not (done or shipped):
                if _is_lost(error):
                    # its children were handed over one by one: they cannot be sent again
                    error = self._lost(replica, error, 0)
                    self._suspect(replica)
                self._fail_units([(anc, None)], error, 1)
                await self.outbox.flush()
        finally:
            children.close()
            replica.working(unit, False, -1)
            replica.load -= 1
            self._work.set()

    async def _feed(
        self, replica: ActorReplica, cid: int, children: MemoryObjectReceiveStream[Any]
    ) -> None:
        feed = replica.handle.feed
        while True:
            values: list[Any] = []
            end = False
            try:
                values.append(await children.receive())
                while len(values) < FEED_MAX:
                    values.append(children.receive_nowait())
            except anyio.WouldBlock:
                pass
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                end = True
            try:
                await feed.remote(cid, values, end)
            except Exception:
                return  # the actor is gone: the call itself reports it
            if end:
                return

    # -- waiting ---------------------------------------------------------------------------

    async def _wait_work(self, timeout: float | None) -> None:
        event = self._work
        if timeout is None:
            await event.wait()
        else:
            with anyio.move_on_after(timeout):
                await event.wait()
        if event is self._work:
            self._work = anyio.Event()

    async def _wait_room(self) -> None:
        self._work.set()
        event = self._room
        await event.wait()
        if event is self._room:
            self._room = anyio.Event()


def _is_lost(error: Exception) -> bool:
    """Whether ``error`` means the actor went away (or came back empty) under a call."""
    cause = getattr(error, "cause", None)  # a RayTaskError carries the host's exception
    return isinstance(error, (*ACTOR_LOST, HostNotLoaded)) or isinstance(cause, HostNotLoaded)


def _cancel(gen: Any) -> None:
    """Cancel a remote call (the run then stops its actors: see ``RayExecutor``).

    Not recursively: Ray would also cancel the tasks the stage function submitted
    (its own remote calls), and the stage would see them fail with a
    ``TaskCancelledError`` instead of seeing its call cancelled, even in shielded
    cleanup, which may then be cut short. Its call is cancelled through anyio, as
    under the local runtime (``StageHost`` cancels the call's scope).
    """
    try:
        ray.cancel(gen, recursive=False)
    except Exception:  # pragma: no cover - the call already ended
        pass
