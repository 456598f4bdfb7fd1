"""p95 under load: every system at 80% and 90% of the asyncio reference's highest rate under
the SLO, on the deployments of the rate search, at equal offered load.

The rate search (``benchmarks/rate_search.py``) says how fast each system can go; this says
how well each serves a load the reference can carry. For each report named in ``--reports``
it reads, from the search's ``results.json``, the reference's highest passing rate *R*, the
SLO and the systems it ran, then runs ``alto bench APP --load open --rate 0.8R,0.9R`` with
Alto, the asyncio reference and the LangGraph version with the highest rate in that report,
at the search's SLO, every system at both rates (``--no-sweep-stop``), each run its own
Poisson realisation with its warm-up arrivals discarded. ``summary.md`` gives per app,
deployment and rate each system's p95 and p50 with intervals and its p95 and throughput over
Alto's (parity where the interval holds 1).

By default it runs the one-server reports (``single``), where every system shares one
loaded server and only the order of the calls can differ, and ingest's (it makes no LLM
calls, so it has one deployment), where the event loop's CPU is what is loaded. A run
measures at least ``--inputs`` arrivals and at least ``--seconds`` of them (at ingest's
hundreds per second, 60 arrivals would be a burst of a quarter second, not a steady state).
What is cut to fit a 2-core machine, and why: the replica deployments (``--reports
factcheck:ll4 ...`` runs them; the search's own reports give every system's p95 at each rate it
tried there); the two LangGraph versions slower in the search (the search already separates
them); and summarize on ``single`` runs fewer arrivals in fewer repeats (``--slow-inputs``,
``--slow-repeats``), its rates being below one input per second.

Usage: python benchmarks/loaded.py [--search docs/benchmarks/search]
       [--out docs/benchmarks/loaded] [--reports factcheck:single ...] [--summary-only]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ALTO_CLI = shutil.which("alto", path=str(Path(sys.executable).parent)) or "alto"
REPORTS = ("factcheck:single", "summarize:single", "ingest:single")
LOADS = (0.8, 0.9)
MAIN = ("alto", "asyncio-reference")
LANGGRAPH = ("langgraph-flat", "langgraph-subgraph", "langgraph-functional")


def searched(search: Path, app: str, deployment: str) -> dict[str, Any]:
    """What the rate search found for one report: the reference's rate, the SLO, and the
    LangGraph version with the highest rate there (a tie goes to the one listed first)."""
    found = json.loads((search / app / deployment / "results.json").read_text())["apps"][app]
    systems = found["sweep"]["search"]["systems"]
    ran = [v for v in LANGGRAPH if v in systems]

    def rank(name: str) -> tuple[float, float, int]:
        row = systems[name]
        return (row["best_rate"] or 0.0, row["first_fail"] or 0.0, -LANGGRAPH.index(name))

    return {
        "reference_rate": systems["asyncio-reference"]["best_rate"],
        "slo_s": found["sweep"]["slo_s"],
        "langgraph": max(ran, key=rank) if ran else None,
    }


def command(app: str, deployment: str, found: dict[str, Any], out: Path,
            inputs: int, repeats: int, seconds: float = 0.0) -> list[str]:
    """The ``alto bench`` command of one report: at least ``inputs`` measured arrivals per
    run, and at least ``seconds`` of them at the lower rate."""
    rates = [round(found["reference_rate"] * load, 4) for load in LOADS]
    inputs = max(inputs, math.ceil(seconds * min(rates)))
    systems = [MAIN[0], *([found["langgraph"]] if found["langgraph"] else []), MAIN[1]]
    return [
        ALTO_CLI, "bench", app, "--llm", "emulated", "--deployment", deployment,
        "--load", "open", "--rate", ",".join(f"{r:g}" for r in rates),
        "--open-inputs", str(inputs), "--repeats", str(repeats),
        "--slo", f"{found['slo_s']:.6g}", "--no-sweep-stop",
        "--systems", ",".join(systems), "--out", str(out / app / deployment), "--no-progress",
    ]  # fmt: skip


def verdict(ci: list[float] | None) -> str:
    """What a ratio other / Alto with interval ``ci`` says of Alto's figure."""
    if not ci:
        return ""
    lo, hi = ci
    if lo <= 1.0 <= hi:
        return "parity"
    return "Alto lower" if lo > 1.0 else "Alto higher"


def summary(out: Path, reports: list[tuple[str, str]], search: Path) -> str:
    lines = [
        "| app | deployment | rate /s (share of the reference's highest) | system | n | p50 (s) "
        "| p95 (s) | p95 / Alto | throughput / Alto |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for app, deployment in reports:
        path = out / app / deployment / "results.json"
        if not path.exists():
            continue
        ref = searched(search, app, deployment)["reference_rate"]
        rows = json.loads(path.read_text())["apps"][app]["summary"]
        order = {s: i for i, s in enumerate(["alto", *LANGGRAPH, "asyncio-reference"])}
        for r in sorted(rows, key=lambda r: (r["level"], order.get(r["system"], 9))):
            p95 = f"{r['p95_s']:.3f} [{r['p95_ci'][0]:.3f}, {r['p95_ci'][1]:.3f}]"
            if r["system"] == "alto":
                rel = tp = "–"
            else:
                ci = r["p95_vs_alto_ci"]
                rel = (f"{r['p95_vs_alto']:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}] "
                       f"{verdict(ci)}")
                tci = r["throughput_vs_alto_ci"]
                tp = (f"{r['throughput_vs_alto']:.2f}x [{tci[0]:.2f}, {tci[1]:.2f}] "
                      f"{verdict(tci)}")
            lines.append(
                f"| {app} | {deployment} | {r['level']:g} ({r['level'] / ref:.0%}) | "
                f"{r['system']} | {r['n']} | {r['p50_s']:.3f} | {p95} | {rel} | {tp} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--search", type=Path, default=Path("docs/benchmarks/search"))
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/loaded"))
    p.add_argument("--reports", nargs="+", default=list(REPORTS), help="APP:DEPLOYMENT ...")
    p.add_argument("--inputs", type=int, default=60, help="measured arrivals per run")
    p.add_argument("--slow-inputs", type=int, default=30,
                   help="measured arrivals per run where the reference's rate is below 1/s")
    p.add_argument("--seconds", type=float, default=5.0,
                   help="at least this many seconds of measured arrivals per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--slow-repeats", type=int, default=2,
                   help="repeats where the reference's rate is below 1/s")
    p.add_argument("--summary-only", action="store_true", help="rewrite summary.md only")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    reports = [tuple(r.split(":", 1)) for r in args.reports]
    timings: dict[str, float] = {}
    if not args.summary_only:
        for app, deployment in reports:
            found = searched(args.search, app, deployment)
            slow = found["reference_rate"] < 1.0
            cmd = command(app, deployment, found, args.out,
                          args.slow_inputs if slow else args.inputs,
                          args.slow_repeats if slow else args.repeats, args.seconds)
            print("$", " ".join(cmd), flush=True)
            if args.dry_run:
                continue
            t0 = time.monotonic()
            subprocess.run(cmd, check=True)
            timings[f"{app}:{deployment}"] = round(time.monotonic() - t0, 1)
            print(f"  {timings[f'{app}:{deployment}']:.0f} s", flush=True)
        if args.dry_run:
            return 0
        (args.out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    (args.out / "summary.md").write_text(summary(args.out, reports, args.search))
    print((args.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
