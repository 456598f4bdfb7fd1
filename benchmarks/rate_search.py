"""Regenerate every emulated rate-search report, controls included, in one go.

What runs, in this order (the comparisons that matter most first):

1. each LLM app (factcheck, multihop, summarize) on ``ll4`` (4 emulated replicas behind
   least-loaded) with every main system; factcheck also with the controls
   (``alto bench --controls``: what each ingredient buys);
2. ingest (no LLM calls: one report, on ``single``) with every main system;
3. factcheck and summarize on ``single`` (one loaded server), then summarize on ``prefix4``
   (4 replicas behind SGLang router's cache-aware policy), each with Alto, the asyncio
   reference and the LangGraph version whose rate was highest on ``ll4`` (a tie goes to the
   version listed first: flat, subgraph, functional);
4. the best-against-best table over all of them (``python -m alto.bench.headline``).

What is cut to fit 90 minutes on 2 cores, and why (measured: factcheck on ``ll4`` with the 7
controls 9 minutes, multihop on ``ll4`` 20, summarize on ``single`` 26; every report is
listed with its time in ``timings.json``):

* ``rr4``: on factcheck it tied ``ll4`` for every system within one step of the search's
  grid, least-loaded is the stronger of the two for the systems behind a balancer, and Alto
  is given the replica URLs, so its runs on ``rr4`` and ``ll4`` are the same deployment;
* ``prefix4`` for factcheck and multihop: on factcheck it was below ``ll4`` for every
  system (the first search, commit 5d556a1), and the cache-aware policy matters where calls
  share long prompt prefixes, summarize's map calls;
* multihop on ``single``: on ``ll4`` every multihop trial found the bench process above 90%
  of a core (its hashing embedder and retrieval), so this machine, not the servers, bounds
  multihop, and a run on one server would not have fit;
* on ``single`` and ``prefix4`` the two LangGraph versions that were slower on ``ll4``.

With every deployment and every system the set takes about 3 hours.

Each ``alto bench`` runs in its own process. ``timings.json`` beside the reports gets each
command's wall time and commit as it ends, with the machine; ``--resume`` skips the reports
already written (their times kept), so an interrupted set can be finished, or one report
redone after deleting its ``results.json`` (its entry is replaced).

Usage: python benchmarks/rate_search.py [--out docs/benchmarks/search] [--apps ...]
       [--resume] [--dry-run]
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


EXTRA = (("factcheck", "single"), ("summarize", "single"), ("summarize", "prefix4"))
"""Reports with three systems, after every ``ll4`` report and ingest, in this order."""


class Log:
    """Each command's wall time, written to ``timings.json`` as each ends (kept on resume)."""

    def __init__(self, path: Path, *, dry: bool, resume: bool) -> None:
        self.path, self.dry = path, dry
        held = json.loads(path.read_text()) if resume and path.exists() else {}
        self.commands: list[dict[str, Any]] = held.get("commands", [])
        for held_command in self.commands:  # a set made before commits were kept per command
            held_command.setdefault("commit", held.get("commit"))

    def run(self, cmd: list[str]) -> None:
        """Run one command, recording its wall time; stop the whole set if it fails."""
        print("+", shlex.join(cmd), flush=True)
        if self.dry:
            return
        start = time.monotonic()
        done = subprocess.run(cmd, check=False)
        wall = round(time.monotonic() - start, 1)
        line = shlex.join(cmd)
        self.commands = [c for c in self.commands if c["command"] != line]  # a report redone
        self.commands.append(
            {"command": line, "wall_s": wall, "returncode": done.returncode, "commit": commit()}
        )
        self.save()
        print(f"  {wall:.0f} s, exit {done.returncode}", flush=True)
        if done.returncode:
            msg = f"{shlex.join(cmd)} failed with exit code {done.returncode}"
            raise SystemExit(msg)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "commit": ", ".join(dict.fromkeys(c["commit"] for c in self.commands)),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}",
            "total_s": round(sum(c["wall_s"] for c in self.commands), 1),
            "commands": self.commands,
        }
        self.path.write_text(json.dumps(record, indent=2) + "\n")


def headline(log: Log, out: Path) -> None:
    """Write ``headline.md``: the best-against-best table over every report under ``out``."""
    reports = sorted(str(p) for p in out.glob("*/*/results.json"))
    log.run(
        [sys.executable, "-m", "alto.bench.headline", *reports, "--out", str(out / "headline.md")]
    )


def commit() -> str:
    """The commit the reports are made at (with ``+dirty`` when ``alto/`` has changes)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "alto"], capture_output=True)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/search"))
    p.add_argument("--apps", nargs="+", default=[*LLM_APPS, "ingest"])
    p.add_argument("--resume", action="store_true", help="skip reports already written")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    out: Path = args.out
    log = Log(out / "timings.json", dry=args.dry_run, resume=args.resume)

    def report(app: str, deployment: str, *extra: str) -> None:
        if args.resume and (out / app / deployment / "results.json").exists():
            print(f"= {app} on {deployment}: written already", flush=True)
            return
        log.run(bench(app, deployment, out, *extra))

    llm_apps = [a for a in LLM_APPS if a in args.apps]
    for app in llm_apps:
        trace = ["--trace", str(out / app / "ll4" / "trace.json")]
        report(app, "ll4", *trace, *(["--controls"] if app == "factcheck" else []))
    if "ingest" in args.apps:
        report("ingest", "single")
    for app, deployment in EXTRA:
        if app not in llm_apps:
            continue
        version = (
            LANGGRAPH[0]
            if args.dry_run
            else best_langgraph(out / app / "ll4" / "results.json", app)
        )
        report(app, deployment, "--systems", ",".join([ALTO, version, REFERENCE]))
    headline(log, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
