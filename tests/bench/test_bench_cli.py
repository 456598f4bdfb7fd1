"""``alto bench`` as a user runs it: what it writes, and how it refuses bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alto.bench.stats import percentile, poisson_schedule, rotation

FAST = ["--llm", "fake", "--embedder", "hash", "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"


def bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alto.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


def load(out: Path) -> dict[str, Any]:
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


@pytest.fixture(scope="module")
def factcheck_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    ok(
        bench(
            "factcheck",
            *FAST,
            "--queries",
            "3",
            "--concurrency",
            "1,2",
            "--closed-inputs",
            "6",
            "--repeats",
            "1",
            "--systems",
            "alto,asyncio-reference",
            "--out",
            str(out),
            "--trace",
            str(out / "trace.json"),
        )
    )
    return out


def test_results_json_holds_every_sample_and_the_environment(factcheck_run: Path) -> None:
    results = load(factcheck_run)
    settings = results["settings"]
    assert (settings["llm"], settings["queries"], settings["concurrency"]) == ("fake", 3, [1, 2])
    assert settings["systems"] == ["alto", "asyncio-reference"] and settings["repeats"] == 1
    assert (settings["load"], settings["closed_inputs"], settings["fanout"]) == (
        "closed",
        6,
        "varied",
    )
    env = results["environment"]
    for key in ("cpu_count", "python", "machine", "platform", "packages", "llm", "seed"):
        assert key in env
    assert env["packages"]["anyio"] and env["llm"] == "fake"
    app = results["apps"]["factcheck"]
    assert app["inputs"] == 3 and app["timing_emulation"] is False
    assert app["fairness"]["alto_llm_stages"] == 3  # claims, queries, verdict
    knobs = app["fairness"]
    # one cap for all: the fake LLM's own 8 calls at once x 3 LLM stages; every system's own
    # knob is lifted above it
    assert knobs["llm_cap"] == 8 * 3 <= knobs["alto_replicas_per_llm_stage"]
    assert knobs["langgraph_max_concurrency"] > knobs["llm_cap"]
    assert app["config"]["max_claims"] == 8  # the varied fan-out's setting
    runs = app["runs"]
    assert len(runs) == 2 * 2  # levels x systems, one repeat
    for run in runs:
        # slots are refilled: 6 submissions cycle through the 3 inputs
        assert run["submitted"] == run["completed"] == 6
        assert run["failed"] == 0 and run["mismatched"] == 0 and run["late_spans"] == 0
        assert run["llm_calls"] > 0 and run["throughput"] > 0
        assert [s["index"] for s in run["samples"]] == list(range(6))
        assert [s["input"] for s in run["samples"]] == [0, 1, 2, 0, 1, 2]
        assert run["in_flight"] == pytest.approx(run["level"], rel=0.25)
        assert run["prompt_tokens"] is None  # no emulator: no token counters
        for sample in run["samples"]:
            assert sample["error"] is None and sample["latency_s"] > 0
            assert 0 < sample["first_fragment_s"] <= sample["latency_s"]
        assert run["first_output_s"] == pytest.approx(
            min(s["submitted_s"] + s["latency_s"] for s in run["samples"]), abs=2e-6
        )


def test_systems_interleave_in_rotating_order(factcheck_run: Path) -> None:
    runs = load(factcheck_run)["apps"]["factcheck"]["runs"]
    order = [(r["level"], r["system"]) for r in runs]
    expected = [
        (level, s)
        for turn, level in enumerate([1.0, 2.0])
        for s in rotation(["alto", "asyncio-reference"], turn)
    ]
    assert order == expected
    assert [r["position"] for r in runs] == [0, 1, 0, 1]


def test_summary_agrees_with_the_raw_samples(factcheck_run: Path) -> None:
    app = load(factcheck_run)["apps"]["factcheck"]
    rows = {(r["level"], r["system"]): r for r in app["summary"]}
    for (level, system), row in rows.items():
        (run,) = [r for r in app["runs"] if r["level"] == level and r["system"] == system]
        latencies = [s["latency_s"] for s in run["samples"] if s["in_window"]]
        assert row["n"] == len(latencies)
        assert row["p50_s"] == pytest.approx(percentile(latencies, 50))
        assert row["p95_s"] == pytest.approx(percentile(latencies, 95))
        low, high = row["p50_ci"]
        assert min(latencies) <= low <= high <= max(latencies)
        alto = rows[(level, "alto")]
        assert row["p50_vs_alto"] == pytest.approx(row["p50_s"] / alto["p50_s"])
        assert row["throughput_vs_alto"] == pytest.approx(row["throughput"] / alto["throughput"])
        if system != "alto" and row["p50_vs_alto_ci"][0] is not None:
            low, high = row["p50_vs_alto_ci"]
            assert row["p50_vs_alto_parity"] == (low <= 1.0 <= high)
    assert all(rows[(level, "alto")]["p50_vs_alto"] == 1.0 for level in (1.0, 2.0))


def test_bound_needs_the_emulator_but_the_unloaded_reference_is_measured(
    factcheck_run: Path,
) -> None:
    bound = load(factcheck_run)["apps"]["factcheck"]["bound"]
    assert bound["method"] is None and bound["rate_ceiling"] is None
    assert [q["index"] for q in bound["queries"]] == [0, 1, 2]
    assert all(q["unloaded_reference_s"] > 0 and "bound_s" not in q for q in bound["queries"])
    # and no lower-bound row under load without the emulator's timing model
    rows = load(factcheck_run)["apps"]["factcheck"]["summary"]
    assert {r["system"] for r in rows} == {"alto", "asyncio-reference"}


def test_timelines_record_every_operator_call(factcheck_run: Path) -> None:
    timelines = load(factcheck_run)["apps"]["factcheck"]["timelines"]
    assert set(timelines) == {"alto", "asyncio-reference"}
    for line in timelines.values():
        calls = line["calls"]
        assert calls[0]["step"] == "claims" and calls[0]["method"] == "stream"
        assert {c["step"] for c in calls} == {"claims", "queries", "retrieve", "judge"}
        assert [c["start"] for c in calls] == sorted(c["start"] for c in calls)
        assert all(c["end"] >= c["start"] >= 0 for c in calls)
        # one clock: no call of the input ends after the input's recorded completion
        assert line["done_s"] == pytest.approx(line["submitted_s"] + line["latency_s"], abs=2e-6)
        assert max(c["end"] for c in calls) <= line["done_s"] + 1e-6
        assert max((s["end"] for s in line["stage_spans"]), default=0) <= line["done_s"] + 1e-6
    spans = timelines["alto"]["stage_spans"]
    assert spans and not timelines["asyncio-reference"]["stage_spans"]


def test_report_and_plots(factcheck_run: Path) -> None:
    report = (factcheck_run / "report.md").read_text()
    assert "## factcheck" in report
    assert "| concurrency | system | n | p50 | p95 | p50 / Alto |" in report
    for row in ("| 1 | alto |", "| 1 | asyncio-reference |", "| 2 | alto |"):
        assert row in report
    assert "asyncio optimum" not in report and "| optimum |" not in report
    assert "timing emulation" not in report.split("## Method")[0].split("## factcheck")[1]
    assert "Not computed" in report
    for name in ("latency_cdf", "throughput", "timeline"):
        png = factcheck_run / f"{name}_factcheck.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000
        assert f"({name}_factcheck.png)" in report


def test_chrome_trace_is_json_with_complete_events(factcheck_run: Path) -> None:
    trace = json.loads((factcheck_run / "trace.json").read_text())
    events = trace["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    assert complete and all(e["dur"] >= 0 and e["ts"] >= 0 for e in complete)
    assert {"claims", "judge"} <= {e["name"] for e in complete}
    names = {e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert "factcheck / alto (operator calls)" in names
    assert "factcheck / alto (stage calls)" in names
    assert "factcheck / asyncio-reference (operator calls)" in names


def test_open_load_submits_on_the_seeded_schedule(tmp_path: Path) -> None:
    ok(
        bench(
            "summarize",
            *FAST,
            "--queries",
            "3",
            "--load",
            "open",
            "--rate",
            "40,20",
            "--open-inputs",
            "4",
            "--no-sweep-stop",
            "--repeats",
            "2",
            "--seed",
            "5",
            "--systems",
            "asyncio-reference,alto",
            "--out",
            str(tmp_path),
        )
    )
    results = load(tmp_path)
    assert results["settings"]["rates"] == [20.0, 40.0]
    app = results["apps"]["summarize"]
    assert app["sweep"]["levels"] == [20.0, 40.0] and app["sweep"]["moderate_rate"] == 40.0
    unloaded = app["sweep"]["unloaded_reference_p50_s"]
    assert app["sweep"]["slo_s"] == pytest.approx(max(3 * unloaded, 0.05))  # the floor
    runs = app["runs"]
    assert len(runs) == 2 * 2 * 2
    for run in runs:
        # 4 measured arrivals after the warm-up: 4 (--search-warmup's default), more than
        # one SLO's worth at these rates
        schedule = poisson_schedule(8, run["level"], 5 + run["repeat"])
        assert [s["submitted_s"] for s in run["samples"]] == pytest.approx(schedule, abs=2e-6)
        assert [s["input"] for s in run["samples"]] == [0, 1, 2, 0, 1, 2, 0, 1]
        assert [s["in_window"] for s in run["samples"]] == [False] * 4 + [True] * 4
        assert run["completed"] == 8 and run["mismatched"] == 0 and run["late_spans"] == 0
    report = (tmp_path / "report.md").read_text()
    assert "| arrival rate | system |" in report and "| 20/s | alto |" in report
    assert "### Throughput at a latency target" in report
    assert "| alto |" in report.split("### Throughput at a latency target")[1]


@pytest.mark.server
def test_emulated_run_labels_every_table_and_bounds_each_input(tmp_path: Path) -> None:
    ok(
        bench(
            "multihop",
            "--llm",
            "emulated",
            "--embedder",
            "hash",
            "--no-progress",
            "--queries",
            "2",
            "--concurrency",
            "1",
            "--closed-inputs",
            "2",
            "--repeats",
            "1",
            "--systems",
            "alto,asyncio-reference",
            "--emulator-mode",
            "thread",
            "--out",
            str(tmp_path),
        )
    )
    app = load(tmp_path)["apps"]["multihop"]
    assert app["timing_emulation"] is True
    assert app["emulator"]["probe"]["agrees"] is True
    assert app["emulator"]["config"]["tpot_s"] > 0
    for q in app["bound"]["queries"]:
        assert (
            0
            < q["llm_only_bound_s"]
            <= q["bound_s"]
            == pytest.approx(q["llm_s"] + q["other_s"], abs=1e-5)
        )
        # the same run's calls took at least their modeled time: the bound is below it
        assert q["bound_s"] <= q["unloaded_reference_s"]
        assert q["chain"][0] == "decompose" and q["chain"][-1] == "compose"
        assert q["decode_tokens"] > 0
    assert app["bound"]["rate_ceiling"] > 0
    for run in app["runs"]:  # the emulator's counters, per run, from a cold prefix cache
        assert run["requests"] == run["llm_calls"] > 0
        assert 0 <= run["cached_tokens"] <= run["prompt_tokens"]
    report = (tmp_path / "report.md").read_text()
    titles = [line for line in report.splitlines() if line.startswith(("### ", "Table: "))]
    assert titles and all("timing emulation" in line for line in titles)
    assert "| 1 | *lower bound (mean, " in report


@pytest.mark.server
def test_alto_calls_the_replicas_through_its_dispatcher_under_the_shared_cap(
    tmp_path: Path,
) -> None:
    ok(
        bench(
            "multihop",
            "--llm",
            "emulated",
            "--embedder",
            "hash",
            "--no-progress",
            "--deployment",
            "rr4",
            "--max-inflight",
            "2",
            "--order",
            "fifo",
            "--route",
            "round-robin",
            "--queries",
            "4",
            "--concurrency",
            "4",
            "--closed-inputs",
            "4",
            "--systems",
            "alto,asyncio-reference",
            "--emulator-mode",
            "thread",
            "--out",
            str(tmp_path),
            "--trace",
            str(tmp_path / "trace.json"),
        )
    )
    results = load(tmp_path)
    assert results["settings"]["max_inflight"] == "2" and results["settings"]["order"] == "fifo"
    app = results["apps"]["multihop"]
    knobs = app["fairness"]
    cap = knobs["llm_cap"]
    client = knobs["alto_client"]
    assert (client["endpoint"], client["max_inflight"], client["ceiling"]) == (
        "replicas",
        2,
        cap // 4,
    )
    assert (client["order"], client["route"], client["send_priority"]) == (
        "fifo",
        "round-robin",
        True,
    )
    assert [t.rsplit("/r/", 1)[1] for t in client["targets"]] == [f"{i}/v1" for i in range(4)]
    assert "dispatcher" in knobs["llm_cap_enforcement"]["alto"]
    assert f"semaphore of {cap}" in knobs["llm_cap_enforcement"]["asyncio-reference"]
    for run in app["runs"]:
        endpoint, per_replica = run["endpoint"], run["emulator_replicas"]
        assert sum(r["requests"] for r in per_replica) == run["requests"] == run["llm_calls"]
        assert endpoint["calls"] == run["llm_calls"]
        if run["system"] == "alto":  # straight to the replicas: its replica i is the server's
            assert endpoint["client"] == "dispatcher" and endpoint["limit"] == 8
            assert [r["calls"] for r in endpoint["replicas"]] == [
                r["requests"] for r in per_replica
            ]
            assert [r["prompt_tokens"] for r in endpoint["replicas"]] == [
                r["prompt_tokens"] for r in per_replica
            ]
            assert all(1 <= r["max_in_flight"] <= 2 for r in endpoint["replicas"])
        else:
            assert endpoint["client"] == "semaphore" and endpoint["limit"] == cap
            assert endpoint["replicas"] == [] and endpoint["max_in_flight"] <= cap
    report = (tmp_path / "report.md").read_text()
    table = report.split("### The LLM endpoint per system (timing emulation)")[1]
    rows = [line for line in table.splitlines() if line.startswith("| 4 |")]
    assert [row.split(" | ")[1:3] for row in rows] == [
        ["alto", "dispatcher"],
        ["asyncio-reference", "semaphore"],
    ]
    assert "`--alto-endpoint replicas`, `--max-inflight 2`, `--order fifo`" in report
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert "queued" in counters and any(n.startswith("in flight [0] ") for n in counters)


@pytest.mark.langgraph
def test_every_system_on_every_app(tmp_path: Path) -> None:
    ok(
        bench(
            "all",
            *FAST,
            "--queries",
            "2",
            "--concurrency",
            "1,2",
            "--closed-inputs",
            "2",
            "--repeats",
            "1",
            "--docs-per-corpus",
            "4",
            "--out",
            str(tmp_path),
        )
    )
    results = load(tmp_path)
    assert results["failures"] == {}
    assert list(results["apps"]) == ["factcheck", "multihop", "summarize", "ingest"]
    for name, app in results["apps"].items():
        assert app["systems"] == [
            "alto",
            "langgraph-flat",
            "langgraph-subgraph",
            "langgraph-functional",
            "asyncio-reference",
        ]
        assert len(app["runs"]) == 2 * 5
        assert all(r["completed"] == 2 and r["mismatched"] == 0 for r in app["runs"]), name
        assert all(r["late_spans"] == 0 for r in app["runs"]), name
        assert set(app["timelines"]) == {"alto", "langgraph-flat", "asyncio-reference"}
        assert (tmp_path / f"timeline_{name}.png").read_bytes()[:8] == PNG
    assert results["apps"]["ingest"]["fairness"]["alto_llm_stages"] == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["factcheck", "--concurrency", "0"], "--concurrency must be positive"),
        (["factcheck", "--concurrency", "a,b"], "comma-separated numbers"),
        (["factcheck", "--queries", "0"], "--queries must be at least 1"),
        (["factcheck", "--systems", "alto,nope"], "unknown systems ['nope']"),
        (["nope"], "unknown app 'nope'"),
        (["factcheck,nope"], "unknown app 'nope'"),
        (["all", "--config", "x.json"], "--config holds one app's settings"),
        (["factcheck", "--llm", "openai"], "--llm openai needs --llm-url"),
        (
            ["all", "--queries", "17"],
            "--queries 17: the summarize data set has 16 inputs; pass --queries 16 or fewer",
        ),
        (
            ["ingest", "--queries", "313", "--docs-per-corpus", "16", "--fanout", "uniform"],
            "--queries 313 x 16 documents per corpus",
        ),
        (["factcheck", "--deployment", "rr4"], "--deployment rr4 starts its replicas"),
        (["factcheck", "--slo", "0"], "--slo must be a positive number of seconds"),
        (["factcheck", "--closed-inputs", "0"], "--closed-inputs must be at least 1"),
        (["factcheck", "--order", "fifo"], "Alto's dispatcher is for an OpenAI-compatible"),
        (
            ["factcheck", "--llm", "emulated", "--max-inflight", "17"],
            "--max-inflight 17 per replica x 1 target(s) exceeds the shared cap of 16",
        ),
        (
            [
                "factcheck",
                "--llm",
                "emulated",
                "--deployment",
                "rr4",
                "--max-inflight",
                "9",
                "--llm-concurrency",
                "32",
            ],
            "at most 8, or raise --llm-concurrency",
        ),  # fmt: skip
        (["factcheck", "--llm", "emulated", "--max-inflight", "x"], "a number or auto"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    result = bench(*FAST, *args, "--out", str(tmp_path), timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alto: error:"), result.stderr
    assert needle in lines[0]
    assert not (tmp_path / "results.json").exists()
