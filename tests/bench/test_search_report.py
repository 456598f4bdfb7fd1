"""The rate search as ``alto bench`` runs it: its options, its table, its raw trials."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alto.bench.cli import BenchError, add_arguments, full_method_hint, settings_from
from alto.bench.report import _ratio
from alto.bench.search import verdict
from alto.bench.summary import search_table


def parse(*argv: str) -> Any:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return settings_from(p.parse_args(list(argv)))


def test_open_load_is_the_search_unless_fixed_rates_are_given() -> None:
    s = parse("factcheck", "--load", "open")
    assert (s.load, s.repeats, s.search_arrivals, s.search_width) == ("search", 3, 60, 0.25)
    fixed = parse("factcheck", "--load", "open", "--rate", "2,4")
    assert (fixed.load, fixed.repeats, fixed.rates) == ("open", 1, [2.0, 4.0])
    assert parse("factcheck", "--load", "search", "--rate", "2").load == "search"
    assert parse("factcheck", "--load", "open", "--repeats", "5").repeats == 5


def test_the_quick_default_and_its_pointer_to_the_full_method() -> None:
    s = parse("factcheck")
    assert (s.load, s.llm, s.embedder, s.concurrency, s.closed_inputs, s.repeats) == (
        "closed",
        "emulated",
        "hash",  # the emulated answers carry no meaning to embed
        [4, 16],
        48,
        1,
    )
    assert parse("factcheck", "--llm", "local").embedder == "minilm"
    hint = full_method_hint(s)
    assert "alto bench factcheck --load open --deployment rr4" in hint and "48" in hint


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--search-arrivals", "40"], "at least 59"),
        (["--search-rounds", "0"], "--search-rounds must be at least 1"),
        (["--search-factor", "1"], "factor must be > 1"),
        (["--search-width", "0"], "width > 0"),
        (["--search-start", "-2"], "--search-start must be a positive rate"),
        (["--search-warmup", "-1"], "--search-warmup must be at least 0"),
    ],
)
def test_search_options_are_checked_at_the_edge(argv: list[str], message: str) -> None:
    with pytest.raises(BenchError, match=message):
        parse("factcheck", "--load", "open", *argv)


def outcome(best: float | None, fail: float | None, low: float, high: float) -> dict[str, Any]:
    return {
        "best_rate": best,
        "first_fail": fail,
        "repeat_min": low,
        "repeat_max": high,
        "repeat_median": (low + high) / 2,
    }


def test_the_rate_ratio_is_parity_when_the_intervals_overlap() -> None:
    app = {
        "systems": ["alto", "langgraph-flat", "asyncio-reference"],
        "sweep": {
            "search": {
                "systems": {
                    "alto": outcome(10.0, 12.0, 10.0, 12.0),
                    "langgraph-flat": outcome(6.2, 7.4, 6.2, 7.4),  # 1.61x below: told apart
                    "asyncio-reference": outcome(9.6, 11.5, 9.0, 11.5),  # overlaps
                }
            }
        },
    }
    rows = {r["system"]: r for r in search_table(app)}
    assert rows["alto"]["vs_alto_parity"] is None
    flat, ref = rows["langgraph-flat"], rows["asyncio-reference"]
    assert not flat["vs_alto_parity"] and flat["vs_alto"] == pytest.approx(0.62)
    assert flat["vs_alto_ci"] == pytest.approx([6.2 / 12.0, 7.4 / 10.0])
    assert ref["vs_alto_parity"] and ref["vs_alto_ci"][0] <= 1 <= ref["vs_alto_ci"][1]


def test_a_ratio_inside_its_interval_is_printed_as_parity_only() -> None:
    row = {"system": "x", "p50_vs_alto": 1.55, "p50_vs_alto_ci": [0.9, 2.4]}
    assert _ratio({**row, "p50_vs_alto_parity": True}, "p50", True) == "parity [0.90, 2.40]"
    assert _ratio({**row, "p50_vs_alto_parity": False, "p50_vs_alto_ci": [1.2, 2.0]}, "p50", True)
    none = {**row, "p50_vs_alto_ci": [None, None], "p50_vs_alto_parity": False}
    assert _ratio(none, "p50", True) == "1.55x (no interval)"


@pytest.mark.slow
def test_a_search_run_keeps_every_trial_and_reports_it(tmp_path: Path) -> None:
    argv = [
        "summarize", "--llm", "fake", "--no-progress", "--queries", "3",
        "--systems", "alto,asyncio-reference", "--load", "open", "--search-start", "40",
        "--search-factor", "4", "--search-width", "1", "--repeats", "1", "--slo", "0.5",
        "--search-arrivals", "59", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "alto.cli", "bench", *argv], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    app = results["apps"]["summarize"]
    search, slo = app["sweep"]["search"], app["sweep"]["slo_s"]
    assert search["plan"]["start"] == 40.0 and app["sweep"]["levels"] == [40.0]
    runs = {i: r for i, r in enumerate(app["runs"])}
    for trial in search["trials"]:
        parts = [runs[p["run"]] for p in trial["runs"]]
        n = sum(sum(s["in_window"] for s in r["samples"]) for r in parts)
        k = sum(
            1
            for r in parts
            for s in r["samples"]
            if s["in_window"] and (s["error"] or s["latency_s"] > slo)
        )
        assert (trial["n"], trial["k"]) == (n, k)
        expected = verdict(n, k)
        assert trial["verdict"] == expected and trial["passed"] == (expected == "pass")
        for r in parts:
            assert r["level"] == trial["rate"] and r["cpu"]["wall_s"] > 0
            warmup = max(4, math.ceil(trial["rate"] * slo))  # the first SLO of arrivals
            flags = [s["in_window"] for s in r["samples"][: warmup + 1]]
            assert flags == [False] * warmup + [True]
    for system in ("alto", "asyncio-reference"):
        row = search["systems"][system]
        assert row["trials"] == sum(t["system"] == system for t in search["trials"])
        if row["best_rate"] is not None and row["first_fail"] is not None:
            assert row["best_rate"] < row["first_fail"]
    report = (tmp_path / "report.md").read_text()
    assert "### Highest rate under the SLO, rate search" in report
    assert "P[Binom(n, 0.05) <= k] <= 0.05" in report
    assert "| alto |" in report.split("### Highest rate under the SLO")[1]
