"""From raw samples to the figures the report shows: per system and load level.

Latency percentiles pool the measured samples (those submitted inside each run's window:
a closed loop's steady state, an open loop's whole run) of every repeat. Throughput is one
over the mean gap between successive completions inside the runs' windows (pooled), so its
point value and its interval come from the same numbers. Every p50, p95,
throughput and ratio carries a bootstrap 95% interval (:mod:`alto.bench.stats`); a ratio
whose interval holds 1 is *parity*. Ratios divide each system's figure by Alto's at the
same load level.

Per app, an open-loop sweep also gets its SLO table: per system, the highest offered rate
whose p95 stays under the SLO, with the interval its p95 intervals allow; a rate search
(:mod:`alto.bench.search`) gets its own: per system the highest rate that passed, the first
that failed, the spread over repeats, and its ratio to Alto's, *parity* where the two
systems' rate intervals overlap.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from alto.bench.stats import (
    bootstrap_interval,
    finite,
    max_rate_under_slo,
    parity,
    percentile,
    percentile_interval,
    ratio,
    ratio_interval,
)
from alto.bench.systems import ALTO

BOUND = "lower bound"
"""The name of the lower bound's row, beside the systems."""


def _median(values: list[float]) -> float:
    return percentile(values, 50) if values else math.nan


def _latencies(runs: list[dict[str, Any]]) -> list[float]:
    return [
        s["latency_s"]
        for r in runs
        for s in r["samples"]
        if s["error"] is None and s["latency_s"] is not None and s.get("in_window", True)
    ]


def _gaps(runs: list[dict[str, Any]]) -> list[float]:
    """Gaps between successive completions inside each run's window, pooled."""
    gaps: list[float] = []
    for r in runs:
        start, end = r.get("window_s") or [None, None]
        done = sorted(
            s["submitted_s"] + s["latency_s"]
            for s in r["samples"]
            if s["error"] is None and s["latency_s"] is not None
        )
        if start is not None and end is not None:
            done = [t for t in done if start <= t <= end]
        gaps += [b - a for a, b in zip(done, done[1:])]
    return gaps


def _inverse_mean_of(gaps: list[float]) -> float:
    """Throughput as one over the mean gap between completions (NaN without a gap)."""
    mean = sum(gaps) / len(gaps) if gaps else math.nan
    return 1.0 / mean if mean > 0 else math.nan


def _inverse_mean(a: Any) -> float:
    m = float(a.mean())
    return 1.0 / m if m > 0 else math.nan


def _sum(runs: list[dict[str, Any]], key: str) -> int | None:
    values = [r.get(key) for r in runs]
    return None if any(v is None for v in values) else int(sum(values))  # type: ignore[arg-type]


def summarize_app(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (load level, system) of an app's runs.

    Plus the lower bound where it means something (closed loop with the emulator).

    Each row: ``level``, ``system``, ``runs``, ``n`` (measured samples), ``p50_s``,
    ``p95_s``, ``mean_s`` and their intervals (``p50_ci``, ``p95_ci``: ``[low, high]``),
    ``throughput`` with ``throughput_ci``, ``first_output_s`` (median over runs),
    ``first_fragment_p50_s``, ``in_flight`` (mean over runs of the time-averaged inputs in
    flight), ``llm_calls``, ``prompt_tokens``, ``cached_tokens``, ``cached_share``,
    ``failed``, ``mismatched``, ``late_spans``, and against Alto: ``p50_vs_alto``,
    ``p95_vs_alto``, ``throughput_vs_alto`` with ``*_ci`` intervals and ``*_parity``.
    NaN figures are None.
    """
    groups: dict[tuple[float, str], list[dict[str, Any]]] = defaultdict(list)
    for run in result.get("runs", []):
        groups[(run["level"], run["system"])].append(run)
    order = {s: i for i, s in enumerate(result.get("systems", []))}
    rows: list[dict[str, Any]] = []
    samples: dict[tuple[float, str], tuple[list[float], list[float]]] = {}
    for (level, system), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))
    ):
        latencies = _latencies(runs)
        gaps = _gaps(runs)
        samples[(level, system)] = (latencies, gaps)
        seed = hash_seed(system, level)
        fragments = [
            s["first_fragment_s"]
            for r in runs
            for s in r["samples"]
            if s["error"] is None and s["first_fragment_s"] is not None and s.get("in_window", 1)
        ]
        prompt, cached = _sum(runs, "prompt_tokens"), _sum(runs, "cached_tokens")
        flights = [r["in_flight"] for r in runs if r.get("in_flight") is not None]
        rows.append(
            {
                "level": level,
                "system": system,
                "runs": len(runs),
                "n": len(latencies),
                "p50_s": percentile(latencies, 50),
                "p50_ci": list(percentile_interval(latencies, 50, seed=seed)),
                "p95_s": percentile(latencies, 95),
                "p95_ci": list(percentile_interval(latencies, 95, seed=seed)),
                "mean_s": sum(latencies) / len(latencies) if latencies else math.nan,
                "throughput": _inverse_mean_of(gaps),
                "throughput_ci": list(bootstrap_interval(gaps, _inverse_mean, seed=seed)),
                "first_output_s": _median(
                    [r["first_output_s"] for r in runs if r["first_output_s"] is not None]
                ),
                "first_fragment_p50_s": percentile(fragments, 50) if fragments else math.nan,
                "in_flight": sum(flights) / len(flights) if flights else math.nan,
                "llm_calls": sum(r["llm_calls"] for r in runs),
                "submitted": sum(r.get("submitted", len(r["samples"])) for r in runs),
                "prompt_tokens": prompt,
                "cached_tokens": cached,
                "cached_share": cached / prompt if prompt and cached is not None else math.nan,
                "failed": sum(r["failed"] for r in runs),
                "mismatched": sum(r["mismatched"] for r in runs),
                "late_spans": sum(r.get("late_spans", 0) for r in runs),
            }
        )
    for row in rows:
        base = samples.get((row["level"], ALTO))
        mine = samples[(row["level"], row["system"])]
        seed = hash_seed(row["system"], row["level"], "ratio")
        alto = next((r for r in rows if r["level"] == row["level"] and r["system"] == ALTO), None)
        for key, q in (("p50", 50.0), ("p95", 95.0)):
            value = ratio(row[f"{key}_s"], alto[f"{key}_s"]) if alto else math.nan
            ci = (
                ratio_interval(mine[0], base[0], _at(q), seed=seed)
                if base and row["system"] != ALTO
                else (math.nan, math.nan)
            )
            row[f"{key}_vs_alto"] = value
            row[f"{key}_vs_alto_ci"] = list(ci)
            row[f"{key}_vs_alto_parity"] = parity(ci) if row["system"] != ALTO else None
        value = ratio(row["throughput"], alto["throughput"]) if alto else math.nan
        # throughput = 1 / mean gap, so its ratio is the inverse ratio of mean gaps
        ci = (
            ratio_interval(base[1], mine[1], lambda a: float(a.mean()), seed=seed)
            if base and row["system"] != ALTO
            else (math.nan, math.nan)
        )
        row["throughput_vs_alto"] = value
        row["throughput_vs_alto_ci"] = list(ci)
        row["throughput_vs_alto_parity"] = parity(ci) if row["system"] != ALTO else None
    rows += _bound_rows(result, sorted({row["level"] for row in rows}))
    rows.sort(
        key=lambda r: (r["level"], order.get(r["system"], 98 if r["system"] == BOUND else 99))
    )
    return [_clean(row) for row in rows]


def _at(q: float) -> Any:
    """The ``q``-th percentile of a numpy array, as a function."""
    import numpy as np

    def statistic(a: Any) -> float:
        return float(np.percentile(a, q))

    return statistic


def hash_seed(*parts: Any) -> int:
    """A stable seed from the parts (Python's ``hash`` of strings changes per process)."""
    import zlib

    return zlib.crc32("|".join(str(p) for p in parts).encode())


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def _bound_rows(result: dict[str, Any], levels: list[float]) -> list[dict[str, Any]]:
    """The lower bound on mean latency at each closed-loop concurrency ``c``.

    ``max(mean critical path, c x decode tokens per input / peak decode rate)``.

    Printed only for closed loops on the emulator; in an open loop a latency bound below
    the rate ceiling is just the unloaded critical path (its own table) and above it there
    is none, so the ceiling is given in the SLO table instead.
    """
    bound = result.get("bound") or {}
    queries = [q for q in bound.get("queries", []) if "bound_s" in q]
    load = (result.get("sweep") or {}).get("how", "")
    if not queries or load != "closed-loop concurrency":
        return []
    paths = [q["bound_s"] for q in queries]
    tokens = [q["decode_tokens"] for q in queries if "decode_tokens" in q]
    peak = bound.get("peak_decode_tokens_per_s")
    work = sum(tokens) / len(tokens) / peak if tokens and peak else 0.0
    mean_path = sum(paths) / len(paths)
    rows = []
    for level in levels:
        rows.append(
            {
                "level": level,
                "system": BOUND,
                "runs": 0,
                "n": len(paths),
                "mean_s": max(mean_path, level * work),
                "bound_kind": "critical path" if mean_path >= level * work else "server work",
            }
        )
    return rows


def slo_table(result: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system of an open-loop sweep: the highest rate under the SLO.

    Also, at the moderate rate, its p50 with interval and ratio to Alto.
    """
    sweep = result.get("sweep") or {}
    slo = sweep.get("slo_s")
    if slo is None or sweep.get("moderate_rate") is None:
        return []
    out = []
    for system in result.get("systems", []):
        mine = [r for r in rows if r["system"] == system]
        by_rate = {
            r["level"]: (
                _nan(r["p95_s"]),
                _nan((r.get("p95_ci") or [None, None])[0]),
                _nan((r.get("p95_ci") or [None, None])[1]),
            )
            for r in mine
            if not r["failed"]
        }
        # a rate with failed inputs misses the SLO (their latency is unbounded)
        for r in mine:
            if r["failed"]:
                by_rate[r["level"]] = (math.inf, math.inf, math.inf)
        best = max_rate_under_slo(by_rate, slo)
        moderate = next((r for r in mine if r["level"] == sweep["moderate_rate"]), None)
        out.append(
            {
                "system": system,
                "max_rate": best["rate"],
                "max_rate_low": best["low"],
                "max_rate_high": best["high"],
                "stopped_at": (result.get("stopped") or {}).get(system),
                "moderate_rate": sweep["moderate_rate"],
                "moderate_p50_s": moderate["p50_s"] if moderate else None,
                "moderate_p50_ci": moderate["p50_ci"] if moderate else None,
                "moderate_p50_vs_alto": moderate["p50_vs_alto"] if moderate else None,
                "moderate_p50_vs_alto_ci": moderate["p50_vs_alto_ci"] if moderate else None,
                "moderate_parity": moderate["p50_vs_alto_parity"] if moderate else None,
                "cached_share": moderate["cached_share"] if moderate else None,
                "in_flight": moderate["in_flight"] if moderate else None,
            }
        )
    return out


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def search_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per system of a rate search (:mod:`alto.bench.search`).

    Its outcome as ``results.json`` keeps it, its rate interval, and against Alto the ratio
    of highest passing rates with its interval and whether the two intervals overlap
    (*parity*).

    The ratio's interval divides the system's rate interval by Alto's (low by high, high
    by low), so it holds 1 exactly when the intervals overlap.
    """
    search = (result.get("sweep") or {}).get("search")
    if not search:
        return []
    table = search["systems"]
    alto = table.get(ALTO)
    return [
        versus_alto({"system": system, **table[system]}, alto)
        for system in result.get("systems", [])
        if system in table
    ]


def versus_alto(row: dict[str, Any], alto: dict[str, Any] | None) -> dict[str, Any]:
    """``row`` (a system's search outcome) with its rate ``interval`` and comparisons to Alto.

    Unless it is Alto's or Alto has none, the comparisons are ``vs_alto`` (its highest
    passing rate over Alto's), ``vs_alto_ci`` (its rate interval over Alto's: low by high,
    high by low) and ``vs_alto_parity`` (the two intervals overlap).
    """
    from alto.bench.search import rate_interval, rate_parity

    low, high = rate_interval(row)
    row["interval"] = [low, high]
    row["vs_alto"] = row["vs_alto_ci"] = row["vs_alto_parity"] = None
    if alto is not None and row["system"] != ALTO:
        a_low, a_high = rate_interval(alto)
        best, base = row.get("best_rate"), alto.get("best_rate")
        row["vs_alto"] = best / base if best and base else None
        row["vs_alto_ci"] = [
            low / a_high if low is not None and a_high else None,
            high / a_low if high is not None and a_low else None,
        ]
        row["vs_alto_parity"] = rate_parity(row, alto)
    return row
