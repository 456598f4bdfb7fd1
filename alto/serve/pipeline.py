"""Who runs the inputs of a service's requests, and how many may be in flight.

* :class:`SharedPipeline`: one ``flow.stream`` that lives as long as the service; every
  request's inputs are root inputs of it, arriving over time (an async iterable that stays
  open), so inputs of different requests share batches, replicas and lineage scheduling.
* :class:`PerRequestRuns`: one ``flow.stream`` per request, the way a hand-written service
  would call the flow; kept as the baseline the shared pipeline is measured against.

Both bound the inputs in flight (``max_inflight``): :meth:`admit` takes a request's slots
at once or refuses it with :class:`Overloaded`, so nothing queues without bound. A request
reads its inputs' outcomes from its :class:`Batch` as they complete; cancelling a batch
(its client went away) cancels its roots and frees their slots.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Callable

import anyio
from anyio.abc import TaskStatus

from alto.errors import AltoError, InputCancelled, UsageError
from alto.result import Result
from alto.runtime.metrics import RunStats


class Overloaded(AltoError):
    """The service has ``max_inflight`` inputs in flight (HTTP 429).

    Attributes:
        retry_after: whole seconds after which a retry may be admitted.
    """

    code = "overloaded"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> Any:
        return (Overloaded, (self.args[0], self.retry_after))


class Unavailable(AltoError):
    """The service is shutting down, or its pipeline stopped (HTTP 503)."""

    code = "unavailable"


class ServiceStopped(AltoError):
    """An input's outcome when the pipeline it was in stopped before it finished."""

    code = "service-stopped"


class Ticket:
    """One input of a request, from admission to its outcome.

    Attributes:
        position: the input's place in its request.
        item: the input as the flow takes it.
        index: its root index in the run (``None`` until it enters).
        result: its outcome, once known.
    """

    __slots__ = ("position", "item", "index", "result", "batch")

    def __init__(self, position: int, item: Any, batch: Batch) -> None:
        self.position = position
        self.item = item
        self.index: int | None = None
        self.result: Result[Any] | None = None
        self.batch = batch


class Batch(ABC):
    """The inputs of one request.

    Iterate :meth:`completed` for their outcomes; call :meth:`cancel` when the request ends
    early.
    """

    def __init__(self, owner: _Slots, items: list[Any]) -> None:
        self.owner = owner
        self.tickets = [Ticket(i, item, self) for i, item in enumerate(items)]
        self._send, self._receive = anyio.create_memory_object_stream[Ticket](len(items))
        self._open = len(items)

    def settle(self, ticket: Ticket, result: Result[Any]) -> None:
        """Give ``ticket`` its outcome (once) and free its slot."""
        if ticket.result is not None:
            return
        ticket.result = result
        self._open -= 1
        self.owner.release(ticket)
        if self.owner.on_outcome is not None:
            self.owner.on_outcome(result.error)
        self._send.send_nowait(ticket)
        if not self._open:
            self._send.close()

    async def completed(self) -> AsyncGenerator[Ticket, None]:
        """The tickets as their outcomes arrive, in completion order."""
        async for ticket in self._receive:
            yield ticket

    @abstractmethod
    def cancel(self) -> None:
        """Cancel every input of the request that has no outcome yet."""


class _Slots:
    """The count of inputs in flight, bounded by ``max_inflight``."""

    def __init__(self, max_inflight: int) -> None:
        if not isinstance(max_inflight, int) or max_inflight < 1:
            msg = f"max_inflight={max_inflight!r} is invalid; expected an int >= 1"
            raise UsageError(msg)
        self.max_inflight = max_inflight
        self.inflight = 0
        self.closing = False
        self.failure: BaseException | None = None
        self._idle = anyio.Event()
        self._idle.set()
        self.pending: set[Ticket] = set()  # admitted, no outcome yet
        self.on_outcome: Callable[[BaseException | None], None] | None = None  # per input
        self.latencies: deque[float] = deque(maxlen=256)  # recent input latencies, seconds

    def take(self, batch: Batch) -> None:
        """Take a slot for every input of ``batch``.

        Raises :class:`Overloaded` or :class:`Unavailable`.
        """
        n = len(batch.tickets)
        if self.failure is not None:
            msg = (
                f"the pipeline stopped: {type(self.failure).__name__}: "
                              f"{self.failure}"
            )
            raise Unavailable(msg)
        if self.closing:
            msg = "the service is shutting down"
            raise Unavailable(msg)
        if self.inflight + n > self.max_inflight:
            msg = (
                f"{self.inflight} inputs in flight and {n} more asked for; this service takes "
                f"at most {self.max_inflight} (--max-inflight): retry later"
            )
            raise Overloaded(
                msg,
                self.retry_after(),
            )
        if self.inflight == 0:
            self._idle = anyio.Event()
        self.inflight += n
        self.pending.update(batch.tickets)

    def release(self, ticket: Ticket) -> None:
        """``ticket`` has its outcome: free its slot."""
        self.pending.discard(ticket)
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    def retry_after(self) -> int:
        """Whole seconds to wait: the recent median input latency, at least 1."""
        if not self.latencies:
            return 1
        ordered = sorted(self.latencies)
        return max(1, math.ceil(ordered[len(ordered) // 2]))

    async def idle(self) -> None:
        """Wait until no input is in flight."""
        await self._idle.wait()


class _SharedBatch(Batch):
    def cancel(self) -> None:
        for ticket in self.tickets:
            if ticket.result is not None:
                continue
            if ticket.index is None:  # not in the run yet: the source will skip it
                self.settle(ticket, Result(-1, None, InputCancelled(-1)))
            else:
                assert isinstance(self.owner, SharedPipeline)
                self.owner.cancel(ticket.index)


class SharedPipeline(_Slots):
    """One long-lived ``flow.stream`` that every request's inputs join.

    Run :meth:`run` in a task group that lives as long as the service; it returns once
    :meth:`drain` (or a failure) has ended the stream.

    Args:
        flow: the flow to serve.
        max_inflight: the most inputs in flight at once.
        backend: ``"local"`` or ``"ray"``.
        options: more options of ``flow.stream`` (``deadline``, ``concurrency``,
            ``address`` for Ray, ...).

    Attributes:
        stats: the run's statistics (per-stage counters), filled as it goes.
    """

    def __init__(self, flow: Any, *, max_inflight: int, backend: str = "local",
                 **options: Any) -> None:
        super().__init__(max_inflight)
        self.flow = flow
        self.backend = backend
        self.options = options
        self.stats = RunStats()
        self._send, self._receive = anyio.create_memory_object_stream[Ticket](max_inflight)
        self._entered: dict[int, Ticket] = {}
        self._next = 0
        self._stream: Any = None
        self.running = False

    def admit(self, items: list[Any]) -> Batch:
        """Admit a request's inputs into the pipeline.

        Raises :class:`Overloaded` or :class:`Unavailable`.
        """
        if not self.running:
            msg = (
                "the pipeline is not running (the service has not started, or "
                              "has stopped)"
            )
            raise Unavailable(msg)
        batch = _SharedBatch(self, items)
        self.take(batch)
        for ticket in batch.tickets:
            self._send.send_nowait(ticket)  # room for max_inflight: never blocks
        return batch

    def cancel(self, index: int) -> None:
        """Cancel input ``index`` of the shared run (nothing to cancel before the run starts)."""
        if self._stream is not None:
            self._stream.cancel(index)

    async def _inputs(self) -> AsyncIterator[Any]:
        async with self._receive:
            async for ticket in self._receive:
                if ticket.result is not None:
                    continue  # cancelled while waiting to enter
                ticket.index = self._next
                self._next += 1
                self._entered[ticket.index] = ticket
                yield ticket.item

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the stream until drained; every admitted input gets an outcome."""
        stats = self.stats
        try:
            async with self.flow.stream(self._inputs(), backend=self.backend, stats=stats,
                                        **self.options) as results:
                self._stream = results
                self.running = True
                task_status.started()
                async for result in results:
                    ticket = self._entered.pop(result.index, None)
                    start = stats.root_start.pop(result.index, None)
                    end = stats.root_end.pop(result.index, None)
                    if start is not None and end is not None:
                        self.latencies.append(end - start)
                    if ticket is not None:
                        ticket.batch.settle(ticket, result)
        except Exception as exc:
            self.failure = exc
            raise
        finally:
            self.running = False
            self._send.close()
            self._fail_the_rest()

    def _fail_the_rest(self) -> None:
        """The stream ended: answer every input still waiting (none, after a clean drain)."""
        self._entered.clear()
        why = self.failure or RuntimeError("the service stopped")
        for ticket in list(self.pending):
            error = ServiceStopped(f"the pipeline stopped before this input finished: "
                                   f"{type(why).__name__}: {why}")
            ticket.batch.settle(ticket, Result(-1, None, error))

    async def drain(self, grace: float) -> None:
        """Stop admitting; let the inputs in flight finish for up to ``grace`` seconds.

        Then cancel the rest (each gets :class:`InputCancelled`) and end the stream.
        """
        self.closing = True
        with anyio.move_on_after(grace):
            await self.idle()
        self._send.close()  # the source ends once it has taken what is queued
        for batch in {ticket.batch for ticket in self.pending}:
            batch.cancel()


class _PerRequestBatch(Batch):
    def __init__(self, owner: PerRequestRuns, items: list[Any]) -> None:
        super().__init__(owner, items)
        self.runs = owner

    async def completed(self) -> AsyncGenerator[Ticket, None]:
        owner = self.runs
        stats = RunStats()
        async with owner.flow.stream([t.item for t in self.tickets], backend=owner.backend,
                                     stats=stats, **owner.options) as results:
            async for result in results:
                ticket = self.tickets[result.index]
                self.owner.latencies.append(stats.latency(result.index))
                self.settle(ticket, result)
                yield ticket

    def cancel(self) -> None:
        # leaving ``completed`` closed the run (every call stopped); free what is left
        for ticket in self.tickets:
            if ticket.result is None:
                self.settle(ticket, Result(ticket.position, None, InputCancelled(ticket.position)))


class PerRequestRuns(_Slots):
    """One ``flow.stream`` per request: the baseline of one run per request.

    Behind the same server and limits as :class:`SharedPipeline`.

    Args:
        flow: the flow to serve.
        max_inflight: the most inputs in flight at once.
        backend: ``"local"`` or ``"ray"``.
        options: more options of ``flow.stream``.
    """

    def __init__(self, flow: Any, *, max_inflight: int, backend: str = "local",
                 **options: Any) -> None:
        super().__init__(max_inflight)
        self.flow = flow
        self.backend = backend
        self.options = options
        self.stats: RunStats | None = None
        self.running = True

    def admit(self, items: list[Any]) -> Batch:
        """Admit a request's inputs; raises :class:`Overloaded` or :class:`Unavailable`."""
        batch = _PerRequestBatch(self, items)
        self.take(batch)
        return batch

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Nothing runs between requests; returns at once."""
        task_status.started()

    async def drain(self, grace: float) -> None:
        """Stop admitting and wait up to ``grace`` seconds for the requests in flight."""
        self.closing = True
        with anyio.move_on_after(grace):
            await self.idle()
        self.running = False
