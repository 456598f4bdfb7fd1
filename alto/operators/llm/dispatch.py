"""The dispatcher of one model endpoint: admission, order, routing and health of its calls.

A :class:`Dispatcher` stands in front of the replicas of one model endpoint (the base URLs of an
:class:`~alto.operators.llm.openai.OpenAIClient`, the instances of a
:class:`~alto.operators.llm.local.LocalLLM`). Every call takes a :class:`Lease` for the time it
is on a replica::

    async with dispatcher.lease(prefix) as lease:
        answer = await send(lease.target, priority=lease.priority)
        lease.done(prompt_tokens=..., cached_tokens=..., output_tokens=...)

It uses what only Alto knows about a call, its lineage (:func:`alto.current_call`):

* **Admission** (``max_inflight``): at most so many calls in flight per replica; an int, ``None``
  (no limit), ``"auto"``, learned online by :class:`VegasLimit` from the observed time per
  output token versus calls in flight, to keep each replica near its throughput knee, or
  ``"server"``: what each replica says it serves at once, asked once before the first stage
  call (an ``ask_limit`` coroutine; ``DEFAULT_LIMIT`` where a replica says nothing). Each replica's
  :attr:`ReplicaStats.limit_source` says where its limit came from.
* **Order** of the calls waiting for admission (``order``): ``"root-first"`` (the call whose root
  input was submitted first goes first: the application-level FIFO of Parrot, OSDI'24),
  ``"least-attained"`` (the call whose root has received the fewest output tokens so far goes
  first: Autellix's program-level least-attained service, PLAS, 2025) or ``"fifo"`` (arrival).
  A batched call with several roots counts as its oldest root.
* **Routing** across replicas (``route``): ``"lineage"``: a call goes to the replica that last
  served its parent's, else its root's, calls (it holds their prefix in its cache) while that
  replica has room and no more than a quarter of its limit more calls in flight than the least
  loaded one (SGLang router's load-imbalance override, with a threshold fitted to replicas
  whose decode steps slow down with every call past their knee); otherwise, and for a root's
  first call, to the least loaded replica with room, ties going to the one that last got the
  same ``prefix``; when no replica has room, the call waits for whichever frees first. A free
  replica now is worth more than a cache hit later: a hit saves a prompt's prefill, a wait
  costs a whole call. ``"least-loaded"``; ``"round-robin"``.
* **Priority**: :attr:`Lease.priority` orders the calls on servers that honour a request
  ``priority`` (vLLM's, lower first): the milliseconds from the first root submission this
  dispatcher saw to the call's root's submission, so older roots come first.
* **Health**: a replica whose call fails with a connection failure or HTTP 5xx is taken out of
  rotation, probed after a backoff (by a ``probe`` coroutine, or by letting one call through)
  and brought back when it answers.

Calls made outside a stage call (``current_call()`` is ``None``: LangGraph, plain asyncio) are
never queued: they go at once, round-robin over the healthy replicas, as without a dispatcher.

Starvation: under ``root-first`` a waiting call is passed only by calls of roots submitted
before its own (its key, the root's submission time, never changes and every later root's is
larger), so no stream of new roots can hold it back. Under ``least-attained`` new roots (no
service yet) would pass an old root for ever; so a call that has waited longer than ``aging``
seconds (default 30) is served before every call that has not, oldest first.

Liveness: a limit can deadlock a pipeline whose calls hold their slots while they wait on
each other, e.g. streams whose consumer, a later stage, waits for a slot on the same endpoint
while every slot is held by such streams. When calls wait and no call has ended for ``stall``
seconds (default 10), the oldest waiting call is let through over the limit, and counted.

Example:
    >>> import anyio
    >>> d = Dispatcher(["http://a:8000/v1", "http://b:8000/v1"], max_inflight=2)
    >>> async def one() -> str:
    ...     async with d.lease("You are a careful fact checker.") as lease:
    ...         lease.done(prompt_tokens=20, output_tokens=5)
    ...         return lease.target
    >>> anyio.run(one)
    'http://a:8000/v1'
    >>> d.stats().replicas[0].calls
    1
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, get_args

import anyio
import anyio.lowlevel

from alto import current_call
from alto.ancestry.ancestry import Ancestry, parent_key
from alto.operators.llm.errors import LLMConnectionError, LLMServerError
from alto.operators.llm.limit import MAX_LIMIT, START_LIMIT, VegasLimit

Order = Literal["root-first", "least-attained", "fifo"]
Route = Literal["lineage", "least-loaded", "round-robin"]
Limit = int | Literal["auto", "server"] | None
"""Calls in flight per replica: an int, ``"auto"`` (learned), ``"server"`` (what the replica
says it serves at once) or ``None`` (no limit)."""
LimitSource = Literal["given", "auto", "server", "default"]
"""Where a replica's limit came from: ``"given"`` (an int or ``None`` passed as
``max_inflight``), ``"auto"`` (learned), ``"server"`` (the replica said) or ``"default"``
(``max_inflight="server"`` and the replica said nothing, or has not been asked yet)."""

DEFAULT_LIMIT = 16
"""The limit per replica under ``max_inflight="server"`` where a replica does not say how many
sequences it serves at once: where vLLM serving an 8B model on one GPU reached its peak
throughput in the sweep the emulator's defaults cite."""

ORDERS: tuple[str, ...] = get_args(Order)
ROUTES: tuple[str, ...] = get_args(Route)

Probe = Callable[[int], Awaitable[bool]]
"""``await probe(replica)``: whether that replica answers again (e.g. ``GET /models``)."""

AskLimit = Callable[[int], Awaitable["int | None"]]
"""``await ask_limit(replica)``: how many sequences that replica says it serves at once, or
``None`` when it does not say (``max_inflight="server"``)."""

Sample = tuple[float, int, int, int]
"""A timeline sample: ``(time.monotonic(), replica, inflight, queued)``; replica ``-1`` is a
change of the queue alone (``inflight`` is then the total in flight)."""

# SGLang router's imbalance rule (sgl-router, py_src/sglang_router/launch_router.py,
# RouterArgs: balance_abs_threshold=32, balance_rel_threshold=1.0001; the Rust
# CacheAwareConfig::default later took 1.1) leaves cache affinity when loads (max, min) differ
# by more than 32 requests, on GPUs that batch hundreds. Here a replica's limit sits near its
# throughput knee, past which every call slows every decode step, so affinity is left at a
# difference of a quarter of the limit (AFFINITY_SLACK calls when there is no limit).
CACHE_THRESHOLD = 0.5  # SGLang router's: a prefix match must cover more than half the text
PREFIX_SPANS = (32, 64, 128, 256)  # characters of ``prefix`` hashed for the approximate map
AGING = 30.0
STALL = 10.0
AFFINITY_SLACK = 2
_BACKOFF = 0.5  # first wait before a down replica is probed; doubles up to _MAX_BACKOFF
_MAX_BACKOFF = 10.0
_NO_ROOT = ("", -1)
_Heap = list[tuple[Any, int, "_Waiter"]]  # (order key, arrival, waiter): a heapq


class _Replica:
    __slots__ = (
        "index", "target", "inflight", "limit", "source", "vegas", "calls", "failures",
        "prompt_tokens", "cached_tokens", "output_tokens", "healthy", "trial", "down_at",
        "retry_at", "backoff", "probing", "heap", "arrivals", "waiting",
    )

    def __init__(
        self,
        index: int,
        target: str,
        limit: int | None,
        vegas: VegasLimit | None,
        source: LimitSource = "given",
    ):
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
        self.backoff = _BACKOFF
        self.probing = False
        self.heap: _Heap = []  # calls routed here, waiting
        self.arrivals: deque[_Waiter] = deque()  # the same, in arrival order (for aging)
        self.waiting = 0

    def room(self) -> bool:
        if self.trial:
            return self.inflight < 1
        return self.limit is None or self.inflight < self.limit


class _Waiter:
    __slots__ = ("event", "replica", "waiting", "since", "seq", "where")

    def __init__(self, seq: int, since: float, where: int) -> None:
        self.event = anyio.Event()
        self.where = where  # the replica whose queue holds it; -1: the shared queue
        self.replica = -1
        self.waiting = True
        self.since = since
        self.seq = seq


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """One replica, now.

    Attributes:
        target: its label (base URL or instance name).
        inflight: calls on it now.
        limit: its limit on calls in flight now (learned when ``"auto"``; ``None``: none).
        calls: calls it was given.
        failures: calls that failed on it.
        prompt_tokens / cached_tokens / output_tokens: usage its calls reported.
        healthy: in rotation (``False``: out, being probed).
        queued: calls waiting for it (routed to it by lineage).
        limit_source: where ``limit`` came from (:data:`LimitSource`): ``"given"``,
            ``"auto"``, ``"server"`` or ``"default"``.
    """

    target: str
    inflight: int
    limit: int | None
    calls: int
    failures: int
    prompt_tokens: int
    cached_tokens: int
    healthy: bool
    output_tokens: int = 0
    queued: int = 0
    limit_source: str = "given"


@dataclass(frozen=True, slots=True)
class DispatchStats:
    """A dispatcher, now (:meth:`Dispatcher.stats`).

    Attributes:
        name: the dispatcher's name (its endpoint).
        order / route: its policies.
        queued: calls waiting for admission now.
        max_queued: the most that ever waited at once.
        replicas: one :class:`ReplicaStats` per replica.
        over_limit: calls the liveness guard let through over the limit (``stall``).
    """

    name: str
    order: str
    route: str
    queued: int
    max_queued: int
    replicas: tuple[ReplicaStats, ...]
    _samples: list[Sample] = field(default_factory=list, repr=False, compare=False)
    over_limit: int = 0

    @property
    def cached_share(self) -> float:
        """Prompt tokens served from the replicas' prefix caches, over all prompt tokens."""
        prompt = sum(r.prompt_tokens for r in self.replicas)
        return sum(r.cached_tokens for r in self.replicas) / prompt if prompt else 0.0

    def timeline(self) -> list[Sample]:
        """The samples recorded while :meth:`Dispatcher.record` was on (a copy)."""
        return list(self._samples)


@dataclass(slots=True)
class Lease:
    """One call's slot on one replica, from admission until its block exits.

    ``async with dispatcher.lease(prefix) as lease`` waits for admission; inside, send the call
    to ``lease.target`` and report how it went with :meth:`done` or :meth:`failed`. An exception
    leaving the block that is a connection failure or an HTTP 5xx counts as
    ``failed(replica_down=True)`` unless one of them was called.

    Attributes:
        replica: the replica's index in the dispatcher's targets.
        target: the replica's label (``targets[replica]``).
        priority: what to send as the request's ``priority`` (lower first); ``None`` outside
            a stage call.
    """

    replica: int = -1
    target: str = ""
    priority: int | None = None
    _d: Dispatcher | None = field(default=None, repr=False)
    _prefix: str = field(default="", repr=False)
    _root: tuple[str, int] = field(default=_NO_ROOT, repr=False)
    _ancestry: Ancestry = field(default=(), repr=False)
    _start: float = field(default=0.0, repr=False)
    _inflight: int = field(default=0, repr=False)
    _tokens: int = field(default=-1, repr=False)  # output tokens once done; -1: not done
    _failed: bool = field(default=False, repr=False)
    _down: bool = field(default=False, repr=False)

    def done(
        self, *, prompt_tokens: int = 0, cached_tokens: int = 0, output_tokens: int = 0
    ) -> None:
        """The call succeeded; its usage (feeds the ``"auto"`` limit, ``least-attained`` and
        the stats)."""
        d = self._d
        assert d is not None, "a Lease is made by Dispatcher.lease()"
        rep = d._replicas[self.replica]
        rep.prompt_tokens += prompt_tokens
        rep.cached_tokens += cached_tokens
        rep.output_tokens += output_tokens
        self._tokens = output_tokens
        if self._root is not _NO_ROOT and d.order == "least-attained":
            d._attain(self._root, output_tokens)

    def failed(self, replica_down: bool) -> None:
        """The call failed; ``replica_down`` for a connection failure or HTTP 5xx (the
        replica leaves rotation until it answers again)."""
        self._failed = True
        self._down = self._down or replica_down

    async def __aenter__(self) -> Lease:
        d = self._d
        assert d is not None, "a Lease is made by Dispatcher.lease()"
        await d._acquire(self)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ended(exc)
        d = self._d
        assert d is not None
        d._release(self)

    def _ended(self, exc: BaseException | None) -> None:
        """The call left its block with ``exc``: an exception not reported by :meth:`done` or
        :meth:`failed` is a failure (a cancellation or a closed generator is none)."""
        if isinstance(exc, Exception) and not self._failed and self._tokens < 0:
            self._failed = True
            self._down = _is_down(exc)


def _is_down(exc: BaseException) -> bool:
    """Whether an exception says the replica is down: refused or broken connections, 5xx."""
    if isinstance(exc, LLMServerError):
        return exc.status >= 500
    if isinstance(exc, (LLMConnectionError, ConnectionError)):
        return True
    return type(exc).__name__ in ("ConnectError", "RemoteProtocolError")  # httpx's


class Dispatcher:
    """One per model endpoint (one per client object): admission, order, routing, health.

    Args:
        targets: one label per replica (base URLs for an ``OpenAIClient``, ``"instance 0"``
            ... for a ``LocalLLM``).
        max_inflight: calls in flight per replica: an int, ``None`` (no limit), ``"auto"``
            (learned by :class:`VegasLimit`, from ``start_limit`` up to ``max_limit``) or
            ``"server"`` (what ``ask_limit`` says for each replica, asked once, before the
            first stage call; ``default_limit`` where it says nothing, or with no ``ask_limit``).
        order: which waiting call goes first: ``"root-first"``, ``"least-attained"`` or
            ``"fifo"`` (see the module's docstring).
        route: which replica serves a call: ``"lineage"``, ``"least-loaded"`` or
            ``"round-robin"``.
        name: a name for stats and traces (the endpoint).
        max_limit / start_limit: bounds of the ``"auto"`` limit.
        aging: seconds after which a waiting call goes before every call that has waited less
            (``least-attained`` only; the other orders cannot starve a call).
        stall: seconds with calls waiting and none ending after which the oldest waiting
            call is let through over the limit (the liveness guard, see the module's
            docstring); counted in :attr:`DispatchStats.over_limit`.
        probe: ``await probe(replica) -> bool``, whether a replica that was down answers
            again; ``None``: after its backoff, one call is let through as the probe.
        ask_limit: ``await ask_limit(replica) -> int | None``, how many sequences the replica
            says it serves at once (``max_inflight="server"`` only). An exception counts as
            saying nothing.
        default_limit: the limit of a replica that says nothing (``max_inflight="server"``).
        remember: roots (and parents) whose replica and service are remembered, least
            recently used forgotten first; :meth:`forget` drops a root at once.
        clock: the clock (``time.monotonic``; tests pass a virtual one).

    Raises:
        ValueError: a knob outside its allowed values (named in the message).
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        max_inflight: Limit = "auto",
        order: Order = "root-first",
        route: Route = "lineage",
        name: str = "",
        max_limit: int = MAX_LIMIT,
        start_limit: int = START_LIMIT,
        aging: float = AGING,
        stall: float = STALL,
        probe: Probe | None = None,
        ask_limit: AskLimit | None = None,
        default_limit: int = DEFAULT_LIMIT,
        remember: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        targets = [targets] if isinstance(targets, str) else list(targets)
        if not targets:
            raise ValueError("a Dispatcher needs at least one target (replica)")
        check_knobs(max_inflight, order, route)
        if max_limit < 1:
            raise ValueError(f"max_limit must be >= 1, got {max_limit}")
        if type(default_limit) is not int or default_limit < 1:
            raise ValueError(f"default_limit must be an int >= 1, got {default_limit!r}")
        self.name = name
        self.order: Order = order
        self.route: Route = route
        self.max_inflight: Limit = max_inflight
        self.aging = aging
        self.stall = stall
        self.over_limit = 0  # calls the liveness guard let through over the limit
        self._released_at = clock()  # when a call last ended
        self.probe = probe
        self.remember = remember
        self.clock = clock
        auto = max_inflight == "auto"
        server = max_inflight == "server"
        fixed = default_limit if server else max_inflight if isinstance(max_inflight, int) else None
        source: LimitSource = "auto" if auto else "default" if server else "given"
        start = min(start_limit, max_limit)
        self._replicas = [
            _Replica(
                i, t, start if auto else fixed, VegasLimit(start, max_limit) if auto else None,
                source,
            )
            for i, t in enumerate(targets)
        ]
        self.ask_limit = ask_limit if server else None
        self._asked = self.ask_limit is None  # every replica asked (or nothing to ask)
        self._asking: tuple[Any, anyio.Event] | None = None  # (event loop, done) while asking
        self._single = self._replicas[0] if len(targets) == 1 else None
        self._any: _Heap = []  # waiting calls with no replica yet
        self._any_arrivals: deque[_Waiter] = deque()
        self._any_waiting = 0
        self._queued = 0
        self._max_queued = 0
        self._seq = itertools.count()
        self._rr = 0
        self._down = 0  # replicas out of rotation
        self._epoch: float | None = None  # first root submission seen (for priorities)
        self._root_at: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._parent_at: OrderedDict[tuple[str, Ancestry], int] = OrderedDict()
        self._service: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._prefix_at: OrderedDict[int, int] = OrderedDict()
        self._recording = False
        self.samples: list[Sample] = []

    # -- public ----------------------------------------------------------------------------

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(r.target for r in self._replicas)

    def lease(self, prefix: str = "") -> Lease:
        """A slot for one call, as an async context manager.

        Waits for admission (in ``order``, by :func:`alto.current_call`), picks a replica (by
        ``route``) and holds one in-flight slot on it until the block exits. Outside a stage
        call the call is not queued: it goes at once, round-robin over healthy replicas.

        Args:
            prefix: the text the call shares with its siblings (the prompt's leading part):
                ``lineage`` routing's fallback key.
        """
        return Lease(_d=self, _prefix=prefix)

    def stats(self) -> DispatchStats:
        """A snapshot (cheap; any time)."""
        return DispatchStats(
            self.name,
            self.order,
            self.route,
            self._queued,
            self._max_queued,
            tuple(
                ReplicaStats(
                    r.target, r.inflight, r.limit, r.calls, r.failures, r.prompt_tokens,
                    r.cached_tokens, r.healthy, r.output_tokens, r.waiting, r.source,
                )
                for r in self._replicas
            ),
            self.samples,
            self.over_limit,
        )

    def record(self, on: bool) -> None:
        """Start (or stop) appending ``(time.monotonic(), replica, inflight, queued)`` to
        :attr:`samples` at every change of a replica's calls in flight or of the queue."""
        self._recording = on

    def timeline(self) -> list[Sample]:
        """The samples recorded so far (a copy)."""
        return list(self.samples)

    def limiter(self, replica: int) -> VegasLimit | None:
        """The learned limit of one replica (``None`` unless ``max_inflight="auto"``)."""
        return self._replicas[replica].vegas

    def set_limit(self, replica: int, limit: int, source: LimitSource = "given") -> None:
        """Set one replica's limit on calls in flight (not under ``"auto"``); calls waiting
        for room get it at once when it grew."""
        rep = self._replicas[replica]
        if rep.vegas is not None:
            raise ValueError("the limit of an 'auto' replica is learned; it cannot be set")
        if type(limit) is not int or limit < 1:
            raise ValueError(f"a limit must be an int >= 1, got {limit!r}")
        rep.limit = limit
        rep.source = source
        if self._queued:
            self._pump(rep)

    async def ask_limits(self) -> None:
        """Ask every replica how many sequences it serves at once (``max_inflight="server"``)
        and take the answers as their limits; once: later calls return at once. Calls that
        arrive while the replicas are asked wait for the answers. Done before the first stage
        call is admitted (calls outside a stage are held to no limit); call it to ask
        earlier."""
        if self._asked:
            return
        ask = self.ask_limit
        assert ask is not None
        loop = anyio.lowlevel.current_token().native_token
        pending = self._asking
        if pending is not None and pending[0] is loop:
            await pending[1].wait()
            return
        done = anyio.Event()
        self._asking = (loop, done)
        answers: list[int | None] = [None] * len(self._replicas)

        async def one(i: int) -> None:
            try:
                answers[i] = await ask(i)
            except Exception:  # a replica that cannot say keeps the default
                answers[i] = None

        try:
            async with anyio.create_task_group() as tg:
                for i in range(len(self._replicas)):
                    tg.start_soon(one, i)
            for i, answer in enumerate(answers):
                if type(answer) is int and answer >= 1:
                    self.set_limit(i, answer, "server")
            self._asked = True
        finally:
            self._asking = None
            done.set()

    def set_target(self, replica: int, target: str) -> None:
        """Change one replica's label (its URL moved); what is remembered of it stays."""
        self._replicas[replica].target = target

    def forget(self, run: str, root: int) -> None:
        """Drop what is remembered of a root (its replica, its service): it has its outcome.
        (Without this, roots are forgotten least recently used first, past ``remember``.)"""
        key = (run, root)
        self._root_at.pop(key, None)
        self._service.pop(key, None)

    # -- admission ---------------------------------------------------------------------------

    async def _acquire(self, lease: Lease) -> None:
        info = current_call()
        if info is not None and not self._asked:  # only stage calls are held to limits
            await self.ask_limits()
        now = self.clock()
        if self._down:
            await self._revive(now)
        if info is None:  # not a stage call: at once, round-robin, as without a dispatcher
            rep = self._single
            if rep is None or not rep.healthy:
                rep = self._rotate()
            self._admit(lease, rep, now)
            return
        i = 0
        if len(info.roots) > 1:
            i = min(range(len(info.roots)), key=info.submitted.__getitem__)
        submitted = info.submitted[i]
        root = (info.run, info.roots[i])
        lease._root = root
        ancestry = lease._ancestry = info.ancestries[i]
        epoch = self._epoch
        if epoch is None:
            epoch = self._epoch = submitted
        lease.priority = max(0, int((submitted - epoch) * 1000.0))
        if self._down == len(self._replicas):  # every replica down: go (errors surface)
            self._admit(lease, self._least_recently_failed(), now)
            return
        rep_or_none = self._prefer(root, ancestry, lease._prefix)
        seq = next(self._seq)
        order = self.order
        if order == "root-first":
            key: Any = submitted
        elif order == "least-attained":
            key = self._service.get(root, 0)
        else:
            key = seq
        if rep_or_none is not None:
            if rep_or_none.room():
                self._admit(lease, rep_or_none, now)
                return
            heap, arrivals = rep_or_none.heap, rep_or_none.arrivals
            rep_or_none.waiting += 1
        else:
            free = self._free(lease._prefix)
            if free is not None:
                self._admit(lease, free, now)
                return
            heap, arrivals = self._any, self._any_arrivals
            self._any_waiting += 1
        waiter = _Waiter(seq, now, -1 if heap is self._any else rep_or_none.index)  # type: ignore[union-attr]
        heapq.heappush(heap, (key, seq, waiter))
        if order == "least-attained":
            arrivals.append(waiter)
        self._queued += 1
        if self._queued > self._max_queued:
            self._max_queued = self._queued
        if self._recording:
            self.samples.append((now, -1, self._total(), self._queued))
        try:
            while True:
                with anyio.move_on_after(self.stall):
                    await waiter.event.wait()
                if not waiter.waiting:
                    break
                if self.clock() - self._released_at < self.stall:
                    continue
                # No call has ended for ``stall`` seconds while this one waited: the slots are
                # held by calls that cannot end (see "Liveness"): let it through over the limit.
                waiter.waiting = False
                self._queued -= 1
                self._unwait(waiter)
                self.over_limit += 1
                self._released_at = self.clock()  # one call per ``stall`` at most
                healthy = [r for r in self._replicas if r.healthy] or self._replicas
                target = rep_or_none or min(healthy, key=self._load)
                self._admit(lease, target, self.clock())
                return
        except BaseException:
            if waiter.waiting:  # cancelled while waiting: leave the queue
                waiter.waiting = False
                self._queued -= 1
                self._unwait(waiter)
            elif waiter.replica >= 0:  # admitted just as it was cancelled: give the slot back
                rep = self._replicas[waiter.replica]
                rep.inflight -= 1
                self._pump(rep)
            raise
        rep = self._replicas[waiter.replica]
        lease.replica = rep.index
        lease.target = rep.target
        lease._start = self.clock()
        lease._inflight = rep.inflight
        self._remember(lease, rep)

    def _unwait(self, waiter: _Waiter) -> None:
        if waiter.where < 0:
            self._any_waiting -= 1
        else:
            self._replicas[waiter.where].waiting -= 1

    def _admit(self, lease: Lease, rep: _Replica, now: float) -> None:
        rep.inflight += 1
        rep.calls += 1
        lease.replica = rep.index
        lease.target = rep.target
        lease._start = now
        lease._inflight = rep.inflight
        if self._recording:
            self.samples.append((now, rep.index, rep.inflight, self._queued))
        if lease._root is not _NO_ROOT:
            self._remember(lease, rep)

    def _release(self, lease: Lease) -> None:
        rep = self._replicas[lease.replica]
        rep.inflight -= 1
        now = self._released_at = self.clock()
        if self._recording:
            self.samples.append((now, rep.index, rep.inflight, self._queued))
        vegas = rep.vegas
        if lease._failed:
            rep.failures += 1
            if lease._down:
                if vegas is not None and vegas.drop():
                    rep.limit = vegas.limit
                self._take_down(rep, now)
                return
        elif lease._tokens >= 0:
            if rep.trial:  # the probe call answered: back in rotation
                rep.trial = False
                rep.backoff = _BACKOFF
            if vegas is not None and vegas.sample(
                now - lease._start, lease._tokens, lease._inflight
            ):
                rep.limit = vegas.limit
        if self._queued:
            self._pump(rep)

    # -- order ---------------------------------------------------------------------------------

    def _head(self, heap: _Heap, arrivals: deque[_Waiter], now: float) -> tuple[Any, ...] | None:
        """The rank of the call that ``heap`` would give next (aged calls first), or None."""
        while arrivals and not arrivals[0].waiting:
            arrivals.popleft()
        if arrivals and now - arrivals[0].since > self.aging:
            return (0, arrivals[0].since)
        while heap and not heap[0][2].waiting:
            heapq.heappop(heap)
        if heap:
            return (1, heap[0][0], heap[0][1])
        return None

    def _take(self, heap: _Heap, arrivals: deque[_Waiter], aged: bool) -> _Waiter:
        if aged:
            waiter = arrivals.popleft()
        else:
            waiter = heapq.heappop(heap)[2]
        waiter.waiting = False
        return waiter

    def _pump(self, rep: _Replica) -> None:
        """Give ``rep``'s free slots to the calls waiting for them, in order: those routed to
        it (round-robin) and those routed nowhere yet."""
        if not rep.healthy and self._down < len(self._replicas):
            return
        everyone_down = self._down == len(self._replicas)
        while self._queued and (everyone_down or rep.room()):
            now = self.clock()
            best: tuple[Any, ...] | None = None
            source: _Replica | None = None
            mine = self._head(rep.heap, rep.arrivals, now)
            if mine is not None:
                best, source = mine, rep
            shared = self._head(self._any, self._any_arrivals, now)
            if shared is not None and (best is None or shared < best):
                best, source = shared, None
            if best is None:
                if everyone_down:  # calls routed to other dead replicas go here
                    for other in self._replicas:
                        if other.waiting:
                            self._requeue(other)
                    if self._any_waiting:
                        continue
                return
            aged = best[0] == 0
            if source is None:
                waiter = self._take(self._any, self._any_arrivals, aged)
                self._any_waiting -= 1
            else:
                waiter = self._take(source.heap, source.arrivals, aged)
                source.waiting -= 1
            self._queued -= 1
            rep.inflight += 1
            rep.calls += 1
            waiter.replica = rep.index
            waiter.event.set()
            if self._recording:
                self.samples.append((now, rep.index, rep.inflight, self._queued))

    def _attain(self, root: tuple[str, int], tokens: int) -> None:
        service = self._service
        service[root] = service.get(root, 0) + tokens
        service.move_to_end(root)
        if len(service) > self.remember:
            service.popitem(last=False)

    # -- routing -------------------------------------------------------------------------------

    def _load(self, rep: _Replica) -> int:
        return rep.inflight + rep.waiting

    def _prefer(self, root: tuple[str, int], ancestry: Ancestry, prefix: str) -> _Replica | None:
        """The replica a stage call should wait for, or None (the first free one)."""
        route = self.route
        reps = self._replicas
        if len(reps) == 1:
            return reps[0]
        if route == "round-robin":
            return self._rotate()
        if route == "least-loaded":
            return None
        chosen = -1
        if len(ancestry) >= 3:
            chosen = self._parent_at.get((root[0], parent_key(ancestry)), -1)
        if chosen < 0:
            chosen = self._root_at.get(root, -1)
        if chosen < 0:
            return None  # a root's first call: the least loaded replica spreads the roots
        rep = reps[chosen]
        if not rep.healthy or not rep.room():
            return None  # a free replica now beats a cache hit later: whichever frees first
        low = min(r.inflight for r in reps if r.healthy)
        if rep.inflight - low > (max(1, rep.limit // 4) if rep.limit else AFFINITY_SLACK):
            return None  # much busier than another: its decode steps are slower
        return rep

    def _free(self, prefix: str = "") -> _Replica | None:
        """The healthy replica with room and the fewest calls in flight for a call routed
        nowhere yet (of those, under ``lineage``, the one that last got ``prefix``), or None."""
        best: _Replica | None = None
        for rep in self._replicas:
            if rep.healthy and rep.room() and (best is None or rep.inflight < best.inflight):
                best = rep
        if best is not None and prefix and self.route == "lineage":
            known = self._match(prefix)
            if known >= 0:
                rep = self._replicas[known]
                if rep.healthy and rep.room() and rep.inflight <= best.inflight:
                    return rep
        return best

    def _rotate(self) -> _Replica:
        """The next healthy replica in turn (the least recently failed when none is)."""
        reps = self._replicas
        n = len(reps)
        for _ in range(n):
            rep = reps[self._rr % n]
            self._rr += 1
            if rep.healthy:
                return rep
        return self._least_recently_failed()

    def _least_recently_failed(self) -> _Replica:
        return min(self._replicas, key=lambda r: r.down_at)

    def _remember(self, lease: Lease, rep: _Replica) -> None:
        """Note that the call's root (and parent) and prefix are on ``rep`` now."""
        if self.route != "lineage" or len(self._replicas) == 1:
            return
        root = lease._root
        roots = self._root_at
        roots[root] = rep.index  # the replica that served it last holds its prefix now
        roots.move_to_end(root)
        if len(roots) > self.remember:
            roots.popitem(last=False)
        ancestry = lease._ancestry
        if len(ancestry) >= 3:
            parents = self._parent_at
            pkey = (root[0], parent_key(ancestry))
            parents[pkey] = rep.index
            parents.move_to_end(pkey)
            if len(parents) > 4 * self.remember:
                parents.popitem(last=False)
        prefix = lease._prefix
        if prefix:
            spans = self._prefix_at
            for n in PREFIX_SPANS:
                if n > len(prefix):
                    break
                h = hash(prefix[:n])
                spans[h] = rep.index
                spans.move_to_end(h)
            h = hash(prefix)
            spans[h] = rep.index
            spans.move_to_end(h)
            while len(spans) > 4 * self.remember:
                spans.popitem(last=False)

    def _match(self, prefix: str) -> int:
        """The replica that last got the longest known leading part of ``prefix``, if that
        part covers more than ``CACHE_THRESHOLD`` of it; else -1."""
        spans = self._prefix_at
        found = spans.get(hash(prefix), -1)
        if found >= 0:
            return found
        for n in reversed(PREFIX_SPANS):
            if n < len(prefix) and n > CACHE_THRESHOLD * len(prefix):
                found = spans.get(hash(prefix[:n]), -1)
                if found >= 0:
                    return found
        return -1

    # -- health --------------------------------------------------------------------------------

    def _take_down(self, rep: _Replica, now: float) -> None:
        if rep.trial:  # the probe call failed too: wait longer
            rep.trial = False
            rep.healthy = False
            self._down += 1
            rep.backoff = min(_MAX_BACKOFF, rep.backoff * 2)
        elif rep.healthy:
            rep.healthy = False
            self._down += 1
        else:
            return
        rep.down_at = now
        rep.retry_at = now + rep.backoff
        if rep.waiting:
            self._requeue(rep)
        if self._down == len(self._replicas):  # nobody left: let every waiting call go
            self._pump(self._least_recently_failed())
        else:
            for other in self._replicas:
                if other.healthy and self._queued:
                    self._pump(other)

    def _requeue(self, rep: _Replica) -> None:
        """Move the calls waiting for ``rep`` to the shared queue."""
        for entry in rep.heap:
            if entry[2].waiting:
                entry[2].where = -1
                heapq.heappush(self._any, entry)
        for waiter in rep.arrivals:
            if waiter.waiting:
                self._any_arrivals.append(waiter)
        if rep.arrivals:  # keep the shared arrival order sorted by arrival
            self._any_arrivals = deque(sorted(self._any_arrivals, key=lambda w: w.since))
        self._any_waiting += rep.waiting
        rep.heap, rep.arrivals, rep.waiting = [], deque(), 0

    async def _revive(self, now: float) -> None:
        """Bring back (on probation) the down replicas whose backoff has passed."""
        for rep in self._replicas:
            if rep.healthy or rep.probing or now < rep.retry_at:
                continue
            if self.probe is None:
                rep.healthy = True
                rep.trial = True
                self._down -= 1
                self._pump(rep)
                continue
            rep.probing = True
            try:
                ok = await self.probe(rep.index)
            except Exception:
                ok = False
            finally:
                rep.probing = False
            if rep.healthy:
                continue
            if ok:
                rep.healthy = True
                rep.backoff = _BACKOFF
                self._down -= 1
                self._pump(rep)
            else:
                rep.backoff = min(_MAX_BACKOFF, rep.backoff * 2)
                rep.retry_at = self.clock() + rep.backoff

    def _total(self) -> int:
        return sum(r.inflight for r in self._replicas)


def check_knobs(max_inflight: Any, order: Any, route: Any) -> None:
    """Raise ValueError naming a dispatcher knob outside its allowed values."""
    if not (
        max_inflight is None
        or max_inflight in ("auto", "server")
        or (type(max_inflight) is int and max_inflight >= 1)
    ):
        raise ValueError(
            f"max_inflight must be an int >= 1, 'auto', 'server' or None (no limit), "
            f"got {max_inflight!r}"
        )
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}, got {order!r}")
    if route not in ROUTES:
        raise ValueError(f"route must be one of {', '.join(map(repr, ROUTES))}, got {route!r}")


__all__ = [
    "AGING",
    "AskLimit",
    "DEFAULT_LIMIT",
    "DispatchStats",
    "Dispatcher",
    "Lease",
    "Limit",
    "LimitSource",
    "MAX_LIMIT",
    "Order",
    "ReplicaStats",
    "Route",
    "VegasLimit",
]
