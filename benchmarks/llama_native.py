"""The report on llama.cpp's own server: factcheck and summarize on one 4-slot server and on
two 2-slot servers, and the table over both.

Each deployment is one ``alto bench`` (its own process; the bench starts the
``llama-server`` processes on loopback with the embedded SmolLM2-135M and stops them), in
this order:

* ``single``: one server, 4 slots decoded in one batch, 2 threads;
* ``rr2``: two servers of 2 slots and 1 thread each, behind the round-robin balancer proxy
  (which the systems without a client of their own call; Alto's client gets both URLs).

Closed loop at 4 inputs in flight (every slot of the deployment busy: the loaded server),
37 submissions per system, so that 30 are measured in the steady-state window (the first
2 x 4 - 1 are the ramp), over 16 distinct inputs (each timed alone once through the asyncio
reference, which the report's expected outputs and SLO come from). Systems: on ``single``,
Alto, the asyncio reference and LangGraph's functional version (the LangGraph version with
the highest rate on factcheck in the emulated rate search; on summarize the three tied); on
``rr2``, Alto and the asyncio reference.

What is cut to fit the machine, and why: a run of 37 inputs takes about 7 minutes per
system on factcheck and 10 on summarize on 2 cores (SmolLM2 evaluates about 2,200 prompt
tokens and writes about 200 per factcheck input), so ``single`` takes about 60 minutes with
three systems. The closed loop at 2 in flight, the two other LangGraph versions, and
LangGraph on ``rr2`` would each add as much again; all are flags (``--concurrency 2,4``,
``--systems ...``).

``timings.json`` gets each deployment's wall time as it ends; ``summary.md`` the table over
both deployments (``--summary-only`` rewrites it from the results already there).

Usage: python benchmarks/llama_native.py [--out docs/benchmarks/llama-server-native]
       [--deployments single,rr2] [--concurrency 4] [--closed-inputs 37] [--queries 16]
       [--systems SYSTEMS] [--summary-only]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ALTO_CLI = shutil.which("alto", path=str(Path(sys.executable).parent)) or "alto"
APPS = ("factcheck", "summarize")
SYSTEMS = {
    "single": "alto,asyncio-reference,langgraph-functional",
    "rr2": "alto,asyncio-reference",
}
"""The systems per deployment (``--systems`` gives one list for every deployment)."""


def command(args: argparse.Namespace, deployment: str) -> list[str]:
    out = Path(args.out) / deployment
    return [
        ALTO_CLI, "bench", ",".join(APPS), "--llm", "llama-server-native",
        "--deployment", deployment, "--concurrency", args.concurrency,
        "--closed-inputs", str(args.closed_inputs), "--queries", str(args.queries),
        "--systems", args.systems or SYSTEMS.get(deployment, SYSTEMS["single"]),
        "--out", str(out), "--trace", str(out / "trace.json"),
    ]  # fmt: skip


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def interval(ci: list[float | None], digits: int = 2) -> str:
    low, high = ci
    return "" if low is None or high is None else f" [{low:.{digits}f}, {high:.{digits}f}]"


def ratio(row: dict[str, Any], key: str) -> str:
    """Another system's latency ``key`` over Alto's, its interval and what it says."""
    value = row.get(f"{key}_vs_alto")
    if row["system"] == "alto" or value is None:
        return "–"
    ci = row.get(f"{key}_vs_alto_ci") or [None, None]
    if row.get(f"{key}_vs_alto_parity"):
        said = "parity"
    else:
        said = "Alto lower" if value > 1 else "Alto higher"
    return f"{value:.2f}x{interval(ci)} {said}"


def summary(out: Path, deployments: list[str]) -> str:
    """The table over every deployment's results.json under ``out``."""
    lines = [
        "| app | deployment | system | n | failed | p50 (s) | p50 / Alto | p95 (s) | "
        "p95 / Alto | throughput /s | evaluated tokens / input | cached |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    commits = set()
    for deployment in deployments:
        path = out / deployment / "results.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        commits.add(str(results["environment"].get("git_commit", "?"))[:7])
        for app in APPS:
            if app not in results["apps"]:
                continue
            for row in results["apps"][app]["summary"]:
                done = row["submitted"] - row["failed"]
                evaluated = (
                    (row["prompt_tokens"] - row["cached_tokens"]) / done
                    if row.get("prompt_tokens") and done
                    else None
                )
                lines.append(
                    f"| {app} | `{deployment}` | {row['system']} | {row['n']} | "
                    f"{row['failed']} | {fmt(row['p50_s'])}{interval(row['p50_ci'])} | "
                    f"{ratio(row, 'p50')} | {fmt(row['p95_s'])}{interval(row['p95_ci'])} | "
                    f"{ratio(row, 'p95')} | {fmt(row['throughput'], 3)}"
                    f"{interval(row['throughput_ci'], 3)} | {fmt(evaluated, 0)} | "
                    f"{fmt(100 * row['cached_share'], 0)}% |"
                )
    head = (
        f"Closed loop at 4 inputs in flight; commit {', '.join(sorted(commits))}. *n*: the "
        "inputs completed in the steady-state window, whose latencies the table gives; "
        "*failed*: inputs of all those submitted that ended in an error. Brackets: bootstrap 95% "
        "intervals; a ratio whose interval holds 1 is parity. *evaluated tokens / input*: "
        "prompt tokens the servers evaluated (received minus taken from a slot's cache, from "
        "their own `/metrics`) per completed input, failed inputs' calls included; *cached*: "
        "the share of prompt tokens taken from a slot's cache.\n\n"
    )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/benchmarks/llama-server-native")
    parser.add_argument("--deployments", default="single,rr2")
    parser.add_argument("--concurrency", default="4")
    parser.add_argument("--closed-inputs", type=int, default=37)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--systems", default=None)
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    deployments = args.deployments.split(",")
    if not args.summary_only:
        out.mkdir(parents=True, exist_ok=True)
        timings: dict[str, Any] = {"machine": platform.platform(), "runs": {}}
        for deployment in deployments:
            cmd = command(args, deployment)
            print("$", " ".join(cmd), flush=True)
            started = time.perf_counter()
            subprocess.run(cmd, check=True)
            timings["runs"][deployment] = {
                "command": " ".join(cmd[1:]),
                "seconds": round(time.perf_counter() - started, 1),
            }
            (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    (out / "summary.md").write_text(summary(out, deployments))
    print(f"wrote {out / 'summary.md'}")


if __name__ == "__main__":
    main()
