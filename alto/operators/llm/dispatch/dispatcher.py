"""The dispatcher of one model endpoint: admission, and the order, routing and health of its calls.

The policies are in :mod:`~alto.operators.llm.dispatch.order` and
:mod:`~alto.operators.llm.dispatch.route`.
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import anyio
import anyio.lowlevel

from alto.ancestry.ancestry import Ancestry
from alto.errors import UsageError
from alto.lineage import current_call, on_root_end
from alto.operators.llm.dispatch.knobs import (
    AGING,
    DEFAULT_LIMIT,
    STALL,
    Limit,
    LimitSource,
    Order,
    Route,
    check_knobs,
)
from alto.operators.llm.dispatch.lease import NO_ROOT, Lease
from alto.operators.llm.dispatch.order import OrderPolicy, order_policy
from alto.operators.llm.dispatch.replica import (
    BACKOFF,
    MAX_BACKOFF,
    SHARED,
    Queue,
    Rotation,
    ServerReplica,
    Waiter,
    least_recently_failed,
)
from alto.operators.llm.dispatch.route import RoutePolicy, route_policy
from alto.operators.llm.dispatch.stats import DispatchStats, ReplicaStats, Sample
from alto.operators.llm.limit import MAX_LIMIT, START_LIMIT, VegasLimit

Probe = Callable[[int], Awaitable[bool]]
"""``await probe(replica)``: whether that replica answers again (e.g. ``GET /models``)."""

AskLimit = Callable[[int], Awaitable["int | None"]]
"""``await ask_limit(replica)``: how many sequences that replica says it serves at once, or
``None`` when it does not say (``max_inflight="server"``)."""


_LIVE: weakref.WeakSet[Dispatcher] = weakref.WeakSet()
"""Every dispatcher in this process, told when a root input gets its outcome."""


def _forget_everywhere(run: str, root: int) -> None:
    for dispatcher in list(_LIVE):
        dispatcher.forget(run, root)


class Dispatcher:
    """One per model endpoint (one per client object): admission, order, routing, health.

    When a root input of a run in this process gets its outcome, every dispatcher forgets
    it (:meth:`forget`; :func:`alto.lineage.on_root_end`).

    Args:
        targets: one label per replica (base URLs for an ``OpenAIClient``, ``"instance 0"``
            ... for a ``LocalLLM``).
        max_inflight: calls in flight per replica: an int, ``None`` (no limit), ``"auto"``
            (learned by :class:`~alto.operators.llm.limit.VegasLimit`, from ``start_limit``
            up to ``max_limit``) or ``"server"`` (what ``ask_limit`` says for each replica,
            asked once, before the first stage call; ``default_limit`` where it says nothing,
            or with no ``ask_limit``).
        order: which waiting call goes first: ``"root-first"``, ``"least-attained"``,
            ``"fifo"``, or an :class:`~alto.operators.llm.dispatch.order.OrderPolicy`.
        route: which replica serves a call: ``"lineage"``, ``"least-loaded"``,
            ``"round-robin"``, or a :class:`~alto.operators.llm.dispatch.route.RoutePolicy`.
        name: a name for stats and traces (the endpoint).
        max_limit / start_limit: bounds of the ``"auto"`` limit.
        aging: seconds after which a waiting call goes before every call that has waited less
            (``least-attained`` only; the other orders cannot starve a call).
        stall: seconds with calls waiting and none ending after which the oldest waiting
            call is let through over the limit (the liveness guard, see the package's
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
        UsageError: a knob outside its allowed values (named in the message).
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        max_inflight: Limit = "auto",
        order: Order | OrderPolicy = "root-first",
        route: Route | RoutePolicy = "lineage",
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
            msg = "a Dispatcher needs at least one target (replica)"
            raise UsageError(msg)
        check_knobs(max_inflight, order, route)
        if max_limit < 1:
            msg = f"max_limit must be >= 1, got {max_limit}"
            raise UsageError(msg)
        if type(default_limit) is not int or default_limit < 1:
            msg = f"default_limit must be an int >= 1, got {default_limit!r}"
            raise UsageError(msg)
        self.name = name
        self.order_policy = order_policy(order, aging=aging, remember=remember)
        self.route_policy = route_policy(route, remember=remember)
        self.order: str = self.order_policy.name
        self.route: str = self.route_policy.name
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
        aged = self.order_policy.aging
        self._replicas = [
            ServerReplica(
                i, t, start if auto else fixed, VegasLimit(start, max_limit) if auto else None,
                source, aged,
            )
            for i, t in enumerate(targets)
        ]
        self.ask_limit = ask_limit if server else None
        self._asked = self.ask_limit is None  # every replica asked (or nothing to ask)
        self._asking: tuple[Any, anyio.Event] | None = None  # (event loop, done) while asking
        self._single = self._replicas[0] if len(targets) == 1 else None
        self._shared = Queue(SHARED, aged)  # waiting calls routed to no replica yet
        self._queued = 0
        self._max_queued = 0
        self._seq = itertools.count()
        self._rotation = Rotation()  # calls made outside a stage call
        self._down = 0  # replicas out of rotation
        self._epoch: float | None = None  # first root submission seen (for priorities)
        self._recording = False
        self.samples: list[Sample] = []
        _LIVE.add(self)
        on_root_end(_forget_everywhere)

    # -- public ----------------------------------------------------------------------------

    @property
    def targets(self) -> tuple[str, ...]:
        """Every replica's label (its URL), in the dispatcher's order."""
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
        """Start (or stop) recording samples of the calls in flight and queued.

        A sample ``(time.monotonic(), replica, inflight, queued)`` is appended to
        :attr:`samples` at every change of a replica's calls in flight or of the queue.
        """
        self._recording = on

    def timeline(self) -> list[Sample]:
        """The samples recorded so far (a copy)."""
        return list(self.samples)

    def limiter(self, replica: int) -> VegasLimit | None:
        """The learned limit of one replica (``None`` unless ``max_inflight="auto"``)."""
        return self._replicas[replica].vegas

    def set_limit(self, replica: int, limit: int, source: LimitSource = "given") -> None:
        """Set one replica's limit on calls in flight (not under ``"auto"``).

        Calls waiting for room get it at once when it grew.
        """
        rep = self._replicas[replica]
        if rep.vegas is not None:
            msg = "the limit of an 'auto' replica is learned; it cannot be set"
            raise UsageError(msg)
        if type(limit) is not int or limit < 1:
            msg = f"a limit must be an int >= 1, got {limit!r}"
            raise UsageError(msg)
        rep.limit = limit
        rep.source = source
        if self._queued:
            self._pump(rep)

    async def ask_limits(self) -> None:
        """Ask every replica how many sequences it serves at once and take the answers as limits.

        This is ``max_inflight="server"``, done once: later calls return at once. Calls that
        arrive while the replicas are asked wait for the answers. Done before the first
        stage call is admitted (calls outside a stage are held to no limit); call it to ask
        earlier.
        """
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

        Without this, roots are forgotten least recently used first, past ``remember``.
        """
        key = (run, root)
        self.route_policy.forget(key)
        self.order_policy.forget(key)

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
                rep = self._rotation(self._replicas)
            self._admit(lease, rep, now)
            return
        i = 0
        if len(info.roots) > 1:
            i = min(range(len(info.roots)), key=info.submitted.__getitem__)
        submitted = info.submitted[i]
        root = lease._root = (info.run, info.roots[i])
        ancestry = lease._ancestry = info.ancestries[i]
        epoch = self._epoch
        if epoch is None:
            epoch = self._epoch = submitted
        lease.priority = max(0, int((submitted - epoch) * 1000.0))
        if self._down == len(self._replicas):  # every replica down: go (errors surface)
            self._admit(lease, least_recently_failed(self._replicas), now)
            return
        preferred = self._single or self.route_policy.prefer(
            self._replicas, root, ancestry, lease._prefix
        )
        if preferred is not None:
            if preferred.room():
                self._admit(lease, preferred, now)
                return
            queue = preferred.queue
        else:
            free = self.route_policy.free(self._replicas, lease._prefix)
            if free is not None:
                self._admit(lease, free, now)
                return
            queue = self._shared
        seq = next(self._seq)
        waiter = Waiter(seq, now)
        queue.push(self.order_policy.key(root, submitted, seq), waiter)
        self._queued += 1
        if self._queued > self._max_queued:
            self._max_queued = self._queued
        if self._recording:
            self.samples.append((now, -1, self._total(), self._queued))
        try:
            if not await self._wait(waiter):
                # No call has ended for ``stall`` seconds while this one waited: the slots
                # are held by calls that cannot end (see "Liveness"): let it through over
                # the limit.
                healthy = [r for r in self._replicas if r.healthy] or self._replicas
                self._admit(lease, preferred or min(healthy, key=ServerReplica.load), self.clock())
                return
        except BaseException:
            if waiter.waiting:  # cancelled while waiting: leave the queue
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

    async def _wait(self, waiter: Waiter) -> bool:
        """Wait until ``waiter`` is admitted (True), or the liveness guard dequeues it (False)."""
        while True:
            with anyio.move_on_after(self.stall):
                await waiter.event.wait()
            if not waiter.waiting:
                return True
            if self.clock() - self._released_at >= self.stall:
                self._unwait(waiter)
                self.over_limit += 1
                self._released_at = self.clock()  # one call per ``stall`` at most
                return False

    def _queue(self, where: int) -> Queue:
        return self._shared if where == SHARED else self._replicas[where].queue

    def _unwait(self, waiter: Waiter) -> None:
        """Take a call that still waits out of its queue (it stays there until popped)."""
        waiter.waiting = False
        self._queued -= 1
        self._queue(waiter.where).waiting -= 1

    def _admit(self, lease: Lease, rep: ServerReplica, now: float) -> None:
        rep.inflight += 1
        rep.calls += 1
        lease.replica = rep.index
        lease.target = rep.target
        lease._start = now
        lease._inflight = rep.inflight
        if self._recording:
            self.samples.append((now, rep.index, rep.inflight, self._queued))
        if lease._root is not NO_ROOT:
            self._remember(lease, rep)

    def _remember(self, lease: Lease, rep: ServerReplica) -> None:
        if self._single is None:
            # _admit calls this only for a lease whose root is set, and _acquire sets the
            # root and the ancestry together: the ancestry is a real one, not the ()
            ancestry = cast(Ancestry, lease._ancestry)
            self.route_policy.remember(lease._root, ancestry, lease._prefix, rep)

    def _served(self, lease: Lease, prompt: int, cached: int, output: int) -> None:
        """A call ended well with this usage (:meth:`Lease.done`)."""
        rep = self._replicas[lease.replica]
        rep.prompt_tokens += prompt
        rep.cached_tokens += cached
        rep.output_tokens += output
        lease._tokens = output
        if lease._root is not NO_ROOT:
            self.order_policy.served(lease._root, output)

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
                rep.backoff = BACKOFF
            if vegas is not None and vegas.sample(
                now - lease._start, lease._tokens, lease._inflight
            ):
                rep.limit = vegas.limit
        if self._queued:
            self._pump(rep)

    def _pump(self, rep: ServerReplica) -> None:
        """Give ``rep``'s free slots to the calls waiting for them, in order.

        Those are the calls routed to it and those routed nowhere yet.
        """
        if not rep.healthy and self._down < len(self._replicas):
            return
        everyone_down = self._down == len(self._replicas)
        while self._queued and (everyone_down or rep.room()):
            now = self.clock()
            queue = rep.queue
            best = queue.head(now)
            shared = self._shared.head(now)
            if shared is not None and (best is None or shared < best):
                best, queue = shared, self._shared
            if best is None:
                if everyone_down:  # calls routed to other dead replicas go here
                    for other in self._replicas:
                        if other.waiting:
                            other.queue.move_to(self._shared)
                    if self._shared.waiting:
                        continue
                return
            waiter = queue.take(aged=best[0] == 0)
            self._queued -= 1
            rep.inflight += 1
            rep.calls += 1
            waiter.replica = rep.index
            waiter.event.set()
            if self._recording:
                self.samples.append((now, rep.index, rep.inflight, self._queued))

    # -- health --------------------------------------------------------------------------------

    def _take_down(self, rep: ServerReplica, now: float) -> None:
        if rep.trial:  # the probe call failed too: wait longer
            rep.trial = False
            rep.healthy = False
            self._down += 1
            rep.backoff = min(MAX_BACKOFF, rep.backoff * 2)
        elif rep.healthy:
            rep.healthy = False
            self._down += 1
        else:
            return
        rep.down_at = now
        rep.retry_at = now + rep.backoff
        if rep.waiting:
            rep.queue.move_to(self._shared)
        if self._down == len(self._replicas):  # nobody left: let every waiting call go
            self._pump(least_recently_failed(self._replicas))
        else:
            for other in self._replicas:
                if other.healthy and self._queued:
                    self._pump(other)

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
                rep.backoff = BACKOFF
                self._down -= 1
                self._pump(rep)
            else:
                rep.backoff = min(MAX_BACKOFF, rep.backoff * 2)
                rep.retry_at = self.clock() + rep.backoff

    def _total(self) -> int:
        return sum(r.inflight for r in self._replicas)
