"""What one app's benchmark calls: its operators, the LLM servers it starts, and the one cap.

:func:`open_bench_operators` opens, once per app, the operators every system calls, the
LLM deployment (the serving-timing emulator, llama.cpp's servers, or a server at
``--llm-url``) and the LLM clients of the systems that hold one of their own;
:func:`fairness` says what concurrency each system gets.

One cap for every system: in every run, all LLM calls of the system under test go through
one client-side limit of ``llm_cap`` concurrent calls. For the LangGraph versions and the
asyncio reference it is a semaphore in the recording wrapper, shared by the whole run; for
Alto and every control holding a client of its own (:mod:`alto.bench.controls`), when the
LLM is an OpenAI-compatible server (emulated or not), it is the dispatcher of that client,
whose per-replica limits sum to at most ``llm_cap`` (see :mod:`alto.bench.endpoints`; with
``--alto-endpoint replicas`` Alto's client is given the emulated replicas' URLs). The
systems' own knobs are lifted above the cap: Alto's LLM stages get ``llm_cap`` replicas
each, LangGraph's per-invocation ``max_concurrency`` is
:data:`LANGGRAPH_LIFTED`, the asyncio reference has no limit of its own. So no system gets
more LLM concurrency than another.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from alto.bench.controls import client_plans
from alto.bench.emulated import EmulatorCounters
from alto.bench.endpoints import ClientPlan, open_client
from alto.bench.settings import CAP_PER_REPLICA, DEPLOYMENTS, Settings
from alto.bench.systems import ALTO, SYSTEMS

LANGGRAPH_LIFTED = 1024
"""LangGraph's ``max_concurrency`` per invocation, lifted above the shared cap (it is per
graph invocation, so any lower value would be a second, different cap)."""
_PROBE = 7919  # an LLM concurrency no app would choose: finds the stages sized by it


def llm_stages(app: ModuleType) -> int:
    """How many of the app's Alto stages are sized by the LLM's concurrency (call the LLM)."""
    from alto.operators.embedding import HashEmbedder
    from alto.testing import FakeLLM
    from examples.common import Operators

    if "llm" not in app.NEEDS:
        return 0
    probe = Operators(llm=FakeLLM(max_concurrency=_PROBE), embedder=HashEmbedder())
    plan = app.build(probe).plan
    return sum(1 for node in plan.nodes if node.spec.options.replicas == _PROBE)


def fairness(
    app: ModuleType, ops: Any, cap: int | None, plans: dict[str, ClientPlan] | None = None
) -> dict[str, Any]:
    """The concurrency knobs every system gets (see the module docstring).

    ``plans``: per system holding a client of its own (Alto, the controls), how that client
    was made (:class:`~alto.bench.endpoints.ClientPlan`); every other system calls the
    shared client behind one semaphore of ``cap`` permits.
    """
    stages = llm_stages(app)
    plans = plans or {}
    semaphore = (
        f"one semaphore of {cap} permits per run in the recording LLM wrapper, shared by "
        "all of the system's LLM calls (the same code for every system that uses it), in "
        "front of one client on the balancer's URL"
    )
    enforcement = {system: semaphore for system in SYSTEMS}
    enforcement.update({system: plan.describe() for system, plan in plans.items()})
    alto = plans.get(ALTO)
    return {
        "llm_cap": cap if stages else None,
        "llm_cap_enforced_by": semaphore if stages else None,
        "llm_cap_enforcement": enforcement if stages else None,
        "alto_client": alto.as_dict() if alto is not None and stages else None,
        "clients": {s: p.as_dict() for s, p in plans.items()} if stages else None,
        "alto_llm_stages": stages,
        "alto_replicas_per_llm_stage": ops.llm_replicas if stages else None,
        "langgraph_max_concurrency": LANGGRAPH_LIFTED,
        "asyncio_reference_limit": "none of its own",
        "alto_root_concurrency": "set by the load driver (no limit inside the run)",
    }


def default_cap(settings: Settings, ops: Any, stages: int) -> int | None:
    """The shared cap.

    ``--llm-concurrency``, else 16 per emulated replica, else every slot of llama.cpp's own
    servers (no system has more calls in flight than they decode at once), else what the
    LLM's own client serves (its replicas per stage times the app's LLM stages).
    """
    if settings.llm_concurrency:
        return settings.llm_concurrency
    if settings.llm == "emulated":
        return CAP_PER_REPLICA * DEPLOYMENTS[settings.deployment][0]
    if settings.llm == "llama-server-native":
        return settings.native_cap()
    if ops.llm is None or not stages:
        return None
    return int(ops.llm_replicas * stages)


@dataclass
class BenchOperators:
    """What one app's benchmark calls.

    Attributes:
        ops: the operators every system calls (its LLM, behind the shared semaphore, by
            every system without a client of its own).
        emulator: the emulator's timing model (None unless the LLM is emulated).
        server: the running emulator (None unless the LLM is emulated).
        clients: per system holding an LLM client of its own (Alto, the controls), that
            client, whose dispatcher enforces the cap (empty: every system calls
            ``ops.llm`` behind the shared semaphore).
        plans: how each of those clients was made (:class:`~alto.bench.endpoints.ClientPlan`).
        counters: the servers' prompt and cached-token counters, read around each run
            (:class:`~alto.bench.emulated.EmulatorCounters`,
            :class:`~alto.bench.llama_servers.LlamaServerCounters`,
            :class:`~alto.bench.llama_native.NativeServerCounters`;
            None when the servers keep none).
        deployment: the servers and the balancer, for ``results.json`` (None: one server
            that the bench did not start).
        cap: the one cap on concurrent LLM calls (:func:`default_cap`, taken once, before
            the LLM client's own concurrency is lifted to it).
    """

    ops: Any
    cap: int | None = None
    emulator: Any = None
    server: Any = None
    clients: dict[str, Any] = field(default_factory=dict)
    plans: dict[str, ClientPlan] = field(default_factory=dict)
    counters: Any = None
    deployment: dict[str, Any] | None = None


@contextlib.asynccontextmanager
async def open_bench_operators(
    app: ModuleType, settings: Settings, systems: Sequence[str] | None = None
) -> AsyncIterator[BenchOperators]:
    """The app's operators, the emulator's timing model and server, and the systems' clients.

    The embedder and retriever come from ``examples.common.open_operators``. With
    ``--llm emulated`` the serving-timing emulator is started here, once for the app, as
    ``settings.deployment``, in a process of its own by default (so the systems' own CPU
    work cannot slow its clock), and the LLM is an :class:`OpenAIClient` on its balancer
    (``/v1``) with a connection pool larger than the cap (the client never becomes the
    bottleneck). With ``--llm llama-server`` or ``llama-server-native`` the servers are
    started here too (:func:`_llama_server_operators`, :func:`_native_operators`). With an
    OpenAI-compatible LLM (emulated, either llama-server or ``--llm openai``)
    every system among ``systems`` (default ``settings.systems``) that holds a client of its
    own (Alto, the controls: :func:`~alto.bench.controls.client_plans`) gets one, opened here
    once for the app, on the replica URLs or the balancer's; the dispatcher's ``priority``
    is sent only to an emulator started with priority scheduling.
    """
    from examples.common import open_operators

    needs = set(app.NEEDS)
    emulated = settings.llm == "emulated" and "llm" in needs
    stages = llm_stages(app)
    chosen = list(settings.systems if systems is None else systems)
    if settings.llm == "llama-server" and "llm" in needs:
        async with _llama_server_operators(app, settings, stages, chosen) as bench:
            yield bench
        return
    if settings.llm == "llama-server-native" and "llm" in needs:
        async with _native_operators(app, settings, stages, chosen) as bench:
            yield bench
        return
    async with open_operators(
        needs - {"llm"} if emulated else needs,
        llm=settings.llm,  # type: ignore[arg-type]
        llm_url=settings.llm_url,
        llm_model=settings.llm_model,
        embedder=settings.embedder,  # type: ignore[arg-type]
    ) as ops:
        if not emulated:
            cap = default_cap(settings, ops, stages)
            if cap and ops.llm is not None:
                ops.llm.max_concurrency = cap
            if settings.llm != "openai" or not cap or not stages:
                yield BenchOperators(ops, cap=cap)
                return
            url = settings.llm_url or ""
            plans = _client_plans(settings, chosen, url, [url], cap, priority=False)
            async with contextlib.AsyncExitStack() as stack:
                name = settings.llm_model or "default"
                yield await _with_clients(stack, ops, cap, plans, name)
            return
        from alto.bench.emulator import EmulatorConfig, EmulatorServer
        from alto.operators.llm.openai import OpenAIClient

        model = (
            EmulatorConfig.model_validate_json(settings.emulator_config)
            if settings.emulator_config
            else EmulatorConfig()
        )
        if settings.fanout == "varied" and not settings.emulator_config:
            model = model.model_copy(update={"fanout": "varied"})
        replicas, balancer = DEPLOYMENTS[settings.deployment]
        cap = default_cap(settings, ops, stages) or CAP_PER_REPLICA
        async with EmulatorServer(
            model,
            mode=settings.emulator_mode,  # type: ignore[arg-type]
            replicas=replicas,
            balancer=balancer,  # type: ignore[arg-type]
            scheduling_policy="priority",  # Alto's client sends each call's priority
        ) as server:
            client = OpenAIClient(
                server.base_url,
                "emulated",
                max_concurrency=cap,
            )
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(client)
                ops.llm = client
                ops.labels["llm"] = (
                    f"serving-timing emulator (timing emulation, not a model; "
                    f"{settings.emulator_mode} mode; {replicas} replica(s) behind {balancer})"
                )
                plans = {}
                if stages:
                    # the emulator orders waiting requests by ``priority`` only when started
                    # with that scheduling policy (as vLLM); otherwise none is sent
                    priority = server.scheduling_policy == "priority"
                    plans = _client_plans(
                        settings,
                        chosen,
                        server.base_url,
                        server.replica_urls,
                        cap,
                        priority=priority,
                    )
                deployment = _deployment("emulated", settings, balancer)
                yield await _with_clients(
                    stack, ops, cap, plans, "emulated", emulator=model, server=server,
                    counters=EmulatorCounters(server), deployment=deployment,
                )  # fmt: skip


@contextlib.asynccontextmanager
async def _llama_server_operators(
    app: ModuleType, settings: Settings, stages: int, systems: Sequence[str]
) -> AsyncIterator[BenchOperators]:
    """``--llm llama-server``: one ``llama_cpp.server`` per replica of the deployment.

    Each has one CPU thread; they sit behind the balancer proxy when there are several.
    Every system without a client of its own calls the proxy, and each with one as
    :func:`_client_plans` says (no ``priority``: llama.cpp's server has none).
    """
    from alto.bench.llama_servers import LlamaServerCounters, LlamaServers
    from alto.bench.proxy import BalancerProxy
    from alto.operators.llm.openai import OpenAIClient
    from examples.common import open_operators

    replicas, balancer = DEPLOYMENTS[settings.deployment]
    model = "default"  # a llama_cpp.server with one model serves it under any name
    async with contextlib.AsyncExitStack() as stack:
        servers = await stack.enter_async_context(
            LlamaServers(replicas, model_path=settings.llm_model)
        )
        base_url = servers.urls[0]
        if replicas > 1:
            proxy = BalancerProxy(servers.urls, balancer)  # type: ignore[arg-type]
            base_url = (await stack.enter_async_context(proxy)).base_url
        ops = await stack.enter_async_context(
            open_operators(
                set(app.NEEDS) - {"llm"},
                embedder=settings.embedder,  # type: ignore[arg-type]
            )
        )
        ops.llm = await stack.enter_async_context(OpenAIClient(base_url, model))
        cap = default_cap(settings, ops, stages)
        assert cap is not None  # the app calls the LLM
        ops.llm.max_concurrency = cap
        where = f"{replicas} server(s)" + (f" behind {balancer}" if replicas > 1 else "")
        ops.labels["llm"] = (
            f"SmolLM2-135M on llama_cpp.server, one CPU thread each ({where})"
            if settings.llm_model is None
            else f"{settings.llm_model} on llama_cpp.server, one CPU thread each ({where})"
        )
        plans = _client_plans(settings, systems, base_url, servers.urls, cap, priority=False)
        counters = LlamaServerCounters(servers)
        deployment = _deployment(
            "llama_cpp.server", settings, balancer, threads_per_server=servers.threads
        )
        yield await _with_clients(
            stack, ops, cap, plans, model, counters=counters, deployment=deployment
        )


@contextlib.asynccontextmanager
async def _native_operators(
    app: ModuleType, settings: Settings, stages: int, systems: Sequence[str]
) -> AsyncIterator[BenchOperators]:
    """``--llm llama-server-native``: llama.cpp's own ``llama-server``.

    One per replica of the deployment, each of ``llm_slots`` slots and ``llm_threads``
    threads, behind the balancer proxy when there are several (``single``: one server,
    called directly; ``rr2`` and ``prefix2``: two behind round-robin or prefix-aware;
    ``rr4``, ``ll4``, ``prefix4``: four). Every system without a client of its own calls the
    proxy (or the one server); each with one as :func:`_client_plans` says: Alto's on the
    servers' own URLs, its limit per server the slot count the server gives (``/props``)
    where that fits the cap. No ``priority`` is sent: llama.cpp's server has none.

    The servers keep prompts in their slots only (``erasable``), and the counters
    (:class:`~alto.bench.llama_native.NativeServerCounters`) erase every slot before each
    run and read each server's ``/metrics`` around it.
    """
    from alto.bench.llama_native import NativeLlamaServer, NativeServerCounters, version
    from alto.bench.proxy import BalancerProxy
    from alto.operators.llm.openai import OpenAIClient
    from examples.common import open_operators

    replicas, balancer = DEPLOYMENTS[settings.deployment]
    slots, threads = settings.llm_slots, settings.llm_threads
    assert slots is not None and threads is not None  # set by Settings for this LLM
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                NativeLlamaServer(
                    slots=slots, threads=threads, model_path=settings.llm_model, erasable=True
                )
            )
            for _ in range(replicas)
        ]
        urls = [server.base_url for server in servers]
        model = servers[0].alias
        base_url = urls[0]
        if replicas > 1:
            proxy = BalancerProxy(urls, balancer)  # type: ignore[arg-type]
            base_url = (await stack.enter_async_context(proxy)).base_url
        ops = await stack.enter_async_context(
            open_operators(
                set(app.NEEDS) - {"llm"},
                embedder=settings.embedder,  # type: ignore[arg-type]
            )
        )
        cap = default_cap(settings, ops, stages)
        assert cap is not None  # every slot of the deployment, or --llm-concurrency
        ops.llm = await stack.enter_async_context(
            OpenAIClient(base_url, model, max_concurrency=cap)
        )
        where = (
            f"{replicas} servers behind {balancer}" if replicas > 1 else "one server"
        ) + f", {slots} slot(s) and {threads} thread(s) each"
        what = "SmolLM2-135M" if settings.llm_model is None else settings.llm_model
        ops.labels["llm"] = f"{what} on llama.cpp's llama-server ({where})"
        plans = _client_plans(
            settings, systems, base_url, urls, cap, priority=False, server_limit=slots
        )
        counters = NativeServerCounters(servers)
        deployment = _deployment(
            "llama-server",
            settings,
            balancer if replicas > 1 else None,
            slots_per_server=slots,
            threads_per_server=threads,
            ctx_per_slot=servers[0].ctx_per_slot,
            host_prompt_cache=False,
            version=version(servers[0].binary),
        )
        yield await _with_clients(
            stack, ops, cap, plans, model, counters=counters, deployment=deployment
        )


async def _with_clients(
    stack: contextlib.AsyncExitStack,
    ops: Any,
    cap: int,
    plans: dict[str, ClientPlan],
    model: str,
    **fields: Any,
) -> BenchOperators:
    """The bench's operators, with the LLM client of each system in ``plans`` opened.

    Each client is opened on ``stack`` (closed with it), with the shared cap as its
    ``max_concurrency``; ``fields`` are the other :class:`BenchOperators` attributes.
    """
    clients = {
        system: await stack.enter_async_context(open_client(plan, model, max_concurrency=cap))
        for system, plan in plans.items()
    }
    return BenchOperators(ops, cap, clients=clients, plans=plans, **fields)


def _deployment(
    servers: str, settings: Settings, balancer: str | None, **more: Any
) -> dict[str, Any]:
    """``BenchOperators.deployment``: the servers, the deployment, its replicas, their balancer.

    ``balancer`` is ``None`` when none is in front; ``more`` says more about the servers.
    """
    replicas = DEPLOYMENTS[settings.deployment][0]
    return {
        "servers": servers,
        "deployment": settings.deployment,
        "replicas": replicas,
        "balancer": balancer,
        **more,
    }


def _client_plans(
    settings: Settings,
    systems: Sequence[str],
    base_url: str,
    replicas: Sequence[str],
    cap: int,
    *,
    priority: bool,
    server_limit: int | None = None,
) -> dict[str, ClientPlan]:
    """The clients of the client-holding systems among ``systems``, Alto's knobs as given."""
    return client_plans(
        systems,
        base_url=base_url,
        replicas=replicas,
        cap=cap,
        priority=priority,
        endpoint=settings.alto_endpoint,
        max_inflight=settings.max_inflight,
        order=settings.order,
        route=settings.route,
        server_limit=server_limit,
    )
