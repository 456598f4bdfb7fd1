"""The machine's load during a run: the emulator's step lag, CPU shares, saturation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from alto.bench.emulator import EmulatorConfig, EmulatorServer
from alto.bench.emulator.replica import LAG_BUCKETS_S, StepLag
from alto.bench.machine import CpuClock, lag_delta, saturation


def stats(lag: StepLag) -> dict[str, Any]:
    return {"step_lag": lag.as_dict()}


def test_step_lag_counts_each_step_in_its_bucket() -> None:
    lag = StepLag()
    for late in (0.0, 0.0015, 0.0015, 0.3, 5.0):
        lag.add(late)
    d = lag.as_dict()
    assert (d["steps"], d["max_s"]) == (5, 5.0) and d["sum_s"] == pytest.approx(5.303)
    assert d["bucket_bounds_s"][-1] is None and len(d["bucket_counts"]) == len(LAG_BUCKETS_S)
    # 0 in <= 1 ms, two in <= 2 ms, one in <= 0.5 s, one past 2 s
    assert [c for c in d["bucket_counts"] if c] == [1, 2, 1, 1]
    assert d["bucket_counts"][0] == 1 and d["bucket_counts"][-1] == 1


def test_a_runs_lag_is_the_difference_of_two_reads_over_all_replicas() -> None:
    a, b = StepLag(), StepLag()
    for _ in range(50):
        a.add(0.0005)
    before = [stats(a), stats(b)]
    for _ in range(90):
        a.add(0.0005)
    for _ in range(10):
        b.add(0.15)  # 10 of the run's 100 steps late by 0.15 s: the p95 is in (0.1, 0.2]
    delta = lag_delta(before, [stats(a), stats(b)])
    assert delta is not None
    assert (delta["steps"], delta["p95_s"], delta["max_bucket_s"]) == (100, 0.2, 0.2)
    assert delta["mean_s"] == pytest.approx((90 * 0.0005 + 10 * 0.15) / 100, abs=1e-6)
    assert lag_delta(before, [{"replica": 0}, {"replica": 1}]) is None  # an older emulator


def test_saturation_names_each_threshold_crossed() -> None:
    assert saturation({"bench_cpu_share": 0.5}, {"p95_s": 0.01}, slo_s=1.0) == []
    assert saturation({"bench_cpu_share": 0.95}, {"p95_s": 0.1}, slo_s=1.0) == [
        "bench process at 95% of a core",
        "emulator steps late by 100 ms (p95)",
    ]
    assert saturation({}, None, slo_s=1.0) == []


def test_a_busy_bench_process_is_the_finding_where_cpu_is_the_work() -> None:
    busy = {"bench_cpu_share": 0.99}
    assert saturation(busy, {"p95_s": 0.001}, slo_s=1.0, cpu_is_work=True) == []
    assert saturation(busy, {"p95_s": 0.1}, slo_s=1.0, cpu_is_work=True) == [
        "emulator steps late by 100 ms (p95)"
    ]


def test_cpu_clock_measures_this_process() -> None:
    clock = CpuClock()
    x = 0
    for i in range(300_000):  # busy: most of the wall time is CPU time
        x += i * i
    out = clock.finish()
    assert out["wall_s"] > 0 and 0 < out["bench_cpu_share"] <= 1.5
    assert out["emulator_cpu_share"] is None  # no emulator child here
    assert out["load_average_1m"] == pytest.approx(os.getloadavg()[0], abs=5)


def test_the_emulator_serves_its_step_lag_per_replica() -> None:
    config = EmulatorConfig(ttft_s=0.02, tpot_s=0.005, output_tokens=6, prefix_caching=False)
    with EmulatorServer(config, replicas=2) as server:
        root = server.base_url.removesuffix("/v1")
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=30)
        per = httpx.get(f"{root}/stats", timeout=30).json()["per_replica"]
    lags = [r["step_lag"] for r in per]
    assert sum(x["steps"] for x in lags) >= 4  # one replica stepped the request through
    assert all(sum(x["bucket_counts"]) == x["steps"] for x in lags)


def test_the_bench_takes_one_blas_thread_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from alto.bench.environment import environment, one_blas_thread
    from alto.bench.settings import Settings

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    one_blas_thread()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert environment(Settings(apps=["ingest"], llm="fake"))["blas_threads"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")  # the user's number is kept
    one_blas_thread()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "2"


def test_the_bench_process_reads_one_blas_thread_before_numpy_loads(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run(
        [
            sys.executable, "-m", "alto.cli", "bench", "ingest", "--llm", "fake",
            "--embedder", "hash", "--systems", "alto", "--load", "closed",
            "--concurrency", "1", "--closed-inputs", "2", "--no-progress",
            "--out", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["environment"]["blas_threads"] == "1"
    assert "BLAS threads 1;" in (tmp_path / "report.md").read_text()


def test_nothing_the_bench_command_imports_first_loads_numpy() -> None:
    # OpenBLAS reads its thread count once, when numpy loads: it must load after the setting
    code = (
        "import sys, alto.cli, alto.bench.cli, alto.bench.__main__, alto.bench.environment;"
        "print('numpy' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
