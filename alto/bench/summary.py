"""From raw samples to the figures the report shows: per system and load level.

Latency percentiles pool every completed root input of every repeat; time to first output
and throughput are per run, and the report shows their median over repeats. Ratios are
each system's figure divided by Alto's at the same load level.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from alto.bench.stats import finite, percentile, ratio, summarize
from alto.bench.systems import ALTO

BOUND = "lower bound"
"""The name of the critical-path lower bound's row, beside the systems."""


def _median(values: list[float]) -> float:
    return percentile(values, 50) if values else math.nan


def summarize_app(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (load level, system) of an app's runs, plus the lower bound per level.

    Each row: ``level``, ``system``, ``runs``, ``n`` (completed samples), ``p50_s``,
    ``p95_s``, ``mean_s``, ``first_output_s`` (median over runs), ``first_fragment_p50_s``,
    ``throughput`` (median over runs) with ``throughput_min``/``throughput_max``, ``failed``,
    ``mismatched``, and ratios to Alto: ``p50_vs_alto``, ``p95_vs_alto``,
    ``throughput_vs_alto``. NaN figures are None.
    """
    groups: dict[tuple[float, str], list[dict[str, Any]]] = defaultdict(list)
    for run in result.get("runs", []):
        groups[(run["level"], run["system"])].append(run)
    order = {s: i for i, s in enumerate(result.get("systems", []))}
    rows: list[dict[str, Any]] = []
    for (level, system), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))
    ):
        latencies = [
            s["latency_s"]
            for r in runs
            for s in r["samples"]
            if s["error"] is None and s["latency_s"] is not None
        ]
        fragments = [
            s["first_fragment_s"]
            for r in runs
            for s in r["samples"]
            if s["error"] is None and s["first_fragment_s"] is not None
        ]
        throughputs = [r["throughput"] for r in runs if r["throughput"] is not None]
        stats = summarize(latencies)
        rows.append(
            {
                "level": level,
                "system": system,
                "runs": len(runs),
                "n": stats["n"],
                "p50_s": stats["p50"],
                "p95_s": stats["p95"],
                "mean_s": stats["mean"],
                "first_output_s": _median(
                    [r["first_output_s"] for r in runs if r["first_output_s"] is not None]
                ),
                "first_fragment_p50_s": percentile(fragments, 50) if fragments else math.nan,
                "throughput": _median(throughputs),
                "throughput_min": min(throughputs) if throughputs else math.nan,
                "throughput_max": max(throughputs) if throughputs else math.nan,
                "failed": sum(r["failed"] for r in runs),
                "mismatched": sum(r["mismatched"] for r in runs),
            }
        )
    bounds = [q["bound_s"] for q in result.get("bound", {}).get("queries", []) if "bound_s" in q]
    levels = sorted({row["level"] for row in rows})
    if bounds:
        for level in levels:
            rows.append(
                {
                    "level": level,
                    "system": BOUND,
                    "runs": 0,
                    "n": len(bounds),
                    "p50_s": percentile(bounds, 50),
                    "p95_s": percentile(bounds, 95),
                    "mean_s": sum(bounds) / len(bounds),
                    "first_output_s": math.nan,
                    "first_fragment_p50_s": math.nan,
                    "throughput": math.nan,
                    "throughput_min": math.nan,
                    "throughput_max": math.nan,
                    "failed": 0,
                    "mismatched": 0,
                }
            )
    alto = {row["level"]: row for row in rows if row["system"] == ALTO}
    for row in rows:
        base = alto.get(row["level"])
        row["p50_vs_alto"] = ratio(row["p50_s"], base["p50_s"]) if base else math.nan
        row["p95_vs_alto"] = ratio(row["p95_s"], base["p95_s"]) if base else math.nan
        row["throughput_vs_alto"] = (
            ratio(row["throughput"], base["throughput"]) if base else math.nan
        )
    rows.sort(
        key=lambda r: (r["level"], order.get(r["system"], 98 if r["system"] == BOUND else 99))
    )
    return [{k: (finite(v) if isinstance(v, float) else v) for k, v in row.items()} for row in rows]
