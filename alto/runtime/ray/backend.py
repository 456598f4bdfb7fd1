"""The distributed runtime: the same plan, each stage replica a Ray async actor.

``await flow.run(inputs, backend="ray")`` (or ``flow.stream(...)``) runs the plan on a
Ray cluster: the one at ``address=`` (or ``RAY_ADDRESS``), or a local one it starts for
the run. The driver keeps all state of the run: the engine (:mod:`alto.runtime.engine`:
run state, channels, links) with :class:`RayExecutor` as its executor, which starts the
actors and runs one driver per stage (an assembler and the stage's remote calls,
:mod:`alto.runtime.ray.stage`); the actors (:mod:`alto.runtime.ray.actor`) only run
assembled calls. Options: ``address``, ``init``, ``call_items``, ``inflight``,
``restarts``, ``start_timeout``.

The design, the options, resources, per-actor state, failures and cancellation are
described in ``docs/ray.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any, AsyncIterable, Callable, Iterable, Iterator, Mapping

import anyio
import ray
import sniffio

from alto.compiler.plan import Node, Plan
from alto.errors import ActorLostError, StateError, UsageError
from alto.result import Result
from alto.runtime.engine import Engine, StagePorts, StageTask, StageWiring
from alto.runtime.metrics import RunStats
from alto.runtime.observe import registered
from alto.runtime.ray.pool import host_class, kill, pool, poolable, release_idle
from alto.runtime.ray.shared_dispatcher import RAY_SHARING  # noqa: F401 (registers it)
from alto.runtime.ray.stage import UP, ActorReplica, DriverOptions, StageDriver
from alto.runtime.records import CHUNK

_NATIVE = ("num_cpus", "num_gpus", "memory", "accelerator_type")

_RAY_OPTIONS = ("call_items", "inflight", "restarts", "start_timeout")

CANCEL_GRACE_S = 2.0
"""Seconds the stage calls of a cancelled run may take to clean up before their actors die."""


def actor_options(node: Node) -> dict[str, Any]:
    """Ray actor options of one replica of ``node``: its resources, and restarts."""
    resources = dict(node.spec.options.resources)
    options: dict[str, Any] = {
        "max_restarts": -1,  # always restart; fragments that crash it are limited per fragment
        "max_task_retries": 0,  # the driver replays calls itself, knowing what was delivered
        "num_cpus": 0,
    }
    for key in _NATIVE:
        if key in resources:
            options[key] = resources.pop(key)
    if resources:
        options["resources"] = resources
    return options


_TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class _QuietTokenAuthDefault(logging.Filter):
    """Drops Ray's notice that it turned token authentication on for a new local cluster.

    Ray 2.59+ enables token authentication for every cluster ``ray.init()`` starts and logs a
    WARNING saying so on each start, unless ``RAY_AUTH_MODE`` is set explicitly. Setting it
    here would come too late (Ray reads its config when it is imported), so the private
    cluster Alto starts keeps Ray's default, authentication on, without the notice. Nothing
    else from that logger is dropped: a warning that authentication is *off* still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


class _Connection:
    """Connects this process to Ray for the runs that need it; disconnects after the last.

    A Ray instance initialised by someone else is used and left alone.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.owned = False

    def acquire(self, address: str | None, init: Mapping[str, Any] | None) -> None:
        with self.lock:
            if self.users == 0 and not ray.is_initialized():
                address = address or os.environ.get("RAY_ADDRESS") or None
                kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
                quiet = _QuietTokenAuthDefault()
                auth_log = logging.getLogger(_TOKEN_AUTH_LOGGER)
                if address is None:
                    kwargs.update(address="local", include_dashboard=False)
                    kwargs.update(init or {})
                    auth_log.addFilter(quiet)  # a private cluster: see _QuietTokenAuthDefault
                else:
                    kwargs.update(address=address)
                try:
                    ray.init(**kwargs)
                finally:
                    auth_log.removeFilter(quiet)
                self.owned = True
            self.users += 1

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0 and self.owned:
                self.owned = False
                pool.clear()
                ray.shutdown()


_connection = _Connection()


@contextlib.contextmanager
def connected(
    address: str | None = None, *, init: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Keep this process connected to Ray for the block.

    The Ray runs inside it share the connection, and what lives as long as the connection
    (the dispatcher actors of model clients, the idle actor pool) outlives each run until the
    block ends.

    Connects the way a run does: to the cluster at ``address`` (else ``RAY_ADDRESS``),
    or to a local one started with ``init`` (more ``ray.init`` keyword arguments) when
    neither names one. A Ray instance this process had initialised before is used and
    left alone; one started here is shut down when the last block or run using it ends.
    Blocks nest, and may be entered from several threads.

    Example:
        Read the shared figures of a model client after its Ray run::

            with connected():
                await flow.run(inputs, backend="ray")
                print(client.dispatch_stats())
    """
    _connection.acquire(address, init)
    try:
        yield
    finally:
        _connection.release()


class RayExecutor:
    """Runs every stage's calls on Ray actors (an :class:`~alto.runtime.engine.Executor`).

    See the module docstring.

    Args:
        call_items, inflight, restarts, start_timeout: the Ray options of the run
            (:class:`~alto.runtime.ray.stage.DriverOptions`).
    """

    def __init__(
        self,
        *,
        call_items: int = CHUNK,
        inflight: int = 2,
        restarts: int = 3,
        start_timeout: float = 120.0,
    ) -> None:
        self.driver_options = DriverOptions(call_items, inflight, restarts, start_timeout)
        self.start_timeout = start_timeout
        self.finished: list[int] = []  # roots with an outcome, in order (actors skip their calls)
        self.forget: set[int] = set()  # of those, roots with calls in flight: stop them
        self.forget_due = anyio.Event()
        self.replicas: dict[str, list[ActorReplica]] = {}
        self.drivers: dict[str, StageDriver] = {}
        self.options: dict[str, dict[str, Any]] = {}
        self.engine: Engine | None = None

    def reporting(
        self, on_result: Callable[[Result[Any]], None]
    ) -> Callable[[Result[Any]], None]:
        """``on_result``, after noting the root finished (its actors skip or stop its calls)."""

        def record(result: Result[Any]) -> None:
            root = result.index
            self.finished.append(root)
            if any(root in r.roots for rs in self.replicas.values() for r in rs):
                self.forget.add(root)
                self.forget_due.set()
            on_result(result)

        return record

    def wiring(self, node: Node) -> StageWiring:
        """One inbox per stage: its driver assembles every call, whole chunks at a time."""
        return StageWiring.driver(node)

    def busy(self, stage: str) -> bool:
        """Whether the driver of ``stage`` holds records or calls, or its actors work."""
        return self.drivers[stage].busy()

    async def start(self, engine: Engine) -> None:
        """Start (or take from the pool) the actors of every stage, and load them."""
        self.engine = engine
        self.options = {node.name: actor_options(node) for node in engine.plan.nodes}
        await self._start_actors(engine)

    def stage_tasks(self, ports: StagePorts) -> list[StageTask]:
        """The stage's driver: it assembles the stage's calls and sends them to its actors."""
        engine = self.engine
        assert engine is not None
        node = ports.node
        driver = StageDriver(
            node,
            self.driver_options,
            engine.run,
            engine.stats,
            self.finished,
            engine.batch_policy(node),
            self.replicas[node.name],
            ports.inboxes[0].clone(),
            ports.outbox,
        )
        self.drivers[node.name] = driver
        return [(f"alto:{node.name}", driver.run)]

    async def beside(self) -> None:
        """Tell the actors which roots finished while they had calls of them.

        See :meth:`_stop_calls`.
        """
        await self._stop_calls()

    async def close(self, clean: bool) -> None:
        """Release the actors (see :meth:`_release_actors`)."""
        await self._release_actors(clean)

    async def _start_actors(self, engine: Engine) -> None:
        failures: list[str] = []

        async def start(node: Node, replica: ActorReplica) -> None:
            try:
                try:
                    await replica.start()
                except Exception:
                    if not replica.pooled:
                        raise
                    # an idle host that died meanwhile: start a fresh one instead
                    kill(replica.handle)
                    replica.handle = host_class().options(**self.options[node.name]).remote()
                    replica.pooled = False
                    await replica.start()
            except Exception as exc:
                failures.append(
                    f"stage {node.name!r} (defined at {node.spec.where}): its Ray actor failed "
                    f"to start: {type(exc).__name__}: {exc}"
                )

        run = engine.run
        traced = run.otel is not None
        dead_letters = run.dead_letters is not None
        for node in engine.plan.nodes:
            replicas = self.replicas[node.name] = []
            for i in range(node.spec.options.replicas):
                handle, pooled = pool.take(self.options[node.name])
                args = (node, i, run.id, engine.trace, dead_letters, traced)
                replicas.append(ActorReplica(i, handle, args, pooled))
        with anyio.move_on_after(self.start_timeout) as scope:
            async with anyio.create_task_group() as tg:
                for node in engine.plan.nodes:
                    for replica in self.replicas[node.name]:
                        tg.start_soon(start, node, replica)
        if scope.cancelled_caught:
            waiting = [
                f"{n.name!r} (resources {dict(n.spec.options.resources) or 'none'})"
                for n in engine.plan.nodes
                if any(r.pid == 0 for r in self.replicas[n.name])
            ]
            msg = (
                f"the Ray actors of stage(s) {', '.join(waiting)} did not start within "
                f"{self.start_timeout:g}s; does the cluster have a node with those resources? "
                f"(cluster: {ray.cluster_resources()})"  # type: ignore[no-untyped-call]
            )
            raise ActorLostError(msg)
        if failures:
            raise ActorLostError("\n".join(failures))

    async def _stop_calls(self) -> None:
        """Tell actors which roots got their outcome while calls of theirs were running.

        The actors stop those calls (the slow ones, as the local runtime does)
        and skip the ones still queued.
        """
        while True:
            await self.forget_due.wait()
            self.forget_due = anyio.Event()
            roots, self.forget = self.forget, set()
            refs = []
            for replicas in self.replicas.values():
                for replica in replicas:
                    mine = [root for root in roots if root in replica.roots]
                    if mine and replica.state is UP:
                        refs.append(replica.handle.forget.remote(mine))
            for ref in refs:
                try:
                    await ref
                except Exception:  # the actor is gone: its driver finds out and recovers
                    pass

    async def _release_actors(self, clean: bool) -> None:
        """After a clean run, keep the hosts that may be kept; kill every other one.

        After a run that was cancelled or failed, the calls still running on
        the actors are stopped first, and given ``CANCEL_GRACE_S`` to clean up.
        """
        if not clean:
            async def stop(replica: ActorReplica) -> None:
                try:
                    await replica.handle.stop.remote(CANCEL_GRACE_S)
                except Exception:
                    pass  # gone already

            with anyio.move_on_after(CANCEL_GRACE_S + 1):
                async with anyio.create_task_group() as tg:
                    for replicas in self.replicas.values():
                        for replica in replicas:
                            if replica.pid:
                                tg.start_soon(stop, replica)
        keep: list[tuple[str, ActorReplica]] = []
        for name, replicas in self.replicas.items():
            for replica in replicas:
                if clean and replica.state is UP and replica.pid and poolable(self.options[name]):
                    keep.append((name, replica))
                else:
                    kill(replica.handle)
        if not keep:
            return

        async def unload(name: str, replica: ActorReplica) -> None:
            try:
                with anyio.fail_after(self.start_timeout):
                    await replica.handle.unload.remote()
            except Exception:
                kill(replica.handle)
            else:
                pool.give_back(self.options[name], replica.handle)

        async with anyio.create_task_group() as tg:
            for name, replica in keep:
                tg.start_soon(unload, name, replica)


async def run_ray(
    plan: Plan,
    inputs: Iterable[Any] | AsyncIterable[Any],
    on_result: Callable[[Result[Any]], None],
    *,
    address: str | None = None,
    init: Mapping[str, Any] | None = None,
    **options: Any,
) -> RunStats:
    """Run ``plan`` over ``inputs`` on Ray; returns the run's statistics.

    Takes the options of :class:`~alto.runtime.engine.Engine` and those listed in the
    module docstring.
    """
    if sniffio.current_async_library() != "asyncio":
        msg = "backend='ray' runs on asyncio; run the flow from an asyncio event loop"
        raise StateError(msg)
    if registered():
        msg = (
            f"call observers are registered (alto.runtime.observe.observing: "
            f"{', '.join(type(o).__name__ for o in registered())}), and they see the stage "
            "calls made in this process, while backend='ray' makes them in its stage actors; "
            "run with backend='local', or start the run outside the observing() block "
            "(OpenTelemetry, otel=..., traces Ray runs too)"
        )
        raise UsageError(msg)
    # ray.init belongs on the main thread (signal handlers); it blocks only when it starts Ray
    with connected(address, init=init):
        ray_options = {k: options.pop(k) for k in _RAY_OPTIONS if k in options}
        executor = RayExecutor(**ray_options)
        engine = Engine(plan, executor.reporting(on_result), executor, **options)
        await engine.execute(inputs)
        return engine.stats


run_ray.cancels_inputs = True  # type: ignore[attr-defined]


__all__ = [
    "ActorLostError", "RayExecutor", "actor_options", "connected", "release_idle", "run_ray",
]
