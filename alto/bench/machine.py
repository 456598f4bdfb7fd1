"""The machine's load during a benchmark run, and when a run counts as *saturated*.

On a shared 2-core machine a run's latencies can measure the machine rather than the system
under test: the bench process's event loop (which submits, times and serves every system)
may have no slack left, or the emulator's paced steps may run late. Each run records the
bench process's CPU time over its wall time, the emulator child's (read from
``/proc/<pid>/stat``, no extra dependency), the 1-minute load average, and the emulator's
step lag (``/stats``' ``step_lag``, per replica); :func:`saturation` says whether those
crossed the stated thresholds.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

BENCH_CPU_SATURATED = 0.9
"""A trial is *saturated* when the bench process used more than this share of one core over
the trial (its event loop, which times every system, had no slack left) ..."""
LAG_SATURATED = 0.05
"""... or when the emulator's step lag (p95 over the trial's steps) exceeded this share of
the SLO (its modeled clock slipped behind the wall clock by a visible part of the target)."""


def saturation(
    cpu: dict[str, Any], lag: dict[str, Any] | None, slo_s: float, *, cpu_is_work: bool = False
) -> list[str]:
    """Why a trial counts as saturated (empty: it does not).

    ``cpu_is_work``: the systems' own CPU work is what the run measures (an app without model
    calls, such as ingest, whose capacity *is* how much CPU each input costs), so a busy
    bench process is the finding, not a fault of the machine; only the emulator's lag counts.
    """
    why = []
    share = cpu.get("bench_cpu_share")
    if not cpu_is_work and share is not None and share > BENCH_CPU_SATURATED:
        why.append(f"bench process at {share:.0%} of a core")
    p95 = (lag or {}).get("p95_s")
    if p95 is not None and slo_s > 0 and p95 > LAG_SATURATED * slo_s:
        why.append(f"emulator steps late by {p95 * 1000:.0f} ms (p95)")
    return why


def lag_delta(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The emulator's step lag over one run, all replicas together, from two ``/stats`` reads.

    Steps, mean, p95 (the upper bound of the histogram bucket holding it; None when in the
    open last bucket) and the largest bucket reached. None when not reported.
    """
    if not after or any("step_lag" not in r for r in after):
        return None
    bounds = after[0]["step_lag"]["bucket_bounds_s"]
    counts = [0] * len(bounds)
    steps, total = 0, 0.0
    for b, a in zip(before, after, strict=True):
        x, y = b.get("step_lag") or {}, a["step_lag"]
        steps += y["steps"] - x.get("steps", 0)
        total += y["sum_s"] - x.get("sum_s", 0.0)
        old = x.get("bucket_counts") or [0] * len(bounds)
        for i, (c0, c1) in enumerate(zip(old, y["bucket_counts"], strict=True)):
            counts[i] += c1 - c0
    if not steps:
        return {"steps": 0, "mean_s": None, "p95_s": None, "max_bucket_s": None}
    rank, seen, p95 = math.ceil(0.95 * steps), 0, None
    for bound, count in zip(bounds, counts, strict=True):
        seen += count
        if seen >= rank:
            p95 = bound
            break
    reached = [b for b, c in zip(bounds, counts, strict=True) if c]
    return {
        "steps": steps,
        "mean_s": round(total / steps, 6),
        "p95_s": p95,
        "max_bucket_s": reached[-1] if reached else None,
    }


@dataclass
class CpuClock:
    """CPU use over one run.

    This process's CPU time over wall time, the emulator child's (from ``/proc/<pid>/stat``,
    where there is one), and the load average.
    """

    started: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)
    child: tuple[int, float] | None = field(default_factory=lambda: _emulator_cpu())

    def finish(self) -> dict[str, Any]:
        """The CPU use since the clock was made, as a dict for JSON.

        ``wall_s``: the seconds since; ``bench_cpu_share``: this process's CPU seconds per
        wall second; ``emulator_cpu_share``: the emulator child's, where the same child ran
        throughout (else None); ``load_average_1m``: the 1-minute load average, where the
        platform has one.
        """
        wall = time.perf_counter() - self.started
        share = (time.process_time() - self.cpu) / wall if wall > 0 else None
        child = _emulator_cpu()
        emulator = None
        if child and self.child and child[0] == self.child[0] and wall > 0:
            emulator = round((child[1] - self.child[1]) / wall, 3)
        return {
            "wall_s": round(wall, 3),
            "bench_cpu_share": None if share is None else round(share, 3),
            "emulator_cpu_share": emulator,
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        }


def _emulator_cpu() -> tuple[int, float] | None:
    """(pid, CPU seconds) of this process's emulator child, or None.

    None when there is no ``/proc`` or no child: the emulator runs in a thread, or
    elsewhere.
    """
    pid = os.getpid()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        kids = []
        for task in tasks:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(x) for x in f.read().split()]
        for kid in kids:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                if b"alto.bench.emulator" not in f.read():
                    continue
            with open(f"/proc/{kid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            return kid, (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    except (OSError, ValueError, IndexError):
        return None
    return None
