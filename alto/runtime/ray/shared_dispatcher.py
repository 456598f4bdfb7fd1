"""One dispatcher per model endpoint on Ray.

The state lives in a small actor that every process calling the endpoint shares.

On the Ray backend each stage actor unpickles its own copy of an
:class:`~alto.operators.llm.openai.OpenAIClient`. With a dispatcher per copy, a limit of
``max_inflight=4`` would let every actor send 4 calls, and the order and routing of calls
would only hold within each actor. So a client carries an identity (made when it is
constructed, kept when it is pickled), and on Ray:

* the **driver** (the process that pickles the client into the stage functions it ships;
  the client asks the registered :class:`~alto.operators.llm.dispatch.sharing.Sharing`,
  :data:`RAY_SHARING` here, registered when this module is imported, which the Ray backend
  does) creates one named actor per identity, a :class:`DispatchHost` (``num_cpus=0``, in the
  ``"alto"`` namespace, owned by the driver, restarted if it crashes). It holds the real
  :class:`~alto.operators.llm.dispatch.Dispatcher`, built from the client's settings, so
  admission, order, routing, health and the learned limit are the endpoint's, not an actor's;
* a copy **rebuilt in a Ray worker** gets a :class:`SharedDispatcher` (from :func:`adopt`,
  which travels in the pickle): the same ``lease(prefix)`` API, whose lease reads
  :func:`alto.current_call` in the caller, sends it with the acquire (one remote call; the
  actor admits it inside :func:`alto.within_call` of it), and
  reports ``done``/``failed`` on release (one more, waited for: when a call returns, its
  slot is free and its usage counted);
* the **driver's own client** keeps its in-process dispatcher for the calls it makes
  itself, and its ``dispatch_stats()`` shows the shared actor's state when a copy of it
  went to Ray in this Ray session (see :func:`shared_stats`): ``alto run --stats`` and
  ``--trace`` read it before the CLI disconnects from Ray.

Calls made outside a stage call in a worker go to the actor too: it admits them at once
(never queued), round-robin, and counts them in flight, exactly as the in-process
dispatcher does on the local backend; skipping the actor for them would leave them out
of the shared counts, which the stage calls' admission and routing read.

Lifetime: the actor made by the driver lives as long as the driver's connection to Ray
(it ends with ``ray.shutdown()`` or the driver's exit), so no stage actor's exit takes it
along. A copy pickled in a worker, whose driver never made the actor, makes it there
(owned by that worker); if that worker exits, the next call finds it gone and makes it
again (its counts start afresh). A caller that dies holding a lease would keep its slot
for ever (with ``max_inflight=1``, every later call would wait): the actor therefore
checks, every ``SWEEP_S`` seconds while leases are held, that the actors holding them
still run in the same worker process (a restarted stage actor runs in a new one), and
frees the slots of those that do not. Callers that are Ray tasks, not actors, are not
checked.

Cost: two remote calls per model call, acquire and release; see
``benchmarks/ray_dispatch.py``, which measures it against the in-process dispatcher.

Not shared: a client *constructed* in each process (a module-level client of a module the
workers import) is a different client in each, as it would be locally.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import anyio
import ray
from ray.exceptions import RayActorError

from alto.lineage import CallInfo, current_call, on_root_end, within_call
from alto.operators.llm.dispatch import Dispatcher, DispatchStats, Lease
from alto.operators.llm.dispatch.sharing import Adopt, share_with

if TYPE_CHECKING:
    from alto.operators.llm.openai import OpenAIClient

NAMESPACE = "alto"
"""The Ray namespace of the dispatch actors (their names hold the client's identity)."""

MAX_WAITING = 100_000
"""The dispatch actor's ``max_concurrency``: calls that may wait in it at once (a waiting
call is a suspended coroutine there; past this many, Ray queues them in arrival order)."""

SWEEP_S = 5.0
"""Seconds between checks that the actors holding leases are still alive."""

ACQUIRE_TRIES = 3
"""Acquires sent before giving up when the dispatch actor is gone (it is made again)."""

Key = tuple[str, int]
"""A lease's key: the caller's Ray worker id and a counter of that process."""



def actor_name(identity: str) -> str:
    """The name of the dispatch actor of the client with this identity."""
    return f"alto-dispatch-{identity}"


def in_worker() -> bool:
    """Whether this process is a Ray worker (an actor or a task), not the driver."""
    return bool(ray.get_runtime_context().worker.mode == ray.WORKER_MODE)


def _session() -> tuple[str, str]:
    context = ray.get_runtime_context()
    return context.get_job_id(), context.get_node_id()


_host_class: Any = None
_shipped: dict[str, tuple[tuple[str, str], Any]] = {}  # identity -> (session, handle), driver


def _open_host(client: OpenAIClient, *, record: bool = False) -> Any:
    """The client's dispatch actor: found by name, or made (owned by this process)."""
    global _host_class
    if _host_class is None:
        _host_class = ray.remote(DispatchHost)
    return _host_class.options(
        name=actor_name(client._identity),
        namespace=NAMESPACE,
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=MAX_WAITING,
        max_restarts=-1,
        max_task_retries=0,
    ).remote(client._settings, record)


def on_ray() -> bool:
    """Whether this process is connected to Ray."""
    return bool(ray.is_initialized())


def shipping(client: OpenAIClient) -> None:
    """The driver pickles ``client`` (to ship it to Ray actors): make its dispatch actor.

    Does nothing in a worker (see :class:`SharedDispatcher` for copies pickled there).
    """
    if in_worker():
        return
    session = _session()
    known = _shipped.get(client._identity)
    if known is not None and known[0] == session:
        return
    recording = client.dispatcher._recording
    handle = _open_host(client, record=recording)
    if recording:  # an actor of an earlier run in this session was made without it
        handle.record.remote(True)
    _shipped[client._identity] = (session, handle)


def adopt(client: OpenAIClient) -> None:
    """A copy of a client was unpickled: in a Ray worker, share the endpoint's dispatcher."""
    if on_ray() and in_worker():
        client.dispatcher = SharedDispatcher(client)


def shared_stats(client: OpenAIClient) -> DispatchStats | None:
    """In the driver, the shared dispatcher's state, or ``None``.

    The state is there if a copy of ``client`` went to Ray in this Ray session and its actor
    answers.
    """
    if not on_ray():
        return None
    known = _shipped.get(client._identity)
    if known is None or known[0] != _session():
        return None
    try:
        stats: DispatchStats = ray.get(known[1].stats.remote(), timeout=30)
    except Exception:  # gone (killed, or its node): what this process kept is all there is
        return None
    return stats


class RaySharing:
    """The :class:`~alto.operators.llm.dispatch.sharing.Sharing` of a Ray cluster.

    While this process is connected to Ray, a pickled client's copies share its dispatch
    actor.
    """

    def shipped(self, client: OpenAIClient) -> Adopt | None:
        """On Ray, make the dispatch actor ``client``'s copies share and return :func:`adopt`.

        Off Ray, ``None``: nothing is shared.
        """
        if not on_ray():
            return None
        shipping(client)
        return adopt

    def stats(self, client: OpenAIClient) -> DispatchStats | None:
        """The state of ``client``'s shared dispatch actor (:func:`shared_stats`), or ``None``."""
        return shared_stats(client)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RaySharing)

    def __hash__(self) -> int:
        return hash(RaySharing)


def _forget_shared(run: str, root: int) -> None:
    """A root of a run on this driver has its outcome.

    The dispatch actors of the clients it shipped in this Ray session forget it (sent, not
    waited for).
    """
    if not _shipped or not on_ray():
        return
    session = _session()
    for known_session, handle in _shipped.values():
        if known_session == session:
            handle.forget.remote(run, root)


RAY_SHARING = RaySharing()
share_with(RAY_SHARING)
on_root_end(_forget_shared)


def _worker_id(actor: Any) -> str:
    """Run on a lease holder by ``__ray_call__``: the worker process it runs in."""
    return str(ray.get_runtime_context().get_worker_id())


class _SharedLease(Lease):
    """A :class:`Lease` whose slot is held in the dispatch actor."""

    __slots__ = ("_key", "_usage")
    _key: Key
    _usage: tuple[int, int, int] | None

    def done(
        self, *, prompt_tokens: int = 0, cached_tokens: int = 0, output_tokens: int = 0
    ) -> None:
        self._usage = (prompt_tokens, cached_tokens, output_tokens)
        self._tokens = output_tokens

    async def __aenter__(self) -> Lease:
        d = self._d
        assert isinstance(d, SharedDispatcher)
        self._usage = None
        self._key = await d._acquire_remote(self)
        return self

    async def _give_back(self) -> None:
        d = self._d
        assert isinstance(d, SharedDispatcher)
        with anyio.CancelScope(shield=True):  # a cancelled call gives its slot back too
            await d._release_remote(self)


class SharedDispatcher(Dispatcher):
    """The dispatcher of a client copy in a Ray worker.

    Its state is the endpoint's :class:`DispatchHost`'s (see the module docstring).

    Its own counters stay at zero; :meth:`stats` asks the actor.

    Args:
        client: the copy (its identity, settings and local dispatcher's knobs).
    """

    def __init__(self, client: OpenAIClient) -> None:
        local = client.dispatcher
        super().__init__(
            local.targets, max_inflight=local.max_inflight, order=local.order_policy,
            route=local.route_policy, name=local.name,
        )
        self._client = client
        self._handle: Any = None
        self._me = ""
        self._keys = itertools.count()

    def lease(self, prefix: str = "") -> Lease:
        """A slot for one call, held in the shared actor (see :meth:`Dispatcher.lease`)."""
        return _SharedLease(_d=self, _prefix=prefix)

    def stats(self) -> DispatchStats:
        """The shared dispatcher's snapshot (a remote call; blocks)."""
        stats: DispatchStats = ray.get(self._connect().stats.remote())
        return stats

    def timeline(self) -> list[tuple[float, int, int, int]]:
        """The samples the shared dispatcher recorded (a remote call; blocks)."""
        return self.stats().timeline()

    def record(self, on: bool) -> None:
        """Start (or stop) recording samples, here and in the shared actor (not waited for)."""
        super().record(on)
        self._connect().record.remote(on)

    def set_target(self, replica: int, target: str) -> None:
        """Change one replica's label, here and in the shared actor (waits for the actor)."""
        super().set_target(replica, target)
        ray.get(self._connect().set_target.remote(replica, target))

    def forget(self, run: str, root: int) -> None:
        """Tell the shared actor to drop what it remembers of a root (sent, not waited for)."""
        self._connect().forget.remote(run, root)

    def _connect(self, again: bool = False) -> Any:
        """The dispatch actor's handle (found, or made when no driver made it)."""
        if self._handle is None or again:
            self._handle = _open_host(self._client)
        return self._handle

    async def _hello(self, handle: Any) -> None:
        """Tell the actor who this process is, so that it can check the process lives."""
        context = ray.get_runtime_context()
        self._me = str(context.get_worker_id())
        me = context.current_actor if context.get_actor_id() is not None else None
        await handle.hello.remote(self._me, me)

    async def _acquire_remote(self, lease: _SharedLease) -> Key:
        call = current_call()
        handle = self._connect()
        for attempt in range(ACQUIRE_TRIES):
            try:
                if not self._me:
                    await self._hello(handle)
                key = (self._me, next(self._keys))
                ref = handle.acquire.remote(key, lease._prefix, call)
                try:
                    lease.replica, lease.target, lease.priority = await ref
                except BaseException as exc:
                    if not isinstance(exc, RayActorError):  # cancelled while waiting
                        handle.abandon.remote(key)
                    raise
                return key
            except RayActorError:
                if attempt + 1 == ACQUIRE_TRIES:
                    raise
                self._me = ""  # a new actor: introduce this process again
                handle = self._connect(again=True)
        msg = "unreachable"
        raise AssertionError(msg)  # pragma: no cover

    async def _release_remote(self, lease: _SharedLease) -> None:
        # waited for, so that when a call returns its slot is free and its usage counted
        # (what --stats shows after a run is exact), at the cost of a round trip per call
        ref = self._connect().release.remote(
            lease._key, lease._usage, lease._failed, lease._down
        )
        try:
            await ref
        except RayActorError:
            pass  # the dispatch actor is gone, and the slot with it


class DispatchHost:
    """The Ray actor that holds one endpoint's :class:`Dispatcher` for every process.

    Built from the client's pickled settings (an in-process client of its own, whose
    dispatcher also probes replicas that are down). Its methods are called by
    :class:`SharedDispatcher`; see the module docstring.

    Args:
        settings: the client's settings (``OpenAIClient(**settings)``).
        record: start recording the dispatcher's timeline (for a trace).
    """

    def __init__(self, settings: dict[str, Any], record: bool = False) -> None:
        from alto.operators.llm.openai import OpenAIClient

        self.client = OpenAIClient(**settings)
        self.dispatcher = self.client.dispatcher
        self.dispatcher.record(record)
        self.leases: dict[Key, Lease] = {}
        self.waiting: dict[Key, anyio.CancelScope] = {}
        self.abandoned: OrderedDict[Key, None] = OrderedDict()
        self.holders: dict[str, Any] = {}  # worker id -> its actor's handle
        self.sweeper: asyncio.Task[None] | None = None

    @ray.method(enable_task_events=False)
    async def hello(self, worker: str, actor: Any) -> None:
        """A process that will take leases: its worker id, and its actor (None: a task)."""
        if actor is not None:
            self.holders[worker] = actor
            if self.sweeper is None:
                self.sweeper = asyncio.get_running_loop().create_task(self._sweep())

    @ray.method(enable_task_events=False)
    async def acquire(
        self, key: Key, prefix: str, call: CallInfo | None
    ) -> tuple[int, str, int | None]:
        """Wait for admission with the caller's lineage.

        Returns the lease's replica, target and priority.
        """
        if key in self.abandoned:  # the caller gave up before this arrived
            del self.abandoned[key]
            return -1, "", None
        lease = self.dispatcher.lease(prefix)
        scope = self.waiting[key] = anyio.CancelScope()
        try:
            with scope, within_call(call):
                await lease.__aenter__()
        finally:
            del self.waiting[key]
        if scope.cancelled_caught:  # abandoned while it waited: it left the queue
            return -1, "", None
        self.leases[key] = lease
        return lease.replica, lease.target, lease.priority

    @ray.method(enable_task_events=False)
    async def release(
        self, key: Key, usage: tuple[int, int, int] | None, failed: bool, down: bool
    ) -> None:
        """The call of lease ``key`` ended: its usage (if it succeeded) or its failure."""
        lease = self.leases.pop(key, None)
        if lease is None:  # abandoned, or taken before this actor restarted
            return
        if usage is not None:
            lease.done(prompt_tokens=usage[0], cached_tokens=usage[1], output_tokens=usage[2])
        if failed:
            lease.failed(down)
        await lease.__aexit__(None, None, None)

    @ray.method(enable_task_events=False)
    async def abandon(self, key: Key) -> None:
        """The caller stopped waiting for lease ``key`` (cancelled): free or unqueue it."""
        scope = self.waiting.get(key)
        if scope is not None:
            scope.cancel()
            return
        lease = self.leases.pop(key, None)
        if lease is not None:
            await lease.__aexit__(None, None, None)
            return
        self.abandoned[key] = None
        if len(self.abandoned) > 4096:
            self.abandoned.popitem(last=False)

    async def stats(self) -> DispatchStats:
        """The shared dispatcher's snapshot."""
        return self.dispatcher.stats()

    async def record(self, on: bool) -> None:
        """Start (or stop) recording the shared dispatcher's samples."""
        self.dispatcher.record(on)

    async def set_target(self, replica: int, target: str) -> None:
        """Change one replica's label in the shared dispatcher."""
        self.dispatcher.set_target(replica, target)

    async def forget(self, run: str, root: int) -> None:
        """Drop what the shared dispatcher remembers of a root: it has its outcome."""
        self.dispatcher.forget(run, root)

    async def _sweep(self) -> None:
        """Every ``SWEEP_S`` seconds while leases are held, free the leases of lost actors.

        An actor is lost when it died or was restarted (in a new worker process) since it
        took them.
        """
        while True:
            await asyncio.sleep(SWEEP_S)
            held = {worker for worker, _ in self.leases}
            checked = [(w, self.holders[w]) for w in held if w in self.holders]
            if not checked:
                continue
            alive = await asyncio.gather(*(self._alive(w, a) for w, a in checked))
            dead = {w for (w, _), ok in zip(checked, alive) if not ok}
            for worker in dead:
                self.holders.pop(worker, None)
            for key in [(w, n) for w, n in self.leases if w in dead]:
                await self.leases.pop(key).__aexit__(None, None, None)

    async def _alive(self, worker: str, actor: Any) -> bool:
        try:
            return bool(await actor.__ray_call__.remote(_worker_id) == worker)
        except RayActorError:
            return False


__all__ = [
    "RAY_SHARING",
    "DispatchHost",
    "NAMESPACE",
    "RaySharing",
    "SharedDispatcher",
    "actor_name",
    "adopt",
    "in_worker",
    "shared_stats",
    "shipping",
]
