"""One app's benchmark session: the state its runs share, and each kind of run.

A :class:`Session` holds the app, its operators and inputs, the settings and the fairness
knobs; it makes each system's server on the recording operators and runs the warm-up, the
bound pass, every measured run (or hands them to :mod:`alto.bench.search`) and the
timelines.
"""

from __future__ import annotations

import asyncio
import math
import sys
from dataclasses import KW_ONLY, dataclass, field
from types import ModuleType
from typing import Any

from alto.bench import driver
from alto.bench.bound import critical_path, peak_decode_tokens_per_s
from alto.bench.controls import anonymous_calls
from alto.bench.emulated import EmulatorCounters
from alto.bench.endpoints import DispatchWatch, replica_deltas, semaphore_figures
from alto.bench.record import Recorder, recording_operators, tracking_dependencies
from alto.bench.settings import DEPLOYMENTS, Settings
from alto.bench.stats import finite, poisson_schedule, rotation, throughput
from alto.bench.systems import load_reference, make_server, now

BOUND_INPUTS = 16
"""Inputs timed alone in the bound pass (the rest get their expected output unmeasured)."""


def warmup_arrivals(rate: float, slo_s: float | None, least: int) -> int:
    """Arrivals not measured at the start of an open-loop run at ``rate``.

    ``least``, and at least the arrivals of one SLO (``rate * slo_s``), the time a queue
    left over from the start takes to show in latencies.

    Example:
        >>> warmup_arrivals(40.0, 0.5, 4), warmup_arrivals(2.0, 0.5, 4)
        (20, 4)
    """
    return max(least, math.ceil(rate * slo_s)) if slo_s else least


@dataclass(eq=False, repr=False)
class Session:
    """The state one app's benchmark shares across its runs.

    Attributes:
        clients: the LLM clients of the systems that hold one of their own, by system (a
            copy of the mapping given).
        watches: a :class:`~alto.bench.endpoints.DispatchWatch` on each of those clients.
        expected: each input's expected output, once the bound pass has run.
    """

    app: ModuleType
    ops: Any
    inputs: list[Any]
    settings: Settings
    knobs: dict[str, Any]
    config: Any
    counters: EmulatorCounters | None
    _: KW_ONLY
    clients: dict[str, Any] = field(default_factory=dict)
    watches: dict[str, DispatchWatch] = field(init=False)
    expected: list[str | None] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.clients = dict(self.clients)
        self.watches = {system: DispatchWatch(c) for system, c in self.clients.items()}

    def watch_for(self, system: str) -> DispatchWatch | None:
        """The watch on ``system``'s own client's dispatcher (None: it has none)."""
        return self.watches.get(system)

    def server(self, system: str, recorder: Recorder, *, trace: bool = False) -> Any:
        """``system`` ready for one run, its operator calls going to ``recorder``.

        A system with a client of its own calls the LLM through it (its dispatcher holds the
        cap); every other one calls it behind the shared semaphore of ``llm_cap`` permits.
        ``trace``: Alto keeps a span per stage call.
        """
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
            trace=trace,
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
        """Run one input through ``system`` alone, unmeasured, so that its first run starts warm."""
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
        def sizes(level: float) -> dict[str, int]:
            # open loop at a fixed rate: steady state, as in the search; the first arrivals
            # (at least the search's warm-up, and at least one SLO's worth) are not measured
            if settings.load != "open":
                return {}
            warmup = warmup_arrivals(level, sweep["slo_s"], settings.search_warmup)
            return {"arrivals": settings.open_inputs + warmup, "warmup": warmup}

        runs: list[dict[str, Any]] = []
        active = list(systems)
        stopped: dict[str, float] = {}
        try:
            for li, level in enumerate(levels):
                for repeat in range(settings.repeats):
                    order = rotation(active, repeat * len(levels) + li)
                    for position, system in enumerate(order):
                        bar.set_postfix_str(f"{system} @ {_level_name(settings.load, level)}")
                        runs.append(
                            await self.measure(system, level, repeat, position, **sizes(level))
                        )
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
        """One run of ``system`` at ``level``.

        Open loop: ``arrivals`` Poisson arrivals (default ``open_inputs``) of ``seed``
        (default ``seed + repeat``), the first ``warmup`` not measured. Its record carries
        the CPU use over the run and, with the emulator, how late its steps ran
        (:mod:`alto.bench.machine`).
        """
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
        """The first input alone through ``system``, every call kept (Alto's stage calls too)."""
        recorder = Recorder()
        server = self.server(system, recorder, trace=True)
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
