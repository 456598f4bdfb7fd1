"""The statistics of a benchmark: percentiles, ratios, summaries, Poisson arrival schedules.

Pure functions on plain numbers, so the report and the tests agree on every figure.

Laws:

* ``percentile(xs, 0) == min(xs)``, ``percentile(xs, 100) == max(xs)``, and ``percentile`` is
  monotone in ``q``; it interpolates linearly between order statistics (numpy's default).
* ``ratio(a, b) * b == a`` for ``b != 0``.
* ``poisson_schedule(n, rate, seed)`` is the same list for the same arguments, starts after 0,
  strictly increases, and its gaps have mean ``1 / rate`` as ``n`` grows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no values.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    xs = sorted(values)
    if not xs:
        return math.nan
    position = (len(xs) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(xs) - 1)
    return xs[low] + (xs[high] - xs[low]) * (position - low)


def mean(values: Iterable[float]) -> float:
    """The arithmetic mean; NaN for no values."""
    xs = list(values)
    return sum(xs) / len(xs) if xs else math.nan


def ratio(value: float, baseline: float) -> float:
    """``value / baseline``; NaN when either is missing (NaN) or the baseline is zero."""
    if math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return math.nan
    return value / baseline


def throughput(completed: int, wall_s: float) -> float:
    """Completed root inputs per second; NaN for an empty or instant run."""
    return completed / wall_s if completed and wall_s > 0 else math.nan


def summarize(values: Sequence[float]) -> dict[str, float]:
    """``n``, ``mean``, ``p50``, ``p95``, ``p99``, ``min`` and ``max`` of ``values`` (NaN-free)."""
    xs = [v for v in values if not math.isnan(v)]
    return {
        "n": len(xs),
        "mean": mean(xs),
        "p50": percentile(xs, 50),
        "p95": percentile(xs, 95),
        "p99": percentile(xs, 99),
        "min": min(xs) if xs else math.nan,
        "max": max(xs) if xs else math.nan,
    }


def cdf(values: Iterable[float]) -> tuple[list[float], list[float]]:
    """Points of the empirical CDF: sorted values and the share of values at or below each."""
    xs = sorted(v for v in values if not math.isnan(v))
    n = len(xs)
    return xs, [(i + 1) / n for i in range(n)]


def poisson_schedule(n: int, rate: float, seed: int) -> list[float]:
    """Arrival times (seconds from 0) of ``n`` requests of a Poisson process of ``rate``/s.

    Deterministic for a given seed: every system of a benchmark sees the same arrivals.

    Example:
        >>> poisson_schedule(3, 2.0, seed=1) == poisson_schedule(3, 2.0, seed=1)
        True
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not rate > 0:
        raise ValueError(f"rate must be > 0 requests per second, got {rate}")
    rng = random.Random(f"alto-bench-poisson:{seed}")
    t = 0.0
    out = []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(t)
    return out


def rotation(items: Sequence[Any], turn: int) -> list[Any]:
    """``items`` rotated left by ``turn``: each system takes each position in turn.

    Example:
        >>> rotation(["a", "b", "c"], 4)
        ['b', 'c', 'a']
    """
    if not items:
        return []
    k = turn % len(items)
    return [*items[k:], *items[:k]]


def finite(value: float) -> float | None:
    """``value`` for JSON: None instead of NaN or infinity."""
    return value if math.isfinite(value) else None
