"""One app's benchmark, in one process: every system on the same inputs, interleaved.

For an app the run goes:

1. **Operators** are opened once (:func:`open_bench_operators`): with ``--llm emulated``
   the serving-timing emulator starts once for the whole app.
2. Every system (and the optimum) runs one input once, unmeasured: connections, model
   warm-up, compiled graphs, caches.
3. **Bound pass**: each input alone through the asyncio optimum, recorded with causal
   dependencies; its outputs are the ones every measured run is checked against, and
   with the emulator it gives each input's critical-path lower bound
   (:mod:`alto.bench.bound`).
4. **Measured runs**, interleaved: for each repeat, for each load level (a closed-loop
   concurrency or a Poisson rate), every system once, the order rotating so each system
   takes each position in turn.
5. **Timelines**: the first input alone through Alto, flat LangGraph and the optimum,
   every operator call recorded, for the Gantt plot and the Chrome trace.

Fairness of concurrency knobs: Alto gives each LLM stage ``ops.llm.max_concurrency``
replicas, so it has at most that many calls in flight per LLM stage. The LangGraph
variants get ``max_concurrency`` equal to that total (replicas x LLM stages), and the
optimum's LLM calls share a semaphore of the same size across all its root inputs.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

from alto.bench import driver
from alto.bench.bound import critical_path
from alto.bench.record import Recorder, recording_operators, tracking_dependencies
from alto.bench.stats import finite, poisson_schedule, rotation, throughput
from alto.bench.systems import (
    ALTO,
    OPTIMUM,
    SYSTEMS,
    langgraph_unavailable,
    load_optimum,
    make_server,
    now,
)

TIMELINE_SYSTEMS = (ALTO, "langgraph-flat", OPTIMUM)
DEFAULT_EMULATED_CONCURRENCY = 16
"""LLM calls the emulated server is taken to serve well at once (``--llm-concurrency``):
the emulated vLLM decodes 4 sequences at full speed and 16 at 1.7x the per-token time."""
LANGGRAPH_DEFAULT_CONCURRENCY = 64
_PROBE = 7919  # an LLM concurrency no app would choose: finds the stages sized by it


@dataclass
class Settings:
    """What ``alto bench`` was asked to do (recorded verbatim in ``results.json``)."""

    apps: list[str]
    llm: str = "emulated"
    llm_url: str | None = None
    llm_model: str | None = None
    embedder: str = "minilm"
    queries: int = 16
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    mode: str = "closed"
    rates: list[float] = field(default_factory=lambda: [2.0])
    repeats: int = 3
    seed: int = 0
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))
    timeout_s: float = 600.0
    docs_per_corpus: int = 16
    config: str | None = None  # a JSON file of the app's Config (one app only)
    llm_concurrency: int | None = None  # what the LLM serves well at once (None: its own)
    emulator_config: str | None = None  # EmulatorConfig as JSON (None: its defaults)
    emulator_mode: str = "process"

    @property
    def levels(self) -> list[float]:
        return [float(c) for c in self.concurrency] if self.mode == "closed" else self.rates

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_app(name: str) -> ModuleType:
    from alto.cli import load_app as load

    return load(name)


def bench_inputs(app: ModuleType, n: int, docs_per_corpus: int) -> list[Any]:
    """``n`` root inputs of ``app``; ingest's are corpora of ``docs_per_corpus`` documents."""
    if app.NAME != "ingest":
        return list(app.load_inputs(n))
    from examples import data
    from examples.ingest import Corpus, Doc

    docs = data.ingest_documents(n * docs_per_corpus)
    return [
        Corpus(
            f"ingest-{i}", tuple(Doc(d.id, d.text) for d in docs[start : start + docs_per_corpus])
        )
        for i, start in enumerate(range(0, len(docs), docs_per_corpus))
    ]


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


def fairness(app: ModuleType, ops: Any) -> dict[str, Any]:
    """The concurrency knobs every system gets (see the module docstring)."""
    stages = llm_stages(app)
    replicas = ops.llm_replicas if ops.llm is not None else None
    budget = replicas * stages if replicas and stages else None
    return {
        "llm_max_concurrency": ops.llm.max_concurrency if ops.llm is not None else None,
        "alto_llm_stages": stages,
        "alto_replicas_per_llm_stage": replicas,
        "alto_llm_calls_in_flight_max": budget,
        "langgraph_max_concurrency": budget or LANGGRAPH_DEFAULT_CONCURRENCY,
        "optimum_llm_slots": budget,
        "alto_root_concurrency": "set by the load driver (no limit inside the run)",
    }


@contextlib.asynccontextmanager
async def open_bench_operators(
    app: ModuleType, settings: Settings
) -> AsyncIterator[tuple[Any, Any]]:
    """The app's operators, and the emulator's timing model when the LLM is emulated.

    The embedder and retriever come from ``examples.common.open_operators``. With
    ``--llm emulated`` the serving-timing emulator is started here, once for the app, in a
    process of its own by default (so the systems' own CPU work cannot slow its clock), and
    the LLM is an :class:`OpenAIClient` on it with a connection pool as large as the
    emulator's ``max_num_seqs`` (the client never becomes the bottleneck).
    """
    from examples.common import open_operators

    needs = set(app.NEEDS)
    emulated = settings.llm == "emulated" and "llm" in needs
    async with open_operators(
        needs - {"llm"} if emulated else needs,
        llm=settings.llm,  # type: ignore[arg-type]
        llm_url=settings.llm_url,
        llm_model=settings.llm_model,
        embedder=settings.embedder,  # type: ignore[arg-type]
    ) as ops:
        if not emulated:
            if settings.llm_concurrency and ops.llm is not None:
                ops.llm.max_concurrency = settings.llm_concurrency
            yield ops, None
            return
        from alto.bench.emulator import EmulatorConfig, EmulatorServer
        from alto.operators.llm.openai import OpenAIClient

        model = (
            EmulatorConfig.model_validate_json(settings.emulator_config)
            if settings.emulator_config
            else EmulatorConfig()
        )
        async with EmulatorServer(model, mode=settings.emulator_mode) as server:  # type: ignore[arg-type]
            client = OpenAIClient(
                server.base_url,
                "emulated",
                max_connections=max(64, model.max_num_seqs),
                max_concurrency=settings.llm_concurrency or DEFAULT_EMULATED_CONCURRENCY,
            )
            async with client:
                ops.llm = client
                ops.labels["llm"] = (
                    f"serving-timing emulator (timing emulation, not a model; "
                    f"{settings.emulator_mode} mode)"
                )
                yield ops, model


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


async def bench_app(name: str, settings: Settings, *, progress: bool = True) -> dict[str, Any]:
    """Benchmark one app; everything ``results.json`` holds about it."""
    app = load_app(name)
    config = read_config(app, settings.config) if settings.config else None
    inputs = bench_inputs(app, settings.queries, settings.docs_per_corpus)
    systems = list(settings.systems)
    skipped: dict[str, str] = {}
    if any(s.startswith("langgraph-") for s in systems):
        reason = langgraph_unavailable()
        if reason:
            skipped = {s: reason for s in systems if s.startswith("langgraph-")}
            systems = [s for s in systems if s not in skipped]
    async with open_bench_operators(app, settings) as (ops, emulator):
        knobs = fairness(app, ops)
        probe = await probe_emulator(ops.llm, emulator) if emulator is not None else None
        session = _Session(app, ops, inputs, settings, knobs, config)
        for system in dict.fromkeys([*systems, OPTIMUM]):  # warm, so the bound pass is not cold
            await session.warm(system)
        bounds = await session.bound_pass(emulator)
        runs = await session.measure_all(systems, progress)
        timelines = {s: await session.timeline(s) for s in TIMELINE_SYSTEMS if s in systems}
    return {
        "app": name,
        "description": app.DESCRIPTION,
        "inputs": len(inputs),
        "operators": dict(ops.labels),
        "timing_emulation": emulator is not None,  # an app without LLM calls is measured
        "emulator": None
        if emulator is None
        else {"config": emulator.model_dump(mode="json"), "probe": probe},
        "fairness": knobs,
        "systems": systems,
        "skipped": skipped,
        "fragment_output": _fragment_doc(name),
        "bound": bounds,
        "runs": runs,
        "timelines": timelines,
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
    ) -> None:
        self.app = app
        self.ops = ops
        self.inputs = inputs
        self.settings = settings
        self.knobs = knobs
        self.config = config
        self.expected: list[str | None] = []

    def server(self, system: str, recorder: Recorder) -> Any:
        ops = recording_operators(self.ops, recorder)
        optimum_ops = recording_operators(
            self.ops, recorder, llm_slots=self.knobs["optimum_llm_slots"]
        )
        return make_server(
            system,
            self.app,
            ops,
            recorder=recorder,
            optimum_ops=optimum_ops,
            langgraph_concurrency=self.knobs["langgraph_max_concurrency"],
            config=self.config,
        )

    async def bound_pass(self, emulator: Any) -> dict[str, Any]:
        """Each input alone through the optimum: expected outputs, and the bound."""
        optimum = load_optimum(self.app)
        rows = []
        for i, value in enumerate(self.inputs):
            recorder = Recorder()
            ops = recording_operators(self.ops, recorder)
            with tracking_dependencies() as result:
                started = now()
                try:
                    out = await optimum(ops, value, self.config)
                except Exception as exc:
                    self.expected.append(None)
                    rows.append({"index": i, "error": f"{type(exc).__name__}: {exc}"[:500]})
                    continue
                elapsed = now() - started
            self.expected.append(driver.fingerprint(out))
            row: dict[str, Any] = {
                "index": i,
                "unloaded_optimum_s": round(elapsed, 6),
                "llm_calls": sum(c.operator == "llm" for c in recorder.calls),
                "calls": len(recorder.calls),
            }
            if emulator is not None:
                row.update(critical_path(recorder.calls, result.seen, emulator).as_dict())
                llm_only = critical_path(recorder.calls, result.seen, emulator, other=False)
                row["llm_only_bound_s"] = round(llm_only.seconds, 6)
            rows.append(row)
        method = None
        if emulator is not None:
            method = (
                "longest dependency chain of one unloaded optimum run per input: LLM "
                "calls at the emulator's modeled unloaded service time, other operator "
                "calls at their measured duration"
            )
        return {"method": method, "queries": rows}

    async def warm(self, system: str) -> None:
        recorder = Recorder()
        server = self.server(system, recorder)
        await driver.closed_loop(server, self.inputs[:1], 1, timeout=self.settings.timeout_s)

    async def measure_all(self, systems: list[str], progress: bool) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        settings = self.settings
        levels = settings.levels
        bar = tqdm(
            total=settings.repeats * len(levels) * len(systems),
            desc=self.app.NAME,
            unit="run",
            disable=not progress,
            file=sys.stderr,
        )
        runs = []
        try:
            for repeat in range(settings.repeats):
                for li, level in enumerate(levels):
                    order = rotation(systems, repeat * len(levels) + li)
                    for position, system in enumerate(order):
                        bar.set_postfix_str(f"{system} @ {_level_name(settings.mode, level)}")
                        runs.append(await self.measure(system, level, repeat, position))
                        bar.update()
        finally:
            bar.close()
        return runs

    async def measure(
        self, system: str, level: float, repeat: int, position: int
    ) -> dict[str, Any]:
        settings = self.settings
        recorder = Recorder()
        server = self.server(system, recorder)
        recorder.reset()
        if settings.mode == "closed":
            outcome = await driver.closed_loop(
                server, self.inputs, int(level), timeout=settings.timeout_s
            )
        else:
            schedule = poisson_schedule(len(self.inputs), level, settings.seed + repeat)
            outcome = await driver.open_loop(
                server, self.inputs, schedule, timeout=settings.timeout_s
            )
        mismatched = 0
        for sample in outcome.samples:
            expected = self.expected[sample.index]
            if sample.error is None and expected is not None:
                mismatched += driver.fingerprint(sample.output) != expected
        completed = outcome.completed
        return {
            "system": system,
            "level": level,
            "repeat": repeat,
            "position": position,
            "wall_s": round(outcome.wall_s, 6),
            "first_output_s": finite(round(outcome.first_output_s, 6)),
            "throughput": finite(throughput(len(completed), outcome.wall_s)),
            "completed": len(completed),
            "failed": len(outcome.samples) - len(completed),
            "mismatched": mismatched,
            "timed_out": outcome.timed_out,
            "operator_calls": len(recorder.calls),
            "llm_calls": sum(c.operator == "llm" for c in recorder.calls),
            "samples": [s.as_dict() for s in outcome.samples],
        }

    async def timeline(self, system: str) -> dict[str, Any]:
        """The first input alone through ``system``, every operator call kept."""
        recorder = Recorder()
        server = self.server(system, recorder)
        recorder.reset()
        outcome = await driver.closed_loop(
            server, self.inputs[:1], 1, timeout=self.settings.timeout_s
        )
        t0 = outcome.started
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
        return {
            "latency_s": None if math.isnan(sample.latency) else round(sample.latency, 6),
            "error": sample.error,
            "calls": [c.as_dict(t0) for c in sorted(recorder.calls, key=lambda c: c.start)],
            "stage_spans": spans,
        }


def _level_name(mode: str, level: float) -> str:
    return f"c={int(level)}" if mode == "closed" else f"{level:g}/s"


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
    }
