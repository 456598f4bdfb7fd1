"""The benchmark's statistics: percentiles, ratios, summaries, CDFs, Poisson schedules."""

from __future__ import annotations

import math

import pytest

from alto.bench.stats import (
    cdf,
    finite,
    mean,
    percentile,
    poisson_schedule,
    ratio,
    rotation,
    summarize,
    throughput,
)


def test_percentile_interpolates_between_order_statistics() -> None:
    xs = [4.0, 1.0, 3.0, 2.0]  # order does not matter
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 100) == 4.0
    assert percentile(xs, 50) == 2.5
    assert percentile(xs, 25) == pytest.approx(1.75)
    assert percentile(range(1, 101), 95) == pytest.approx(95.05)  # numpy's linear method


def test_percentile_edges() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError, match="within 0..100"):
        percentile([1.0], 101)


def test_percentile_is_monotone_in_q() -> None:
    xs = [0.3, 0.1, 5.0, 2.2, 2.2, 9.1, 0.0]
    values = [percentile(xs, q) for q in range(0, 101, 5)]
    assert values == sorted(values)


def test_ratio_and_throughput() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(3.0, 2.0) * 2.0 == 3.0
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))
    assert math.isnan(ratio(1.0, math.nan))
    assert throughput(10, 4.0) == 2.5
    assert math.isnan(throughput(0, 4.0))
    assert math.isnan(throughput(3, 0.0))


def test_summarize_drops_nan_and_reports_every_figure() -> None:
    s = summarize([1.0, math.nan, 3.0, 2.0])
    assert s["n"] == 3
    assert (s["min"], s["p50"], s["max"], s["mean"]) == (1.0, 2.0, 3.0, 2.0)
    assert s["p95"] == pytest.approx(2.9)
    empty = summarize([])
    assert empty["n"] == 0 and math.isnan(empty["p50"]) and math.isnan(empty["min"])
    assert math.isnan(mean([]))


def test_cdf_points() -> None:
    x, y = cdf([3.0, 1.0, math.nan, 2.0])
    assert x == [1.0, 2.0, 3.0]
    assert y == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_poisson_schedule_is_deterministic_per_seed() -> None:
    a = poisson_schedule(50, 4.0, seed=7)
    assert a == poisson_schedule(50, 4.0, seed=7)
    assert a != poisson_schedule(50, 4.0, seed=8)
    assert len(a) == 50 and a[0] > 0
    assert all(later > earlier for earlier, later in zip(a, a[1:]))
    assert poisson_schedule(0, 1.0, seed=0) == []


def test_poisson_schedule_has_the_asked_rate() -> None:
    times = poisson_schedule(20_000, 5.0, seed=1)
    gaps = [b - a for a, b in zip([0.0, *times], times)]
    assert mean(gaps) == pytest.approx(1 / 5.0, rel=0.03)
    # exponential gaps: the standard deviation equals the mean
    sd = math.sqrt(mean([(g - mean(gaps)) ** 2 for g in gaps]))
    assert sd == pytest.approx(1 / 5.0, rel=0.05)


def test_poisson_schedule_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rate"):
        poisson_schedule(3, 0.0, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        poisson_schedule(-1, 1.0, seed=0)


def test_rotation_puts_every_item_in_every_position() -> None:
    items = ["a", "b", "c"]
    turns = [rotation(items, t) for t in range(3)]
    assert turns == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    for position in range(3):
        assert sorted(t[position] for t in turns) == items
    assert rotation(items, 4) == turns[1]
    assert rotation([], 2) == []


def test_finite() -> None:
    assert finite(1.5) == 1.5
    assert finite(math.nan) is None
    assert finite(math.inf) is None
