"""One app's benchmark, in one process: every system on the same inputs, interleaved.

For an app the run goes:

1. **Operators** are opened once (:func:`open_bench_operators`): with ``--llm emulated``
   the serving-timing emulator starts once for the whole app, as the chosen deployment
   (one server, or 4 replicas behind a balancer).
2. Every system (and the asyncio reference) runs one input once, unmeasured: connections,
   model warm-up, compiled graphs, caches.
3. **Bound pass**: inputs alone through the asyncio reference, recorded with causal
   dependencies. Their outputs are the ones every measured run is checked against; the
   first ones' unloaded latency sets the SLO and, with the emulator, their critical path
   and decode tokens give the lower bound and the server's rate ceiling
   (:mod:`alto.bench.bound`).
4. **Measured runs**, interleaved: for each load level (a closed-loop concurrency or a
   Poisson rate), for each repeat, every system once, the order rotating so each system
   takes each position in turn. Before each run the emulator's prefix cache is emptied, so
   every run starts cold and its cached tokens are its own. In an open-loop sweep a system
   whose p95 surely missed the SLO (its whole interval above it) at or past the moderate
   rate is not run at higher rates.
5. **Timelines**: the first input alone through Alto, flat LangGraph and the asyncio
   reference, every operator call recorded, for the Gantt plot and the Chrome trace.

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

import asyncio
import contextlib
import importlib
import math
import os
import random
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

from alto.bench import driver
from alto.bench.bound import critical_path, peak_decode_tokens_per_s
from alto.bench.controls import anonymous_calls, client_plans, is_control
from alto.bench.endpoints import (
    ClientPlan,
    DispatchWatch,
    open_client,
    replica_deltas,
    semaphore_figures,
)
from alto.bench.record import Recorder, recording_operators, tracking_dependencies
from alto.bench.stats import finite, percentile, poisson_schedule, rotation, throughput
from alto.bench.systems import (
    ALTO,
    REFERENCE,
    SYSTEMS,
    langgraph_unavailable,
    load_reference,
    make_server,
    now,
)

TIMELINE_SYSTEMS = (ALTO, "langgraph-flat", REFERENCE)
CAP_PER_REPLICA = 16
"""Default client-side cap per emulated replica (``--llm-concurrency``): the emulated vLLM
reaches its peak throughput near 16 sequences (TPOT 10.9 ms there, 46.9 ms at 64)."""
LANGGRAPH_LIFTED = 1024
"""LangGraph's ``max_concurrency`` per invocation, lifted above the shared cap (it is per
graph invocation, so any lower value would be a second, different cap)."""
DEPLOYMENTS: dict[str, tuple[int, str]] = {
    "single": (1, "round-robin"),
    "rr2": (2, "round-robin"),
    "prefix2": (2, "prefix-aware"),
    "rr4": (4, "round-robin"),
    "ll4": (4, "least-loaded"),
    "prefix4": (4, "prefix-aware"),
}
"""``--deployment``: replicas (emulated, or llama.cpp servers) and the balancer in front."""
RATE_FRACTIONS = (0.25, 0.4, 0.55, 0.7, 0.85, 1.0)
"""The automatic open-loop sweep, as fractions of the app's rate ceiling on the deployment
(LLM apps), the second being the *moderate* rate every system runs."""
RATE_MULTIPLES = (0.1, 0.25, 0.5, 1.0)
"""The automatic sweep of an app without LLM calls: multiples of 1 / its unloaded p50 (its
work is CPU-bound Python, so one input at a time is about all a process can serve)."""
BOUND_INPUTS = 16
"""Inputs timed alone in the bound pass (the rest get their expected output unmeasured)."""
_PROBE = 7919  # an LLM concurrency no app would choose: finds the stages sized by it


@dataclass
class Settings:
    """What ``alto bench`` was asked to do (recorded verbatim in ``results.json``)."""

    apps: list[str]
    llm: str = "emulated"
    llm_url: str | None = None
    llm_model: str | None = None
    embedder: str = "minilm"
    queries: int | None = None  # distinct inputs per app (None: as many as the load needs)
    load: str = "closed"  # "closed", "open" (the fixed-rate sweep) or "search"
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    closed_inputs: int = 100  # submissions per closed-loop level
    rates: list[float] | None = None  # open loop, inputs/s (None: the automatic sweep)
    open_inputs: int = 24  # submissions per open-loop rate
    slo_factor: float = 3.0  # the SLO: this times the asyncio reference's unloaded p50
    slo_s: float | None = None  # or a fixed SLO in seconds
    sweep_stop: bool = True  # an open sweep stops a system past its first missed SLO
    repeats: int = 1
    seed: int = 0
    # the rate search (alto.bench.search): measured arrivals per trial round, warm-up
    # arrivals per run, rounds per trial, bracketing factor, bisection stop width, start
    search_arrivals: int = 60
    search_warmup: int = 4
    search_rounds: int = 2
    search_factor: float = 1.5
    search_width: float = 0.25
    search_start: float | None = None  # None: half the rate ceiling (see plan_levels)
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))
    timeout_s: float = 600.0
    docs_per_corpus: int = 16
    config: str | None = None  # a JSON file of the app's Config (one app only)
    llm_concurrency: int | None = None  # the shared client-side cap (None: the default)
    emulator_config: str | None = None  # EmulatorConfig as JSON (None: its defaults)
    emulator_mode: str = "process"
    deployment: str = "single"
    fanout: str = "varied"  # "varied": per-input fan-outs; "uniform": the old fixed ones
    # Alto's own client (alto.bench.endpoints); None: the client's default
    alto_endpoint: str | None = None  # "replicas" or "balancer" (None: by the deployment)
    max_inflight: str | None = None  # per replica: a number or "auto"
    order: str | None = None
    route: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def inputs_for(self, available: int) -> int:
        """Distinct inputs of an app: ``queries``, or as many as one level submits."""
        wanted = self.queries or (self.closed_inputs if self.load == "closed" else self.open_inputs)
        return max(1, min(wanted, available))


def load_app(name: str) -> ModuleType:
    from alto.apps import load_app as load

    return load(name)


def bench_inputs(
    app: ModuleType, n: int, docs_per_corpus: int, *, fanout: str = "uniform", seed: int = 0
) -> list[Any]:
    """``n`` root inputs of ``app``; ingest's are corpora of ``docs_per_corpus`` documents
    (with ``fanout="varied"``, of 1 to twice that many, drawn per corpus)."""
    if app.NAME != "ingest":
        return list(app.load_inputs(n))
    from examples import data
    from examples.ingest import Corpus, Doc

    if fanout == "varied":
        rng = random.Random(f"alto-bench-corpus-sizes:{seed}")
        sizes = [rng.randint(1, 2 * docs_per_corpus) for _ in range(n)]
    else:
        sizes = [docs_per_corpus] * n
    docs = data.ingest_documents(sum(sizes))
    out, start = [], 0
    for i, size in enumerate(sizes):
        chunk = docs[start : start + size]
        start += size
        out.append(Corpus(f"ingest-{i}", tuple(Doc(d.id, d.text) for d in chunk)))
    return out


def app_config(app: ModuleType, settings: Settings) -> Any:
    """The app's ``Config``: from ``--config``, else with the varied fan-out's settings
    (``steps.VARIED_FANOUT``) under ``fanout="varied"``, else None (its defaults)."""
    if settings.config:
        return read_config(app, settings.config)
    if settings.fanout == "varied":
        steps = importlib.import_module(f"{app.__name__}.steps")
        return app.Config(**getattr(steps, "VARIED_FANOUT", {}))
    return None


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
    """The shared cap: ``--llm-concurrency``, else 16 per emulated replica, else what the
    LLM's own client serves (its replicas per stage times the app's LLM stages)."""
    if settings.llm_concurrency:
        return settings.llm_concurrency
    if settings.llm == "emulated":
        return CAP_PER_REPLICA * DEPLOYMENTS[settings.deployment][0]
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
            (:class:`EmulatorCounters`, :class:`~alto.bench.llama_servers.LlamaServerCounters`;
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
    bottleneck). With an OpenAI-compatible LLM (emulated, llama-server or ``--llm openai``)
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
                clients = {
                    system: await stack.enter_async_context(
                        open_client(plan, settings.llm_model or "default", max_concurrency=cap)
                    )
                    for system, plan in plans.items()
                }
                yield BenchOperators(ops, cap=cap, clients=clients, plans=plans)
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
                max_connections=max(64, 2 * cap),
                max_concurrency=cap,
            )
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(client)
                ops.llm = client
                ops.labels["llm"] = (
                    f"serving-timing emulator (timing emulation, not a model; "
                    f"{settings.emulator_mode} mode; {replicas} replica(s) behind {balancer})"
                )
                bench = BenchOperators(
                    ops,
                    cap,
                    model,
                    server,
                    counters=EmulatorCounters(server),
                    deployment={
                        "servers": "emulated",
                        "deployment": settings.deployment,
                        "replicas": replicas,
                        "balancer": balancer,
                    },
                )
                if stages:
                    # the emulator orders waiting requests by ``priority`` only when started
                    # with that scheduling policy (as vLLM); otherwise none is sent
                    priority = server.scheduling_policy == "priority"
                    bench.plans = _client_plans(
                        settings,
                        chosen,
                        server.base_url,
                        server.replica_urls,
                        cap,
                        priority=priority,
                    )
                    for system, plan in bench.plans.items():
                        bench.clients[system] = await stack.enter_async_context(
                            open_client(
                                plan,
                                "emulated",
                                max_connections=max(64, 2 * cap),
                                max_concurrency=cap,
                            )
                        )
                yield bench


@contextlib.asynccontextmanager
async def _llama_server_operators(
    app: ModuleType, settings: Settings, stages: int, systems: Sequence[str]
) -> AsyncIterator[BenchOperators]:
    """``--llm llama-server``: one ``llama_cpp.server`` per replica of the deployment (one CPU
    thread each), behind the balancer proxy when there are several; every system without a
    client of its own calls the proxy, and each with one as :func:`_client_plans` says (no
    ``priority``: llama.cpp's server has none)."""
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
        clients = {
            system: await stack.enter_async_context(open_client(plan, model, max_concurrency=cap))
            for system, plan in plans.items()
        }
        yield BenchOperators(
            ops,
            cap,
            clients=clients,
            plans=plans,
            counters=LlamaServerCounters(servers),
            deployment={
                "servers": "llama_cpp.server",
                "deployment": settings.deployment,
                "replicas": replicas,
                "balancer": balancer,
                "threads_per_server": servers.threads,
            },
        )


def _client_plans(
    settings: Settings,
    systems: Sequence[str],
    base_url: str,
    replicas: Sequence[str],
    cap: int,
    *,
    priority: bool,
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
    )


async def probe_emulator(llm: Any, model: Any) -> dict[str, Any]:
    """Check the bound's timing model against the running emulator.

    One request goes straight to the server; the modeled time to first token it reports
    must equal what ``model`` predicts for the same prompt with one sequence running.
    """
    import httpx

    from alto.bench.bound import prompt_tokens

    content = "Timing probe. How long does the first token take?"
    body = {
        "model": "emulated",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 2,
    }
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{llm.base_url}/chat/completions", json=body)
        response.raise_for_status()
        reported = response.json().get("emulator", {})
    expected = model.ttft(prompt_tokens(len(content), model.chars_per_token), 1)
    got = reported.get("modeled_ttft_s")
    return {
        "expected_ttft_s": expected,
        "reported_ttft_s": got,
        "agrees": got is not None and math.isclose(got, expected, rel_tol=1e-9),
    }


class EmulatorCounters:
    """The emulator's prompt and cached-token counters, read around each run, and the
    balancer's decisions per replica by kind (``decisions``, as of the last :meth:`read`)."""

    def __init__(self, server: Any) -> None:
        self.root = server.base_url.removesuffix("/v1")
        self.decisions: list[dict[str, int]] = []

    async def reset_cache(self) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=30) as client:
            (await client.post(f"{self.root}/reset_prefix_cache")).raise_for_status()

    async def read(self) -> tuple[int, int, int, list[dict[str, Any]]]:
        """(requests, prompt tokens looked up in the prefix cache, tokens found there,
        and each replica's own counters as ``/stats`` gives them)."""
        import httpx

        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(f"{self.root}/stats")
            response.raise_for_status()
            stats = response.json()
        per = stats["per_replica"]
        self.decisions = [dict(d) for d in stats["balancer_decisions"]]
        return (
            int(stats["requests"]),
            sum(int(r["prefix_cache"]["queried_tokens"]) for r in per),
            sum(int(r["prefix_cache"]["hit_tokens"]) for r in per),
            per,
        )

    @staticmethod
    def decision_deltas(
        before: list[dict[str, int]], after: list[dict[str, int]]
    ) -> list[dict[str, int]]:
        """Per replica, the balancer's decisions by kind between two reads."""
        return [
            {kind: n - b.get(kind, 0) for kind, n in a.items()}
            for b, a in zip(before, after, strict=True)
        ]


async def bench_app(name: str, settings: Settings, *, progress: bool = True) -> dict[str, Any]:
    """Benchmark one app; everything ``results.json`` holds about it."""
    app = load_app(name)
    config = app_config(app, settings)
    available = app.available_inputs()
    if name == "ingest":  # corpora of documents: up to twice docs_per_corpus when varied
        available //= settings.docs_per_corpus * (2 if settings.fanout == "varied" else 1)
    n = settings.inputs_for(available)
    inputs = bench_inputs(
        app, n, settings.docs_per_corpus, fanout=settings.fanout, seed=settings.seed
    )
    systems = list(settings.systems)
    skipped: dict[str, str] = {}
    if any(s.startswith("langgraph-") for s in systems):
        reason = langgraph_unavailable()
        if reason:
            skipped = {s: reason for s in systems if s.startswith("langgraph-")}
            systems = [s for s in systems if s not in skipped]
    async with open_bench_operators(app, settings, systems) as bench:
        ops, emulator = bench.ops, bench.emulator
        # a control is its client: without one (no LLM calls, no server) it is not run
        for system in [s for s in systems if is_control(s) and s not in bench.clients]:
            skipped[system] = (
                "the app makes no LLM calls"
                if not llm_stages(app)
                else "a control needs an OpenAI-compatible LLM server (--llm emulated, "
                "llama-server or openai)"
            )
            systems.remove(system)
        knobs = fairness(app, ops, bench.cap, bench.plans)
        probe = await probe_emulator(ops.llm, emulator) if emulator is not None else None
        counters = bench.counters
        session = _Session(
            app, ops, inputs, settings, knobs, config, counters, clients=bench.clients
        )
        for system in dict.fromkeys([*systems, REFERENCE]):  # warm, so the bound pass is not cold
            await session.warm(system)
        bounds = await session.bound_pass(emulator)
        sweep = plan_levels(settings, bounds, emulator)
        runs, stopped = await session.measure_all(systems, sweep, progress)
        timelines = {s: await session.timeline(s) for s in TIMELINE_SYSTEMS if s in systems}
    return {
        "app": name,
        "description": app.DESCRIPTION,
        "inputs": len(inputs),
        "fanout": settings.fanout,
        "config": config.model_dump(mode="json") if config is not None else None,
        "operators": dict(ops.labels),
        "timing_emulation": emulator is not None,  # an app without LLM calls is measured
        "emulator": None
        if emulator is None
        else {
            "config": emulator.model_dump(mode="json"),
            "probe": probe,
            "deployment": settings.deployment,
            "replicas": DEPLOYMENTS[settings.deployment][0],
            "balancer": DEPLOYMENTS[settings.deployment][1],
        },
        "deployment": bench.deployment,
        "fairness": knobs,
        "systems": systems,
        "skipped": skipped,
        "fragment_output": _fragment_doc(name),
        "bound": bounds,
        "sweep": sweep,
        "stopped": stopped,
        "runs": runs,
        "timelines": timelines,
    }


def plan_levels(settings: Settings, bounds: dict[str, Any], emulator: Any) -> dict[str, Any]:
    """The load levels of the measured runs, the SLO, and the rate ceiling.

    Closed loop: ``settings.concurrency``. Open loop: ``settings.rates``, or the automatic
    sweep: :data:`RATE_FRACTIONS` of the rate ceiling (the deployment's peak decode
    throughput over the decode tokens of an input), or for an app without LLM calls
    :data:`RATE_MULTIPLES` of 1 / its unloaded p50. The *moderate* rate is the second.
    Search: one level, the search's start rate (``settings.search_start``, else half the
    rate ceiling, else a quarter of 1 / the unloaded p50); the search goes on from there.
    """
    rows = [q for q in bounds["queries"] if "unloaded_reference_s" in q]
    unloaded = percentile([q["unloaded_reference_s"] for q in rows], 50) if rows else math.nan
    slo = settings.slo_s if settings.slo_s else settings.slo_factor * unloaded
    ceiling = bounds.get("rate_ceiling")
    if settings.load == "closed":
        levels = [float(c) for c in settings.concurrency]
        how = "closed-loop concurrency"
    elif settings.load == "search":
        base = 1.0 / unloaded if unloaded and unloaded > 0 else 1.0
        start = settings.search_start or round(0.5 * ceiling if ceiling else 0.25 * base, 3)
        levels = [start]
        how = (
            f"rate search from {start:g}/s"
            + (
                " (given)"
                if settings.search_start
                else " (half the rate ceiling)"
                if ceiling
                else " (a quarter of 1 / the unloaded p50)"
            )
        )
    elif settings.rates:
        levels = sorted(float(r) for r in settings.rates)
        how = "given rates"
    elif ceiling:
        levels = [round(ceiling * f, 3) for f in RATE_FRACTIONS]
        how = f"fractions {', '.join(f'{f:g}' for f in RATE_FRACTIONS)} of the rate ceiling"
    else:
        base = 1.0 / unloaded if unloaded and unloaded > 0 else 1.0
        levels = [round(base * m, 3) for m in RATE_MULTIPLES]
        how = f"multiples {', '.join(f'{m:g}' for m in RATE_MULTIPLES)} of 1 / unloaded p50"
    moderate = levels[min(1, len(levels) - 1)] if settings.load == "open" else None
    return {
        "levels": levels,
        "how": how,
        "moderate_rate": moderate,
        "unloaded_reference_p50_s": finite(unloaded),
        "slo_s": finite(slo),
        "slo_rule": (
            f"fixed {settings.slo_s:g} s"
            if settings.slo_s
            else f"{settings.slo_factor:g} x the asyncio reference's unloaded p50"
        ),
        "rate_ceiling": ceiling,
    }


def read_config(app: ModuleType, path: str) -> Any:
    """The app's ``Config`` from a JSON file."""
    with open(path, encoding="utf-8") as f:
        return app.Config.model_validate_json(f.read())


def _fragment_doc(name: str) -> dict[str, Any] | None:
    from alto.bench.systems import FRAGMENT_OUTPUT

    spec = FRAGMENT_OUTPUT.get(name)
    if spec is None:
        return None
    return {"step": spec[0], "alto_stage": spec[1]}


class _Session:
    """The state one app's benchmark shares across its runs."""

    def __init__(
        self,
        app: ModuleType,
        ops: Any,
        inputs: list[Any],
        settings: Settings,
        knobs: dict[str, Any],
        config: Any,
        counters: EmulatorCounters | None,
        *,
        clients: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.ops = ops
        self.inputs = inputs
        self.settings = settings
        self.knobs = knobs
        self.config = config
        self.counters = counters
        self.clients = dict(clients or {})
        self.watches = {system: DispatchWatch(c) for system, c in self.clients.items()}
        self.expected: list[str | None] = []

    def watch_for(self, system: str) -> DispatchWatch | None:
        """The watch on ``system``'s own client's dispatcher (None: it has none)."""
        return self.watches.get(system)

    def server(self, system: str, recorder: Recorder) -> Any:
        client = self.clients.get(system)
        if client is not None:
            # its own client: the dispatcher holds the cap, no semaphore in front of it
            ops = recording_operators(
                self.ops, recorder, llm=client, anonymous_calls=anonymous_calls(system)
            )
        else:
            ops = recording_operators(self.ops, recorder, llm_slots=self.knobs["llm_cap"])
        return make_server(
            system,
            self.app,
            ops,
            recorder=recorder,
            langgraph_concurrency=self.knobs["langgraph_max_concurrency"],
            config=self.config,
        )

    async def bound_pass(self, emulator: Any) -> dict[str, Any]:
        """Inputs alone through the asyncio reference: expected outputs, and the bound.

        The first :data:`BOUND_INPUTS` run one at a time, timed (the unloaded latency, the
        critical path, the decode tokens); the rest only for their expected output.
        """
        reference = load_reference(self.app)
        rows = []
        timed = self.inputs[:BOUND_INPUTS]
        for i, value in enumerate(timed):
            recorder = Recorder()
            ops = recording_operators(self.ops, recorder)
            with tracking_dependencies() as result:
                started = now()
                try:
                    out = await reference(ops, value, self.config)
                except Exception as exc:
                    self.expected.append(None)
                    rows.append({"index": i, "error": f"{type(exc).__name__}: {exc}"[:500]})
                    continue
                elapsed = now() - started
            self.expected.append(driver.fingerprint(out))
            llm = [c for c in recorder.calls if c.operator == "llm"]
            row: dict[str, Any] = {
                "index": i,
                "unloaded_reference_s": round(elapsed, 6),
                "llm_calls": len(llm),
                "decode_tokens": sum(c.tokens for c in llm),
                "calls": len(recorder.calls),
            }
            if emulator is not None:
                row.update(critical_path(recorder.calls, result.seen, emulator).as_dict())
                llm_only = critical_path(recorder.calls, result.seen, emulator, other=False)
                row["llm_only_bound_s"] = round(llm_only.seconds, 6)
            rows.append(row)
        rest = self.inputs[len(timed) :]
        limit = asyncio.Semaphore(16)

        async def expect(value: Any) -> str | None:
            async with limit:
                try:
                    return driver.fingerprint(await reference(self.ops, value, self.config))
                except Exception:
                    return None

        self.expected += await asyncio.gather(*(expect(v) for v in rest))
        method = ceiling = peak = None
        if emulator is not None:
            method = (
                "longest dependency chain of one unloaded asyncio-reference run per input: "
                "LLM calls at the emulator's modeled unloaded service time, other operator "
                "calls at their measured duration"
            )
            tokens = [int(str(q["decode_tokens"])) for q in rows if "decode_tokens" in q]
            replicas = DEPLOYMENTS[self.settings.deployment][0]
            peak = peak_decode_tokens_per_s(emulator) * replicas
            work = sum(tokens) / len(tokens) if tokens else 0
            ceiling = round(peak / work, 3) if work else None
        return {
            "method": method,
            "queries": rows,
            "peak_decode_tokens_per_s": None if peak is None else round(peak, 1),
            "rate_ceiling": ceiling,
        }

    async def warm(self, system: str) -> None:
        recorder = Recorder()
        server = self.server(system, recorder)
        await driver.closed_loop(server, self.inputs[:1], 1, timeout=self.settings.timeout_s)

    async def measure_all(
        self, systems: list[str], sweep: dict[str, Any], progress: bool
    ) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Every run; and, per system the open sweep stopped early, the rate it missed."""
        from tqdm.auto import tqdm

        from alto.bench.stats import sure_miss

        settings = self.settings
        levels = sweep["levels"]
        if settings.load == "search":  # alto.bench.search drives self.measure
            from alto.bench.search import search_session

            return await search_session(self, systems, sweep, progress), {}
        bar = tqdm(
            total=settings.repeats * len(levels) * len(systems),
            desc=self.app.NAME,
            unit="run",
            disable=not progress,
            file=sys.stderr,
        )
        runs: list[dict[str, Any]] = []
        active = list(systems)
        stopped: dict[str, float] = {}
        try:
            for li, level in enumerate(levels):
                for repeat in range(settings.repeats):
                    order = rotation(active, repeat * len(levels) + li)
                    for position, system in enumerate(order):
                        bar.set_postfix_str(f"{system} @ {_level_name(settings.load, level)}")
                        runs.append(await self.measure(system, level, repeat, position))
                        bar.update()
                if settings.load != "open" or not settings.sweep_stop:
                    continue
                if sweep["slo_s"] is None or level < (sweep["moderate_rate"] or 0):
                    continue
                for system in list(active):
                    latencies = [
                        s["latency_s"] if s["error"] is None else math.inf
                        for r in runs
                        if r["system"] == system and r["level"] == level
                        for s in r["samples"]
                        if s["in_window"]
                    ]
                    if latencies and sure_miss(latencies, sweep["slo_s"]):
                        active.remove(system)
                        stopped[system] = level
                        bar.update(settings.repeats * (len(levels) - li - 1))
        finally:
            bar.close()
        return runs, stopped

    async def measure(
        self,
        system: str,
        level: float,
        repeat: int,
        position: int,
        *,
        seed: int | None = None,
        arrivals: int | None = None,
        warmup: int = 0,
    ) -> dict[str, Any]:
        """One run of ``system`` at ``level``; open loop: ``arrivals`` Poisson arrivals
        (default ``open_inputs``) of ``seed`` (default ``seed + repeat``), the first
        ``warmup`` not measured. Its record carries the CPU use over the run and, with the
        emulator, how late its steps ran (:mod:`alto.bench.machine`)."""
        from alto.bench.machine import CpuClock, lag_delta

        settings = self.settings
        recorder = Recorder()
        server = self.server(system, recorder)
        before = None
        decided = None
        if self.counters is not None:
            await self.counters.reset_cache()
            before = await self.counters.read()
            if isinstance(self.counters, EmulatorCounters):
                decided = self.counters.decisions
        watch = self.watch_for(system)
        if watch is not None:
            watch.start()
        recorder.reset()
        clock = CpuClock()
        if settings.load == "closed":
            outcome = await driver.closed_loop(
                server,
                self.inputs,
                int(level),
                total=max(settings.closed_inputs, int(level)),
                timeout=settings.timeout_s,
            )
        else:
            schedule = poisson_schedule(
                arrivals or settings.open_inputs,
                level,
                settings.seed + repeat if seed is None else seed,
            )
            outcome = await driver.open_loop(
                server, self.inputs, schedule, timeout=settings.timeout_s, warmup=warmup
            )
        cpu = clock.finish()
        tokens: dict[str, Any] = {"requests": None, "prompt_tokens": None, "cached_tokens": None}
        replicas = lag = None
        if self.counters is not None and before is not None:
            after = await self.counters.read()
            lag = lag_delta(before[3], after[3])
            tokens = {
                "requests": after[0] - before[0],
                "prompt_tokens": after[1] - before[1],
                "cached_tokens": after[2] - before[2],
            }
            replicas = replica_deltas(before[3], after[3])
        decisions = None
        if decided is not None and isinstance(self.counters, EmulatorCounters):
            decisions = EmulatorCounters.decision_deltas(decided, self.counters.decisions)
        endpoint = None
        if self.knobs.get("alto_llm_stages"):
            endpoint = (
                watch.finish()
                if watch is not None
                else semaphore_figures(recorder.calls, self.knobs["llm_cap"])
            )
        mismatched = 0
        for sample in outcome.samples:
            expected = self.expected[sample.input]
            if sample.error is None and expected is not None:
                mismatched += driver.fingerprint(sample.output) != expected
        completed = outcome.completed
        start, end = outcome.window
        return {
            "system": system,
            "level": level,
            "repeat": repeat,
            "position": position,
            "wall_s": round(outcome.wall_s, 6),
            "window_s": [finite(round(start, 6)), finite(round(end, 6))],
            "first_output_s": finite(round(outcome.first_output_s, 6)),
            "throughput": finite(throughput(len(completed), outcome.wall_s)),
            "window_throughput": finite(outcome.window_throughput),
            "in_flight": finite(outcome.in_flight),
            "submitted": len(outcome.samples),
            "completed": len(completed),
            "measured": len(outcome.measured),
            "failed": len(outcome.samples) - len(completed),
            "mismatched": mismatched,
            "timed_out": outcome.timed_out,
            "late_spans": len(outcome.late_spans),
            "operator_calls": len(recorder.calls),
            "llm_calls": sum(c.operator == "llm" for c in recorder.calls),
            **tokens,
            "endpoint": endpoint,
            "emulator_replicas": replicas,
            "balancer_decisions": decisions,
            "seed": seed,
            "cpu": cpu,
            "emulator_lag": lag,
            "samples": [s.as_dict() for s in outcome.samples],
        }

    async def timeline(self, system: str) -> dict[str, Any]:
        """The first input alone through ``system``, every operator call kept."""
        recorder = Recorder()
        server = self.server(system, recorder)
        watch = self.watch_for(system)
        if watch is not None:
            watch.start()
        recorder.reset()
        outcome = await driver.closed_loop(
            server, self.inputs[:1], 1, timeout=self.settings.timeout_s
        )
        t0 = outcome.started
        dispatch = None
        if watch is not None:
            dispatch = {"samples": watch.samples_since(t0), **watch.finish()}
        spans = []
        stats = getattr(server, "stats", None)
        if stats is not None and stats.spans:
            spans = [
                {
                    "stage": s.stage,
                    "start": round(s.start - t0, 6),
                    "end": round(s.end - t0, 6),
                    "replica": s.replica,
                    "size": s.size,
                }
                for s in stats.spans
            ]
        sample = outcome.samples[0]
        done = sample.submitted + sample.latency
        return {
            "latency_s": None if math.isnan(sample.latency) else round(sample.latency, 6),
            "submitted_s": round(sample.submitted, 6),
            "done_s": None if math.isnan(done) else round(done, 6),
            "error": sample.error,
            "calls": [c.as_dict(t0) for c in sorted(recorder.calls, key=lambda c: c.start)],
            "stage_spans": spans,
            "dispatch": dispatch,
        }


def _level_name(load: str, level: float) -> str:
    return f"c={int(level)}" if load == "closed" else f"{level:g}/s"


def environment(settings: Settings) -> dict[str, Any]:
    """Where the benchmark ran: machine, Python, package versions, git commit."""
    import platform
    import subprocess
    from importlib import metadata

    packages: dict[str, str | None] = {}
    for name in (
        "alto",
        "anyio",
        "httpx",
        "pydantic",
        "numpy",
        "langgraph",
        "langchain-core",
        "torch",
        "sentence-transformers",
        "faiss-cpu",
        "llama_cpp_python",
        "uvicorn",
        "starlette",
        "matplotlib",
        "tqdm",
    ):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                cwd=os.path.dirname(__file__),
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "processor": platform.processor() or None,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "packages": packages,
        "git_commit": commit,
        "llm": settings.llm,
        "seed": settings.seed,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
