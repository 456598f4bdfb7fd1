"""Regenerate every emulated rate-search report, controls included, in one go.

What runs, in this order (so that the comparisons that matter most come first):

1. each LLM app (factcheck, multihop, summarize) on ``ll4`` (4 emulated replicas behind
   least-loaded) with every main system; factcheck also with the controls
   (``alto bench --controls``: what each ingredient buys);
2. ingest (no LLM calls: one report, on ``single``) with every main system;
3. each LLM app on ``single`` (one loaded server) and on ``prefix4`` (4 replicas behind
   SGLang router's cache-aware policy) with Alto, the asyncio reference and the LangGraph
   version whose rate was highest on ``ll4`` (a tie goes to the version listed first in
   ``alto.bench.systems.SYSTEMS``);
4. the best-against-best table over all of them (``python -m alto.bench.headline``).

What is cut to fit 90 minutes on 2 cores, and why: ``rr4`` (on factcheck it tied ``ll4``
for every system within one step of the search's grid, and least-loaded is the stronger of
the two for the systems that sit behind a balancer; Alto is given the replica URLs, so its
runs on ``rr4`` and ``ll4`` are the same deployment), and on ``single`` and ``prefix4`` the
two LangGraph versions that were slower on ``ll4``. With every deployment and every system
the set takes about 2.5 hours.

Each ``alto bench`` runs in its own process; the wall time of each, the commit and the
machine go to ``timings.json`` beside the reports.

Usage: python benchmarks/rate_search.py [--out docs/benchmarks/search] [--apps ...]
       [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LLM_APPS = ("factcheck", "multihop", "summarize")
ALTO_CLI = shutil.which("alto", path=str(Path(sys.executable).parent)) or "alto"
"""The ``alto`` command of this interpreter's environment (else the one on ``PATH``)."""
ALTO, REFERENCE = "alto", "asyncio-reference"
LANGGRAPH = ("langgraph-flat", "langgraph-subgraph", "langgraph-functional")


def bench(app: str, deployment: str, out: Path, *extra: str) -> list[str]:
    """The ``alto bench`` command line of one report."""
    where = out / app / deployment
    return [
        ALTO_CLI, "bench", app, "--llm", "emulated", "--deployment",
        deployment, "--load", "open", "--out", str(where), "--no-progress", *extra,
    ]  # fmt: skip


def best_langgraph(results: Path, app: str) -> str:
    """The LangGraph version with the highest rate under the SLO in one report."""
    search = json.loads(results.read_text())["apps"][app]["sweep"]["search"]["systems"]

    def rank(name: str) -> tuple[float, float]:
        row = search.get(name) or {}
        return (row.get("best_rate") or 0.0, row.get("first_fail") or 0.0)

    return max(LANGGRAPH, key=lambda name: (rank(name), -LANGGRAPH.index(name)))


def run(cmd: list[str], log: list[dict[str, Any]], dry: bool) -> None:
    """Run one command, recording its wall time; stop the whole set if it fails."""
    print("+", shlex.join(cmd), flush=True)
    if dry:
        return
    start = time.monotonic()
    done = subprocess.run(cmd, check=False)
    wall = round(time.monotonic() - start, 1)
    log.append({"command": shlex.join(cmd), "wall_s": wall, "returncode": done.returncode})
    print(f"  {wall:.0f} s, exit {done.returncode}", flush=True)
    if done.returncode:
        raise SystemExit(f"{shlex.join(cmd)} failed with exit code {done.returncode}")


def commit() -> str:
    """The commit the reports are made at (with ``+dirty`` when the tree has changes)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "alto"], capture_output=True)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/search"))
    p.add_argument("--apps", nargs="+", default=[*LLM_APPS, "ingest"])
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    out: Path = args.out
    log: list[dict[str, Any]] = []
    started = time.monotonic()
    llm_apps = [a for a in args.apps if a in LLM_APPS]
    for app in llm_apps:
        extra = ["--trace", str(out / app / "ll4" / "trace.json")]
        run(
            bench(app, "ll4", out, *extra, *(["--controls"] if app == "factcheck" else [])),
            log,
            args.dry_run,
        )
    if "ingest" in args.apps:
        run(bench("ingest", "single", out), log, args.dry_run)
    for deployment in ("single", "prefix4"):
        for app in llm_apps:
            version = (
                "langgraph-functional"
                if args.dry_run
                else best_langgraph(out / app / "ll4" / "results.json", app)
            )
            systems = ",".join([ALTO, version, REFERENCE])
            run(bench(app, deployment, out, "--systems", systems), log, args.dry_run)
    reports = sorted(str(p) for p in out.glob("*/*/results.json"))
    run([sys.executable, "-m", "alto.bench.headline", *reports, "--out", str(out / "headline.md")],
        log, args.dry_run)  # fmt: skip
    if not args.dry_run:
        (out / "timings.json").write_text(
            json.dumps(
                {
                    "commit": commit(),
                    "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
                    f"Python {platform.python_version()}",
                    "total_s": round(time.monotonic() - started, 1),
                    "commands": log,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
