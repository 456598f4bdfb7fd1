"""A dispatcher's state per replica, and the queues its waiting calls are ranked in."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from typing import Any

import anyio

from alto.operators.llm.dispatch.knobs import LimitSource
from alto.operators.llm.limit import VegasLimit

BACKOFF = 0.5
"""Seconds before a replica that went down is first probed; doubles up to MAX_BACKOFF."""
MAX_BACKOFF = 10.0

SHARED = -1
"""The index of the shared queue: calls routed to no replica yet."""


class Waiter:
    """One call waiting for admission: woken with ``replica`` set once it has a slot."""

    __slots__ = ("event", "replica", "waiting", "since", "seq", "where")

    def __init__(self, seq: int, since: float) -> None:
        self.event = anyio.Event()
        self.where = SHARED  # the queue that holds it: a replica's index, or SHARED
        self.replica = -1  # the replica it was admitted to
        self.waiting = True
        self.since = since
        self.seq = seq


class Queue:
    """Waiting calls ranked by their order key (ties by arrival).

    With ``aging``, a call that has waited longer than that many seconds ranks before every
    call that has not, oldest first. Calls that stopped waiting leave lazily (``waiting``
    counts those still in it).
    """

    __slots__ = ("index", "aging", "heap", "arrivals", "waiting")

    def __init__(self, index: int, aging: float | None) -> None:
        self.index = index
        self.aging = aging
        self.heap: list[tuple[Any, int, Waiter]] = []
        self.arrivals: deque[Waiter] = deque()  # the same calls, oldest first (aging only)
        self.waiting = 0

    def push(self, key: Any, waiter: Waiter) -> None:
        """Queue ``waiter`` at rank ``key`` (ties by arrival) at this replica."""
        heapq.heappush(self.heap, (key, waiter.seq, waiter))
        if self.aging is not None:
            self.arrivals.append(waiter)
        waiter.where = self.index
        self.waiting += 1

    def head(self, now: float) -> tuple[Any, ...] | None:
        """The rank of the call :meth:`take` would give next (lower first), or None."""
        arrivals = self.arrivals
        while arrivals and not arrivals[0].waiting:
            arrivals.popleft()
        if arrivals and self.aging is not None and now - arrivals[0].since > self.aging:
            return (0, arrivals[0].since)
        heap = self.heap
        while heap and not heap[0][2].waiting:
            heapq.heappop(heap)
        return (1, heap[0][0], heap[0][1]) if heap else None

    def take(self, aged: bool) -> Waiter:
        """The next call (the aged one when ``aged``, as :meth:`head` ranked it)."""
        waiter = self.arrivals.popleft() if aged else heapq.heappop(self.heap)[2]
        waiter.waiting = False
        self.waiting -= 1
        return waiter

    def move_to(self, other: Queue) -> None:
        """Move every call still waiting here to ``other``, keeping their keys and ages."""
        for entry in self.heap:
            if entry[2].waiting:
                entry[2].where = other.index
                heapq.heappush(other.heap, entry)
        moved = [w for w in self.arrivals if w.waiting]
        if moved:  # keep the other's arrival order sorted by arrival
            other.arrivals = deque(sorted([*other.arrivals, *moved], key=lambda w: w.since))
        other.waiting += self.waiting
        self.heap, self.arrivals, self.waiting = [], deque(), 0


class ServerReplica:
    """One replica of the served model: its calls in flight, limit, usage, health, queue.

    A replica is a server's base URL, or a ``LocalLLM`` instance; its queue holds the calls
    routed to it that wait for a slot.
    """

    __slots__ = (
        "index", "target", "inflight", "limit", "source", "vegas", "calls", "failures",
        "prompt_tokens", "cached_tokens", "output_tokens", "healthy", "trial", "down_at",
        "retry_at", "backoff", "probing", "queue",
    )  # fmt: skip

    def __init__(
        self,
        index: int,
        target: str,
        limit: int | None,
        vegas: VegasLimit | None,
        source: LimitSource,
        aging: float | None,
    ) -> None:
        self.index = index
        self.target = target
        self.inflight = 0
        self.limit = limit
        self.source: LimitSource = source
        self.vegas = vegas
        self.calls = 0
        self.failures = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.output_tokens = 0
        self.healthy = True
        self.trial = False  # back on probation: one call at a time until one succeeds
        self.down_at = 0.0
        self.retry_at = 0.0
        self.backoff = BACKOFF
        self.probing = False
        self.queue = Queue(index, aging)  # calls routed here, waiting

    @property
    def waiting(self) -> int:
        """How many calls routed to this replica wait for a slot."""
        return self.queue.waiting

    def room(self) -> bool:
        """Whether it may take one more call now."""
        if self.trial:
            return self.inflight < 1
        return self.limit is None or self.inflight < self.limit

    def load(self) -> int:
        """Its calls in flight and those waiting for it."""
        return self.inflight + self.queue.waiting


class Rotation:
    """The healthy replicas in turn."""

    __slots__ = ("next",)

    def __init__(self) -> None:
        self.next = 0

    def __call__(self, replicas: Sequence[ServerReplica]) -> ServerReplica:
        """The next healthy replica (the least recently failed when none is)."""
        n = len(replicas)
        for _ in range(n):
            rep = replicas[self.next % n]
            self.next += 1
            if rep.healthy:
                return rep
        return least_recently_failed(replicas)


def least_recently_failed(replicas: Sequence[ServerReplica]) -> ServerReplica:
    """The replica whose last failure is the oldest (for when none is healthy)."""
    return min(replicas, key=lambda r: r.down_at)
