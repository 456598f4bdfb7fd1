"""The rate search: the binomial rule, bracketing and bisection, and the driving loop."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import anyio
import pytest

from alto.bench.search import (
    FAIL,
    PASS,
    UNDECIDED,
    RateSearch,
    SearchPlan,
    binom_cdf,
    fail_threshold,
    min_arrivals,
    pass_threshold,
    per_repeat_estimates,
    rate_parity,
    run_searches,
    trial_seconds,
    verdict,
)


def brute_cdf(k: int, n: int) -> Fraction:
    p, q = Fraction(1, 20), Fraction(19, 20)
    return sum((math.comb(n, i) * p**i * q ** (n - i) for i in range(k + 1)), Fraction(0))


def test_59_arrivals_are_the_fewest_that_pass_without_a_miss() -> None:
    assert binom_cdf(0, 59) == Fraction(19, 20) ** 59 <= Fraction(1, 20)
    assert Fraction(19, 20) ** 58 > Fraction(1, 20)
    assert (pass_threshold(58), pass_threshold(59)) == (-1, 0)
    assert (verdict(58, 0), verdict(59, 0), verdict(59, 1)) == (UNDECIDED, PASS, UNDECIDED)
    assert min_arrivals(0) == 59


@pytest.mark.parametrize("n", [1, 5, 20, 40, 59, 60, 93, 100, 120])
def test_thresholds_follow_the_exact_binomial_bounds(n: int) -> None:
    allowed = pass_threshold(n)
    # the most misses that pass: P[Binom(n, .05) <= k] <= .05, and one more does not
    assert allowed == -1 or brute_cdf(allowed, n) <= Fraction(1, 20)
    assert allowed + 1 > n or brute_cdf(allowed + 1, n) > Fraction(1, 20)
    fewest = fail_threshold(n)
    # the fewest misses that fail: P[Binom(n, .05) >= k] <= .05, and one fewer does not
    assert fewest > n or 1 - brute_cdf(fewest - 1, n) <= Fraction(1, 20)
    assert 1 - brute_cdf(fewest - 2, n) > Fraction(1, 20)
    for k in range(n + 1):
        expected = PASS if k <= allowed else FAIL if k >= fewest else UNDECIDED
        assert verdict(n, k) == expected


def test_small_samples_fail_fast_but_cannot_pass() -> None:
    assert (fail_threshold(20), pass_threshold(20)) == (4, -1)
    assert (verdict(20, 3), verdict(20, 4)) == (UNDECIDED, FAIL)
    assert (pass_threshold(93), pass_threshold(120)) == (1, 1)
    with pytest.raises(ValueError):
        verdict(10, 11)


def test_a_plan_too_short_to_pass_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 59"):
        SearchPlan(start=1.0, arrivals=58)
    assert SearchPlan(start=1.0, arrivals=60, repeats=3).per_run == 20
    assert SearchPlan(start=1.0, arrivals=59, repeats=2).per_run == 30


def search(capacity: float, start: float, **plan: Any) -> RateSearch:
    s = RateSearch(SearchPlan(start=start, **plan))
    while (rate := s.next_rate()) is not None:
        s.record(rate, rate <= capacity)
    return s


@pytest.mark.parametrize("capacity", [0.37, 3.0, 9.9, 55.0])
@pytest.mark.parametrize("start", [0.5, 4.0, 40.0])
def test_bisection_converges_on_a_monotone_system(capacity: float, start: float) -> None:
    s = search(capacity, start, width=0.1, floor=0.01, max_trials=40)
    assert s.best is not None and s.first_fail is not None
    assert s.best <= capacity < s.first_fail
    assert s.first_fail / s.best <= 1.1
    assert s.stop_reason == "bracket within 10%"


@pytest.mark.parametrize("capacity", [2.0, 13.0, 19.0, 30.0])
def test_by_default_every_rate_lies_on_one_grid_and_no_bisection_is_needed(
    capacity: float,
) -> None:
    start = 23.404
    s = search(capacity, start)
    steps = [math.log(rate / start, 1.25) for rate in s.order]
    assert all(abs(k - round(k)) < 0.01 for k in steps)  # every system on the same rates
    assert all(abs(abs(b - a) - 1) < 0.01 for a, b in zip(steps, steps[1:]))  # no bisection
    assert s.best is not None and s.best <= capacity < s.first_fail  # type: ignore[operator]
    assert s.stop_reason == "bracket within 25%"


def test_a_system_that_holds_every_rate_tried_is_searched_past_it() -> None:
    s = search(1000.0, start=1.0, max_trials=40, factor=2.0, width=0.2)
    # no ceiling: it doubled from 1/s past 1000/s before bisecting
    assert s.order[:11] == [float(2**i) for i in range(11)] and s.verdicts[1024.0] is False
    assert s.best is not None and 1000 / 1.2 <= s.best <= 1000 < s.first_fail  # type: ignore[operator]


def test_the_reported_rate_is_monotone_and_the_first_fail_is_reported() -> None:
    s = RateSearch(SearchPlan(start=10.0, width=0.05))
    for rate, ok in [(10.0, True), (20.0, False), (14.0, True), (12.0, False), (11.0, True)]:
        s.record(rate, ok)
    # 14/s passed above the lower fail at 12/s: noise, not a capacity
    assert (s.best, s.first_fail) == (11.0, 12.0)
    assert s.result()["passed"] == [10.0, 11.0, 14.0]
    s.record(12.0, True)  # a redo at 12/s passes: the fail moves up to 20/s
    assert (s.best, s.first_fail) == (14.0, 20.0)


def test_a_system_failing_everywhere_stops_at_the_floor() -> None:
    s = search(0.0, start=8.0, floor=0.1, factor=2.0)
    assert s.best is None and s.first_fail == 0.125
    assert s.stop_reason == "no rate down to 0.1/s passed"
    s = search(0.0, start=8.0, factor=2.0)  # by default a sixteenth of the start
    assert s.order == [8.0, 4.0, 2.0, 1.0, 0.5] and s.stop_reason == "no rate down to 0.5/s passed"


def test_the_trial_limit_stops_a_search() -> None:
    s = search(1e9, start=1.0, max_trials=5, factor=2.0)
    assert len(s.order) == 5 and s.first_fail is None and s.best == 16.0
    assert s.stop_reason == "stopped after 5 trials"


class FakeSystem:
    """Every arrival misses the SLO with a probability that grows with the rate."""

    def __init__(self, capacity: float, *, late: set[float] | None = None) -> None:
        self.capacity = capacity
        self.calls: list[tuple[str, float, int, int, int, int]] = []
        self.late = late or set()

    async def measure(
        self, system: str, rate: float, repeat: int, seed: int, arrivals: int, warmup: int
    ) -> dict[str, Any]:
        self.calls.append((system, rate, repeat, seed, arrivals, warmup))
        share = 0.0 if rate <= self.capacity else 0.5
        samples = []
        for i in range(arrivals):
            miss = (i * 7919 + seed) % 100 < share * 100
            samples.append(
                {
                    "submitted_s": i / rate,
                    "latency_s": 2.0 if miss else 0.5,
                    "error": None,
                    "in_window": i >= warmup,
                }
            )
        lag = {"p95_s": 0.5 if (rate in self.late and len(self.calls) < 40) else 0.001}
        return {
            "samples": samples,
            "window_s": [warmup / rate, (arrivals - 1) / rate],
            "cpu": {"bench_cpu_share": 0.3},
            "emulator_lag": lag,
            "repeat": repeat,
        }


def test_searches_run_pooled_trials_fail_early_and_keep_every_trial() -> None:
    fake = FakeSystem(capacity=5.0)
    plan = SearchPlan(start=2.0, repeats=3, arrivals=60, warmup=4, width=0.3)
    runs, out = anyio.run(lambda: run_searches(["a", "b"], plan, 1.0, fake.measure, seed=7))
    trials = out["trials"]
    first = trials[0]
    # a passing trial: three runs (one per repeat, its own seed), 60 measured arrivals
    assert first["verdict"] == PASS and (first["n"], first["k"]) == (60, 0)
    assert [r["seed"] for r in first["runs"]] == [7, 8, 9]
    assert [c[4:] for c in fake.calls[:3]] == [(24, 4)] * 3
    # a failing one stops after its first run (sized by time: a rate past 4/s over an SLO of
    # 1 s), half of its arrivals late
    failing = next(t for t in trials if t["verdict"] == FAIL)
    arrivals, warmup = plan.run_size(failing["rate"], 1.0)
    assert failing["rate"] > 4.0 and warmup == math.ceil(failing["rate"])
    assert len(failing["runs"]) == 1 and failing["n"] == arrivals - warmup > 20
    assert failing["k"] >= 4
    assert len(runs) == sum(len(t["runs"]) for t in trials)
    assert all(
        r["trial"] == t["index"] for t in trials for r in (runs[p["run"]] for p in t["runs"])
    )
    for system in ("a", "b"):
        row = out["systems"][system]
        assert row["best_rate"] <= 5.0 < row["first_fail"]
        assert row["first_fail"] / row["best_rate"] <= 1.3
        assert row["served_at_best"] == pytest.approx(row["best_rate"])
        assert row["repeat_min"] <= row["repeat_median"] <= row["repeat_max"]
    # systems take turns: a, b, then b, a
    order = [t["system"] for t in trials]
    assert order[:4] == ["a", "b", "b", "a"]


def test_a_saturated_trial_is_redone_once() -> None:
    fake = FakeSystem(capacity=5.0, late={2.0})
    plan = SearchPlan(start=2.0, repeats=3, arrivals=60, width=0.3)
    _, out = anyio.run(lambda: run_searches(["a"], plan, 1.0, fake.measure))
    trials = out["trials"]
    assert trials[0]["saturated"] == ["emulator steps late by 500 ms (p95)"]
    redo = [t for t in trials if t["redo_of"] == 0]
    assert len(redo) == 1 and redo[0]["rate"] == 2.0 and redo[0]["index"] == len(trials) - 1
    assert out["systems"]["a"]["redone_trials"] == 1


def test_where_cpu_is_the_work_a_busy_bench_process_is_not_redone() -> None:
    class Busy(FakeSystem):
        async def measure(self, *args: Any) -> dict[str, Any]:
            run = await super().measure(*args)
            run["cpu"] = {"bench_cpu_share": 0.99}
            return run

    plan = SearchPlan(start=2.0, repeats=3, arrivals=60, width=0.3)
    _, out = anyio.run(lambda: run_searches(["a"], plan, 1.0, Busy(5.0).measure))
    assert all(t["saturated"] == ["bench process at 99% of a core"] for t in out["trials"])
    assert out["systems"]["a"]["redone_trials"] > 0
    _, out = anyio.run(lambda: run_searches(["a"], plan, 1.0, Busy(5.0).measure, cpu_is_work=True))
    assert not any(t["saturated"] for t in out["trials"])
    assert out["systems"]["a"]["redone_trials"] == 0


def test_an_undecided_trial_is_extended_then_counted_as_a_fail() -> None:
    async def measure(system: str, rate: float, repeat: int, seed: int, n: int, w: int) -> Any:
        # one late arrival per run: 3 in 60 and 6 in 120 are neither pass nor fail
        samples = [
            {"submitted_s": i, "latency_s": 2.0 if i == w else 0.5, "error": None,
             "in_window": i >= w}
            for i in range(n)
        ]  # fmt: skip
        return {"samples": samples, "window_s": [w, n - 1], "repeat": repeat}

    plan = SearchPlan(start=1.0, repeats=3, arrivals=60, rounds=2, max_trials=1)
    _, out = anyio.run(lambda: run_searches(["a"], plan, 1.0, measure, seed=0))
    (trial,) = out["trials"]
    assert (trial["n"], trial["k"], trial["verdict"], trial["passed"]) == (120, 6, UNDECIDED, False)
    assert [r["seed"] for r in trial["runs"]] == [0, 1, 2, 1000, 1001, 1002]
    assert out["systems"]["a"]["undecided_trials"] == 1 and out["systems"]["a"]["best_rate"] is None


def test_per_repeat_estimates_and_rate_parity() -> None:
    trials = [
        {"rate": 2.0, "runs": [{"repeat": 0, "n": 20, "k": 0}, {"repeat": 1, "n": 20, "k": 0}]},
        {"rate": 4.0, "runs": [{"repeat": 0, "n": 20, "k": 1}, {"repeat": 1, "n": 20, "k": 5}]},
        {"rate": 8.0, "runs": [{"repeat": 0, "n": 20, "k": 9}]},
    ]
    assert per_repeat_estimates(trials) == {0: 4.0, 1: 2.0}
    a = {"best_rate": 10.0, "first_fail": 12.0, "repeat_min": 10.0, "repeat_max": 12.0}
    b = {"best_rate": 11.5, "first_fail": 13.0, "repeat_min": 11.5, "repeat_max": 13.0}
    c = {"best_rate": 6.0, "first_fail": 7.0, "repeat_min": 6.0, "repeat_max": 7.0}
    assert rate_parity(a, b) and not rate_parity(a, c) and rate_parity(c, c)
    assert rate_parity({"best_rate": None, "first_fail": 1.0}, {"best_rate": 0.5, "first_fail": 2})
    assert not rate_parity({"best_rate": 20.0, "first_fail": None}, c)


def test_runs_are_sized_by_time_at_high_rates() -> None:
    """A run is steady state: its first SLO of arrivals is warm-up and its measured arrivals
    span at least SLO / width, so a burst that drains inside the SLO cannot pass a trial."""
    plan = SearchPlan(start=1.0, arrivals=60, repeats=3, warmup=4, width=0.25)
    assert plan.run_size(1.0, 1.0) == (24, 4)  # low rate: the counts rule
    arrivals, warmup = plan.run_size(5043.0, 3.2)
    assert warmup == math.ceil(5043.0 * 3.2)
    assert arrivals - warmup == math.ceil(5043.0 * 3.2 / 0.25)
    assert trial_seconds(100.0, 1.0, plan) > 3 * 5.0  # at least warm-up + span per run
    # a short SLO: the measured span is still 3 s, so one stall of the machine cannot decide
    assert plan.run_size(200.0, 0.05) == (10 + 600, 10)


def test_a_trial_measures_runs_of_the_planned_size() -> None:
    plan = SearchPlan(start=50.0, arrivals=60, repeats=3, width=0.5, max_trials=1)
    asked: list[tuple[int, int]] = []

    async def measure(system, rate, repeat, seed, arrivals, warmup):  # type: ignore[no-untyped-def]
        asked.append((arrivals, warmup))
        samples = [
            {"latency_s": 0.1, "error": None, "submitted_s": i / rate, "in_window": i >= warmup}
            for i in range(arrivals)
        ]
        return {"samples": samples, "window_s": [warmup / rate, arrivals / rate]}

    anyio.run(lambda: run_searches(["alto"], plan, 1.0, measure))
    assert asked and all(a == plan.run_size(50.0, 1.0) for a in asked)
    assert asked[0] == (50 + 150, 50)  # 3 s measured (the least span), more than SLO / width
