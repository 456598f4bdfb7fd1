"""One app's benchmark, in one process: every system on the same inputs, interleaved.

For an app the run goes:

1. **Operators** are opened once (:func:`~alto.bench.operators.open_bench_operators`):
   with ``--llm emulated`` the serving-timing emulator starts once for the whole app, as
   the chosen deployment (one server, or 4 replicas behind a balancer).
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

The pieces are modules of their own: the settings (:mod:`alto.bench.settings`), the
operators and the one cap every system gets (:mod:`alto.bench.operators`), the emulator's
probe and counters (:mod:`alto.bench.emulated`), the runs (:mod:`alto.bench.session`), the
load levels (:mod:`alto.bench.levels`) and where it ran (:mod:`alto.bench.environment`).
"""

from __future__ import annotations

import importlib
import random
from types import ModuleType
from typing import Any

from alto.bench.controls import is_control, needs_server
from alto.bench.emulated import probe_emulator
from alto.bench.levels import plan_levels
from alto.bench.operators import fairness, llm_stages, open_bench_operators
from alto.bench.session import Session
from alto.bench.settings import DEPLOYMENTS, Settings
from alto.bench.systems import ALTO, REFERENCE, langgraph_unavailable

TIMELINE_SYSTEMS = (ALTO, "langgraph-flat", REFERENCE)


def load_app(name: str) -> ModuleType:
    """The example app ``name`` (see :func:`alto.apps.load_app`)."""
    from alto.apps import load_app as load

    return load(name)


def bench_inputs(
    app: ModuleType, n: int, docs_per_corpus: int, *, fanout: str = "uniform", seed: int = 0
) -> list[Any]:
    """``n`` root inputs of ``app``.

    Ingest's are corpora of ``docs_per_corpus`` documents (with ``fanout="varied"``, of 1 to
    twice that many, drawn per corpus).
    """
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
    """The app's ``Config``.

    From ``--config``, else with the varied fan-out's settings (``steps.VARIED_FANOUT``)
    under ``fanout="varied"``, else None (its defaults).
    """
    if settings.config:
        return read_config(app, settings.config)
    if settings.fanout == "varied":
        steps = importlib.import_module(f"{app.__name__}.steps")
        return app.Config(**getattr(steps, "VARIED_FANOUT", {}))
    return None


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
        for system in [
            s for s in systems if is_control(s) and needs_server(s) and s not in bench.clients
        ]:
            skipped[system] = (
                "the app makes no LLM calls"
                if not llm_stages(app)
                else "a control needs an OpenAI-compatible LLM server (--llm emulated, "
                "llama-server, llama-server-native or openai)"
            )
            systems.remove(system)
        knobs = fairness(app, ops, bench.cap, bench.plans)
        probe = await probe_emulator(ops.llm, emulator) if emulator is not None else None
        counters = bench.counters
        session = Session(
            app, ops, inputs, settings, knobs, config, counters, clients=bench.clients
        )
        for system in dict.fromkeys([*systems, REFERENCE]):  # warm, so the bound pass is not cold
            await session.warm(system)
        bounds = await session.bound_pass(emulator)
        cpu_is_work = not llm_stages(app) or settings.llm == "local"
        sweep = plan_levels(settings, bounds, emulator, cpu_is_work=cpu_is_work)
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


def read_config(app: ModuleType, path: str) -> Any:
    """The app's ``Config`` from a JSON file."""
    with open(path, encoding="utf-8") as f:
        return app.Config.model_validate_json(f.read())


def _fragment_doc(name: str) -> dict[str, Any] | None:
    from alto.bench.systems import FRAGMENT_OUTPUT

    step = FRAGMENT_OUTPUT.get(name)
    return None if step is None else {"step": step}
