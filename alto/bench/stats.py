"""The statistics of a benchmark.

Percentiles, ratios, bootstrap intervals, Poisson arrival schedules, the steady-state window
of a closed loop, and the highest rate under an SLO.

Pure functions on plain numbers, so the report and the tests agree on every figure.

Laws:

* ``percentile(xs, 0) == min(xs)``, ``percentile(xs, 100) == max(xs)``, and ``percentile`` is
  monotone in ``q``; it interpolates linearly between order statistics (numpy's default).
* ``ratio(a, b) * b == a`` for ``b != 0``.
* ``poisson_schedule(n, rate, seed)`` is the same list for the same arguments, starts after 0,
  strictly increases, and its gaps have mean ``1 / rate`` as ``n`` grows.
* A bootstrap interval is the same for the same values and seed, and lies within the
  statistic's range over the values; ``parity`` is true exactly when a ratio's interval
  holds 1.
* ``max_rate_under_slo`` never passes a rate above one that missed the SLO.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from alto.errors import UsageError


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no values.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    if not 0 <= q <= 100:
        msg = f"q must be within 0..100, got {q}"
        raise UsageError(msg)
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
        msg = f"n must be >= 0, got {n}"
        raise UsageError(msg)
    if not rate > 0:
        msg = f"rate must be > 0 requests per second, got {rate}"
        raise UsageError(msg)
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


BOOTSTRAP_REPLICATES = 1000
"""Resamples behind every interval (a 95% percentile interval is stable to ~1% at 1000)."""


def _rng(seed: int, *parts: str) -> Any:
    import numpy as np

    digest = hashlib.sha256("\x00".join(["alto-bench-bootstrap", str(seed), *parts]).encode())
    return np.random.default_rng(int.from_bytes(digest.digest()[:8], "big"))


def bootstrap_interval(
    values: Sequence[float],
    statistic: Callable[[Any], float],
    *,
    seed: int = 0,
    replicates: int = BOOTSTRAP_REPLICATES,
    level: float = 0.95,
) -> tuple[float, float]:
    """The percentile bootstrap ``level`` interval of ``statistic`` over ``values``.

    ``statistic`` takes a 1-D numpy array and returns a number. NaN values are dropped;
    fewer than 2 values give ``(nan, nan)`` (no interval can be told). Deterministic for a
    given ``seed``.

    Example:
        >>> low, high = bootstrap_interval([1.0, 2.0, 3.0, 4.0, 5.0], lambda a: a.mean())
        >>> low <= 3.0 <= high
        True
    """
    import numpy as np

    xs = np.array([v for v in values if not math.isnan(v)], dtype=float)
    if len(xs) < 2:
        return (math.nan, math.nan)
    rng = _rng(seed, "one", str(len(xs)))
    picks = rng.integers(0, len(xs), size=(replicates, len(xs)))
    stats = np.array([statistic(xs[row]) for row in picks])
    tail = (1 - level) / 2 * 100
    return (float(np.percentile(stats, tail)), float(np.percentile(stats, 100 - tail)))


def percentile_interval(values: Sequence[float], q: float, *, seed: int = 0) -> tuple[float, float]:
    """The bootstrap 95% interval of the ``q``-th percentile of ``values``."""
    return bootstrap_interval(values, lambda a: float(_np_percentile(a, q)), seed=seed)


def ratio_interval(
    values: Sequence[float],
    baseline: Sequence[float],
    statistic: Callable[[Any], float],
    *,
    seed: int = 0,
    replicates: int = BOOTSTRAP_REPLICATES,
    level: float = 0.95,
) -> tuple[float, float]:
    """The bootstrap interval of ``statistic(values) / statistic(baseline)``.

    The two samples are resampled independently (they come from different systems' runs).
    Fewer than 2 values on either side give ``(nan, nan)``.
    """
    import numpy as np

    a = np.array([v for v in values if not math.isnan(v)], dtype=float)
    b = np.array([v for v in baseline if not math.isnan(v)], dtype=float)
    if len(a) < 2 or len(b) < 2:
        return (math.nan, math.nan)
    rng = _rng(seed, "ratio", str(len(a)), str(len(b)))
    pa = rng.integers(0, len(a), size=(replicates, len(a)))
    pb = rng.integers(0, len(b), size=(replicates, len(b)))
    ratios = []
    for ra, rb in zip(pa, pb):
        base = statistic(b[rb])
        ratios.append(statistic(a[ra]) / base if base else math.nan)
    arr = np.array([r for r in ratios if not math.isnan(r)])
    if not len(arr):
        return (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    return (float(np.percentile(arr, tail)), float(np.percentile(arr, 100 - tail)))


def _np_percentile(a: Any, q: float) -> float:
    import numpy as np

    return float(np.percentile(a, q))  # linear interpolation, as :func:`percentile`


def parity(interval: tuple[float, float]) -> bool:
    """Whether a ratio's interval holds 1: the two systems cannot be told apart.

    Example:
        >>> parity((0.97, 1.04)), parity((1.02, 1.10))
        (True, False)
    """
    low, high = interval
    return not (math.isnan(low) or math.isnan(high)) and low <= 1.0 <= high


def steady_window(
    submitted: Sequence[float], completed: Sequence[float], concurrency: int
) -> tuple[float, float]:
    """The steady-state window of a closed loop: from warm-up's end to the last submission.

    Warm-up ends when the first ``concurrency`` inputs have completed (every slot has been
    refilled once, so caches, connections and the server's batch are in their running
    state); the window ends at the last submission, after which the loop drains with fewer
    than ``concurrency`` inputs in flight. Times share one clock; ``completed`` has NaN for
    inputs that did not complete. ``(nan, nan)`` when the run is too short to have one.
    """
    done = sorted(t for t in completed if not math.isnan(t))
    subs = [t for t in submitted if not math.isnan(t)]
    if len(done) < concurrency or not subs:
        return (math.nan, math.nan)
    start, end = done[concurrency - 1], max(subs)
    return (start, end) if end > start else (math.nan, math.nan)


def in_flight(
    submitted: Sequence[float], completed: Sequence[float], window: tuple[float, float]
) -> float:
    """Time-averaged number of inputs in flight within ``window`` (Little's law's L).

    Each input counts for the part of ``[submitted, completed]`` that falls in the window;
    one that never completed counts until the window's end.
    """
    start, end = window
    if math.isnan(start) or not end > start:
        return math.nan
    busy = 0.0
    for sub, done in zip(submitted, completed, strict=True):
        if math.isnan(sub):
            continue
        finish = end if math.isnan(done) else done
        busy += max(0.0, min(finish, end) - max(sub, start))
    return busy / (end - start)


def max_rate_under_slo(
    p95_by_rate: Mapping[float, tuple[float, float, float]], slo_s: float
) -> dict[str, float | None]:
    """The highest offered rate whose p95 latency stays under the SLO, with its interval.

    ``p95_by_rate`` maps each rate to ``(p95, interval low, interval high)``. A rate whose
    whole interval lies above ``slo_s`` is a *sure miss*, and no rate above a sure miss
    counts (the sweep stops there). The figures are monotone in the rate: a rate counts only
    when every rate below it counts too, so no system is credited a rate above one it missed:

    * ``rate``: the highest rate up to which every measured p95 is at most ``slo_s`` (the
      highest one below the first miss);
    * ``low``: the highest rate up to which every p95 interval lies wholly under ``slo_s``
      (surely met);
    * ``high``: the highest rate whose p95 interval reaches under ``slo_s`` (maybe met).

    None where no rate qualifies.

    Example:
        >>> max_rate_under_slo({1: (0.5, 0.4, 0.6), 2: (0.9, 0.8, 1.1), 4: (3.0, 2, 4)}, 1.0)
        {'rate': 2, 'low': 1, 'high': 2}
    """
    rates = []
    for rate in sorted(p95_by_rate):
        low = p95_by_rate[rate][1]
        if not math.isnan(low) and low > slo_s:
            break  # a sure miss: nothing above it counts
        rates.append(rate)

    def highest(ok: Callable[[tuple[float, float, float]], bool]) -> float | None:
        best = None
        for rate in rates:
            if not ok(p95_by_rate[rate]):
                break  # monotone: nothing above a miss counts
            best = rate
        return best

    surely = None
    for rate in rates:
        high = p95_by_rate[rate][2]
        if math.isnan(high) or high > slo_s:
            break
        surely = rate
    return {
        "rate": highest(lambda v: not math.isnan(v[0]) and v[0] <= slo_s),
        "low": surely,
        "high": highest(lambda v: not math.isnan(v[1]) and v[1] <= slo_s),
    }


def sure_miss(latencies: Sequence[float], slo_s: float, *, seed: int = 0) -> bool:
    """Whether the p95 of ``latencies`` misses ``slo_s`` beyond doubt.

    Its whole 95% interval lies above it (with fewer than 2 values, the p95 itself does). A
    failed input counts as an infinite latency.
    """
    xs = [min(v, 1e12) for v in latencies]  # infinities would make interpolation NaN
    low, _ = percentile_interval(xs, 95, seed=seed)
    if math.isnan(low):
        return bool(xs) and percentile(xs, 95) > slo_s
    return low > slo_s
