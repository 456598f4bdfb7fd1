"""``alto bench``: its arguments, and running one app or all of them.

    alto bench factcheck --llm emulated --concurrency 1,4,16 --closed-inputs 100 --out bench
    alto bench all --llm emulated --deployment prefix4 --load open --out bench-open
    alto bench multihop --llm emulated --load open --rate 2,4,8 --slo 2.5 --out bench-poisson
    alto bench factcheck --llm llama-server-native --deployment rr2 --concurrency 2,4

One app runs in this process. ``all`` runs each app in a process of its own, one after
another (the systems of one app share that process and interleave), then writes one
``results.json``, ``report.md`` and the plots for all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from alto.bench.controls import ALL_SYSTEMS, CONTROL_SYSTEMS
from alto.bench.endpoints import ALTO_ENDPOINTS
from alto.bench.errors import BenchError
from alto.bench.settings import (
    APPS,
    DEPLOYMENTS,
    EMBEDDERS,
    EMULATOR_MODES,
    FANOUTS,
    LLMS,
    LOADS,
    NATIVE_SLOTS,
    NATIVE_THREADS,
    Settings,
    check_available,
)
from alto.bench.systems import SYSTEMS
from alto.operators.llm.dispatch import ORDERS, ROUTES


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``bench`` subcommand's arguments."""
    p.add_argument(
        "app",
        nargs="?",
        default="all",
        help=f"one of {', '.join(APPS)}, several comma-separated, or all",
    )
    p.add_argument(
        "--llm",
        choices=list(LLMS),
        default="emulated",
        help="emulated: the serving-timing emulator (default; timing emulation, not "
        "a model); local: embedded SmolLM2 in-process; llama-server: embedded SmolLM2 on "
        "llama_cpp.server processes started on loopback, one per replica of --deployment "
        "(one sequence and one CPU thread each); llama-server-native: embedded SmolLM2 on "
        "llama.cpp's own llama-server processes started on loopback, one per replica of "
        "--deployment (--llm-slots sequences decoded in one batch each; built by 'bash "
        "install.sh llama-server'); openai: a server at --llm-url; fake: the scripted test "
        "double",
    )
    p.add_argument("--llm-url", help="base URL of an OpenAI-compatible server (…/v1)")
    p.add_argument(
        "--llm-model",
        help="model name for the server, or a GGUF path for local and llama-server-native",
    )
    p.add_argument(
        "--llm-slots",
        type=int,
        metavar="N",
        help="llama-server-native: sequences each server decodes together, each with its "
        f"own prompt cache (-np; default {NATIVE_SLOTS} in all, shared out over the "
        "deployment's servers: single 4, rr2/prefix2 2 each, rr4/ll4/prefix4 1 each)",
    )
    p.add_argument(
        "--llm-threads",
        type=int,
        metavar="T",
        help=f"llama-server-native: CPU threads of each server (-t; default {NATIVE_THREADS} "
        "in all, shared out over the deployment's servers, at least 1 each)",
    )
    p.add_argument(
        "--llm-concurrency",
        type=int,
        help="the one client-side cap on concurrent LLM calls, shared by all of a system's "
        "calls in a run and the same for every system (default: 16 per emulated replica; "
        "llama-server-native: every slot of the deployment; otherwise the LLM client's own "
        "concurrency times the app's LLM stages)",
    )
    p.add_argument(
        "--emulator-config",
        metavar="JSON",
        help="the emulator's timing model (EmulatorConfig) as JSON text or @file "
        "(default: its documented H100 defaults)",
    )
    p.add_argument(
        "--emulator-mode",
        choices=list(EMULATOR_MODES),
        default="process",
        help="run the emulator in a child process (default: its clock is not slowed by the "
        "systems' CPU work) or in a thread",
    )
    p.add_argument(
        "--embedder",
        choices=list(EMBEDDERS),
        help="minilm: all-MiniLM-L6-v2 sentence embeddings; hash: the hashing test double (no "
        "model, not semantic) (default: hash with --llm emulated or fake, whose answers carry "
        "no meaning to retrieve by; minilm with a real model)",
    )
    p.add_argument("--config", metavar="FILE", help="the app's settings as JSON (one app only)")
    p.add_argument(
        "--deployment",
        choices=list(DEPLOYMENTS),
        default="single",
        help="the LLM deployment every system runs against (--llm emulated, llama-server or "
        "llama-server-native): single: one server; rr2, rr4: 2 or 4 servers "
        "behind a round-robin balancer; prefix2, prefix4: behind the prefix-aware one; ll4: 4 "
        "behind the least-loaded one (default single). With llama-server-native each server "
        "has --llm-slots slots: single is one server of 4, rr2 and prefix2 two of 2",
    )
    p.add_argument(
        "--alto-endpoint",
        choices=list(ALTO_ENDPOINTS),
        help="what Alto's own LLM client is given: replicas: the deployment's replica URLs, "
        "its dispatcher routing calls itself (the balancer never sees them); balancer: the "
        "balancer's URL, like the other systems (default: replicas when the deployment has "
        "several, else balancer)",
    )
    p.add_argument(
        "--max-inflight",
        metavar="N|auto",
        help="Alto's dispatcher: calls in flight per replica, a number (at most the cap "
        "divided by the replicas) or auto (learned, bounded by that; default: the client's)",
    )
    p.add_argument(
        "--order",
        choices=list(ORDERS),
        help="Alto's dispatcher: which waiting call goes next (default: the client's)",
    )
    p.add_argument(
        "--route",
        choices=list(ROUTES),
        help="Alto's dispatcher: which replica serves a call (default: the client's)",
    )
    p.add_argument(
        "--fanout",
        choices=list(FANOUTS),
        default="varied",
        help="varied: fan-outs differ per input (answers of 1-8 sentences, lists of 1-6 "
        "items, documents' own section counts, corpora of varying size; default); uniform: "
        "every input fans out alike, as the old reports did",
    )
    p.add_argument(
        "--queries",
        type=int,
        help="distinct root inputs per app (default: one level's submissions, at most the "
        "data set; inputs are reused in turn past their number)",
    )
    p.add_argument(
        "--load",
        choices=list(LOADS),
        help="closed: a closed loop at each concurrency, slots refilled (default, the quick "
        "comparison); open: per system the highest Poisson rate whose p95 meets the SLO at "
        "95%% confidence, found by a rate search (the full method; with --rate, Poisson "
        "arrivals at those fixed rates instead); search: the rate search, whatever --rate",
    )
    p.add_argument("--mode", choices=["closed", "poisson"], help=argparse.SUPPRESS)
    p.add_argument(
        "--concurrency",
        default="4,16",
        help="closed-loop concurrency levels, comma-separated (default 4,16)",
    )
    p.add_argument(
        "--closed-inputs",
        type=int,
        default=48,
        help="submissions per closed-loop level (default 48: the quick comparison; the "
        "method's closed-loop reports use 100)",
    )
    p.add_argument(
        "--rate",
        help="open loop at these fixed arrival rates in inputs/s, comma-separated, instead "
        "of the rate search",
    )
    p.add_argument(
        "--open-inputs",
        type=int,
        default=24,
        help="measured Poisson arrivals per run at a fixed rate (--rate; default 24: small, for "
        "2-core machines), after --search-warmup warm-up arrivals or one SLO's worth",
    )
    search = p.add_argument_group("rate search (--load open without --rate, or search)")
    search.add_argument(
        "--search-arrivals",
        type=int,
        default=60,
        help="measured arrivals per trial, over its repeats (default 60; at least 59, the "
        "fewest with which a trial without a miss passes at 95%% confidence)",
    )
    search.add_argument(
        "--search-warmup",
        type=int,
        default=4,
        help="arrivals discarded at the start of every run (default 4)",
    )
    search.add_argument(
        "--search-rounds",
        type=int,
        default=2,
        help="an undecided trial is extended up to this many rounds of arrivals, then "
        "counts as a fail (default 2)",
    )
    search.add_argument(
        "--search-factor",
        type=float,
        default=1.25,
        help="bracketing: the rate is multiplied (or divided) by this until a trial fails "
        "(passes) (default 1.25: one step of --search-width, so no bisection is needed)",
    )
    search.add_argument(
        "--search-width",
        type=float,
        default=0.25,
        help="bisection stops when the first failing rate is within this share above the "
        "highest passing one (default 0.25)",
    )
    search.add_argument(
        "--search-start",
        type=float,
        help="the first rate tried, inputs/s (default: half the deployment's rate ceiling)",
    )
    p.add_argument(
        "--slo-factor",
        type=float,
        default=3.0,
        help="the SLO on p95: this times the asyncio reference's unloaded p50 (default 3)",
    )
    p.add_argument(
        "--slo-floor",
        type=float,
        default=0.05,
        help="the --slo-factor SLO is at least this many seconds (default 0.05: a tighter "
        "p95 bound on a shared machine measures its scheduler and garbage collector)",
    )
    p.add_argument("--slo", type=float, help="the SLO on p95 in seconds, instead")
    p.add_argument(
        "--no-sweep-stop",
        action="store_true",
        help="run every system at every rate (by default a system that missed the SLO at "
        "or past the moderate rate is not run at higher rates)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        help="repeats of every run, each its own Poisson realisation (default 3 for the rate "
        "search, whose verdicts pool them; 1 otherwise)",
    )
    p.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"systems to run, comma-separated (default the main ones: {','.join(SYSTEMS)}; "
        f"the controls: {','.join(CONTROL_SYSTEMS)})",
    )
    p.add_argument(
        "--controls",
        action="store_true",
        help="also run every control (Alto behind the balancer, with lineage off, without "
        "priority, without spans; the baselines with a client of their own over the replica "
        "URLs); those that change how a system reaches the LLM need an OpenAI-compatible "
        "LLM: --llm emulated, llama-server, llama-server-native or openai",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the Poisson schedules")
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds one measured run may take before it is cut off",
    )
    p.add_argument(
        "--docs-per-corpus", type=int, default=16, help="ingest: documents per root input (corpus)"
    )
    p.add_argument(
        "--out",
        default="bench-results",
        help="folder for results.json, report.md and the plots (default bench-results)",
    )
    p.add_argument("--trace", metavar="FILE", help="also write the timelines as a Chrome trace")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _numbers(text: str, kind: type, what: str) -> list[Any]:
    """The numbers of flag ``what``'s comma-separated ``text``, sorted, each once."""
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        msg = f"{what} must be comma-separated numbers, got {text!r}"
        raise BenchError(msg) from None
    if not values:  # no number at all: said with the text as given
        msg = f"{what} must be positive numbers, got {text!r}"
        raise BenchError(msg)
    return sorted(set(values))


AS_GIVEN = (
    "llm", "llm_url", "llm_model", "queries", "closed_inputs", "open_inputs", "slo_factor",
    "search_arrivals", "search_warmup", "search_rounds", "search_factor", "search_width",
    "search_start", "seed", "docs_per_corpus", "llm_concurrency", "llm_slots", "llm_threads",
    "emulator_mode", "deployment", "fanout", "alto_endpoint", "max_inflight", "order", "route",
)  # fmt: skip
"""The settings that :func:`settings_from` takes unchanged from the flag of the same name."""


def settings_from(args: argparse.Namespace) -> Settings:
    """The :class:`~alto.bench.settings.Settings` of the parsed arguments.

    They check their own values when made; they are returned once
    :func:`~alto.bench.settings.check_available` has found what they need on this machine.
    """
    apps = list(APPS) if args.app == "all" else [a.strip() for a in args.app.split(",")]
    load = args.load or {"poisson": "open", "closed": "closed"}.get(args.mode or "", "closed")
    if load == "open" and not args.rate:
        load = "search"
    named = [s.strip() for s in args.systems.split(",") if s.strip()]
    if args.controls and named:  # none named is an error, controls or not
        named += CONTROL_SYSTEMS
    # in the order of ALL_SYSTEMS, each once; the unknown ones as named, for Settings to name
    systems = [s for s in ALL_SYSTEMS if s in named] + [s for s in named if s not in ALL_SYSTEMS]
    emulator_config = args.emulator_config
    settings = Settings(
        apps=apps,
        embedder=args.embedder or ("hash" if args.llm in ("emulated", "fake") else "minilm"),
        load=load,
        concurrency=_numbers(args.concurrency, int, "--concurrency"),
        rates=_numbers(args.rate, float, "--rate") if args.rate else None,
        slo_s=args.slo,
        slo_floor_s=args.slo_floor,
        sweep_stop=not args.no_sweep_stop,
        repeats=args.repeats if args.repeats is not None else (3 if load == "search" else 1),
        systems=systems,
        timeout_s=args.timeout,
        config=args.config or None,
        emulator_config=_read_emulator_config(emulator_config) if emulator_config else None,
        **{name: getattr(args, name) for name in AS_GIVEN},
    )
    check_available(settings)
    return settings


def _read_emulator_config(text: str) -> str:
    """``--emulator-config``: the JSON text itself, or ``@file``'s."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            msg = f"cannot read the emulator config {text[1:]!r}: {exc}"
            raise BenchError(msg) from None
    return text


def run(args: argparse.Namespace) -> int:
    """``alto bench``: benchmark, then write the results, report and plots."""
    from alto.bench.environment import environment, one_blas_thread

    one_blas_thread()  # before numpy loads

    import anyio

    from alto.bench.runner import bench_app

    settings = settings_from(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    env = environment(settings)  # at the start: the commit that runs, the load it starts under
    apps: dict[str, Any] = {}
    failures: dict[str, str] = {}
    progress = not args.no_progress
    if len(settings.apps) == 1:
        name = settings.apps[0]
        apps[name] = anyio.run(lambda: bench_app(name, settings, progress=progress))
    else:
        for name in settings.apps:
            result = _in_subprocess(name, settings, progress)
            if "error" in result:
                failures[name] = result["error"]
            else:
                apps[name] = result
    results = {
        "schema": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 3),
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "settings": settings.as_dict(),
        "environment": env,
        "apps": apps,
        "failures": failures,
    }
    written = write_outputs(results, out, trace=args.trace)
    for name in apps:
        print(_headline(name, apps[name]))
    for name, error in failures.items():
        print(f"{name}: FAILED: {error}", file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in written[:2])} and {len(written) - 2} more files")
    if args.load is None and args.mode is None:
        print(full_method_hint(settings))
    return 1 if failures else 0


def full_method_hint(settings: Any) -> str:
    """What the quick default measured, and the command for the full method."""
    apps = ",".join(settings.apps) if len(settings.apps) < len(APPS) else "all"
    return (
        f"This was the quick comparison: closed loop at concurrency "
        f"{','.join(map(str, settings.concurrency))}, {settings.closed_inputs} submissions "
        "per level, one repeat. The full method (per system the highest Poisson rate whose "
        "p95 meets the SLO at 95% confidence, 3 repeats; see docs/benchmarks/README.md):\n"
        f"  alto bench {apps} --load open --deployment rr4 --out bench-open"
    )


def write_outputs(results: dict[str, Any], out: Path, *, trace: str | None = None) -> list[Path]:
    """``results.json``, ``report.md``, the PNGs (and the Chrome trace) into ``out``."""
    from alto.bench import plots, report
    from alto.bench.chrome import write_chrome_trace
    from alto.bench.summary import summarize_app

    out.mkdir(parents=True, exist_ok=True)
    for app in results["apps"].values():
        app["summary"] = summarize_app(app)
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=1, allow_nan=False))
    text = report.render(results)
    if results.get("failures"):
        text += (
            "\n## Apps that failed\n\n"
            + "\n".join(f"- {name}: {error}" for name, error in results["failures"].items())
            + "\n"
        )
    (out / "report.md").write_text(text)
    written = [path, out / "report.md", *plots.write_all(results, out)]
    if trace:
        written.append(write_chrome_trace(results, trace))
    return written


def _in_subprocess(name: str, settings: Any, progress: bool) -> dict[str, Any]:
    """Benchmark one app in a fresh Python process; its raw result (or ``{"error": ...}``)."""
    with tempfile.TemporaryDirectory(prefix="alto-bench-") as tmp:
        raw = Path(tmp) / f"{name}.json"
        cmd = [
            sys.executable,
            "-m",
            "alto.bench",
            name,
            "--settings",
            json.dumps(settings.as_dict()),
            "--raw",
            str(raw),
        ]
        if not progress:
            cmd.append("--no-progress")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        if raw.is_file():
            result: dict[str, Any] = json.loads(raw.read_text())
            return result
        return {
            "error": f"the benchmark process exited with status {proc.returncode} "
            f"and no result: {proc.stdout.strip()[-500:]}"
        }


def _headline(name: str, app: dict[str, Any]) -> str:
    from alto.bench.summary import BOUND, slo_table

    tag = " (timing emulation)" if app.get("timing_emulation") else ""
    rows = app.get("summary", [])
    from alto.bench.summary import search_table

    searched = search_table(app)
    if searched:
        parts = [
            f"{r['system']} " + ("none" if r["best_rate"] is None else f"{r['best_rate']:g}/s")
            for r in searched
        ]
        return f"{name}{tag}: highest rate with p95 surely under the SLO: " + "; ".join(parts)
    slo = slo_table(app, rows)
    if slo:
        parts = [
            f"{r['system']} " + ("none" if r["max_rate"] is None else f"{r['max_rate']:g}/s")
            for r in slo
        ]
        return f"{name}{tag}: highest rate with p95 under the SLO: " + "; ".join(parts)
    top = max((r["level"] for r in rows), default=None)
    parts = []
    for r in rows:
        if r["level"] == top and r["system"] != BOUND and r["p50_s"] is not None:
            parts.append(f"{r['system']} p50 {r['p50_s']:.3f}s")
    return f"{name}{tag} at the highest load: " + "; ".join(parts)
