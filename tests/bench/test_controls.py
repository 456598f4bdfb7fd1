"""The controls: each built with the client it claims, its calls held by that client, and a
tiny emulated bench with every control giving the reference's outputs and a controls table."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest

import alto
from alto.bench.controls import (
    ALL_SYSTEMS,
    ALTO_AT_BALANCER,
    ALTO_NO_LINEAGE,
    ALTO_NO_PRIORITY,
    ALTO_TRACED,
    BASELINES,
    CONTROL_SYSTEMS,
    anonymous_calls,
    base_system,
    client_plans,
    controls_section,
    holds_client,
)
from alto.bench.endpoints import replica_urls
from alto.bench.operators import open_bench_operators
from alto.bench.record import Recorder, RecordingLLM
from alto.bench.runner import load_app
from alto.bench.settings import Settings
from alto.bench.systems import ALTO, SYSTEMS
from alto.operators.llm.base import LLM, Request
from alto.operators.llm.dispatch import Dispatcher

BASE = "http://127.0.0.1:9/v1"
CLIENTS = tuple(f"{b}+client" for b in BASELINES)


def test_every_control_is_named_and_built_like_a_main_system() -> None:
    assert ALL_SYSTEMS == (*SYSTEMS, *CONTROL_SYSTEMS)
    assert set(CONTROL_SYSTEMS) == {
        "alto@balancer",
        "alto-no-lineage",
        "alto-no-priority",
        "alto-traced",
        "asyncio-reference+client",
        "langgraph-flat+client",
        "langgraph-subgraph+client",
        "langgraph-functional+client",
    }
    assert {base_system(c) for c in CONTROL_SYSTEMS} == set(SYSTEMS)
    assert [base_system(s) for s in SYSTEMS] == list(SYSTEMS)
    assert [s for s in ALL_SYSTEMS if holds_client(s)] == [ALTO, *CONTROL_SYSTEMS]
    assert [s for s in ALL_SYSTEMS if anonymous_calls(s)] == list(CLIENTS)


def test_the_plans_say_what_each_control_changes() -> None:
    replicas = replica_urls(BASE, 4)
    plans = client_plans(ALL_SYSTEMS, base_url=BASE, replicas=replicas, cap=64, priority=True)
    assert set(plans) == {ALTO, *CONTROL_SYSTEMS}  # the semaphore-held systems have none
    got = {
        s: (p.targets, p.max_inflight, p.order, p.route, p.send_priority) for s, p in plans.items()
    }
    urls = tuple(replicas)
    assert got[ALTO] == (urls, 16, "root-first", "lineage", True)
    assert got[ALTO_AT_BALANCER] == ((BASE,), 64, "root-first", "lineage", True)
    assert got[ALTO_NO_LINEAGE] == (urls, 16, "fifo", "least-loaded", False)
    assert got[ALTO_NO_PRIORITY] == (urls, 16, "root-first", "lineage", False)
    assert got[ALTO_TRACED] == got[ALTO]  # only its spans differ
    for system in CLIENTS:
        assert got[system] == (urls, 16, "fifo", "least-loaded", False)
    # a server that does not honour priority gets none from anyone
    plain = client_plans(ALL_SYSTEMS, base_url=BASE, replicas=replicas, cap=64, priority=False)
    assert not any(p.send_priority for p in plain.values())
    # the Alto controls change only their own knob; auto stays auto, bounded by the cap
    tuned = client_plans(
        [ALTO, ALTO_AT_BALANCER, ALTO_NO_PRIORITY],
        base_url=BASE, replicas=replicas, cap=64, priority=True,
        max_inflight="auto", order="least-attained",
    )  # fmt: skip
    assert [(p.max_inflight, p.ceiling, p.order) for p in tuned.values()] == [
        ("auto", 16, "least-attained"),
        ("auto", 64, "least-attained"),
        ("auto", 16, "least-attained"),
    ]


@pytest.mark.server
@pytest.mark.anyio
async def test_each_client_holding_system_gets_a_client_object_of_its_own() -> None:
    settings = Settings(
        apps=["factcheck"],
        llm="emulated",
        embedder="hash",
        deployment="rr4",
        emulator_mode="thread",
        systems=list(ALL_SYSTEMS),
    )
    async with open_bench_operators(load_app("factcheck"), settings) as bench:
        server = bench.server
        honoured = server.scheduling_policy == "priority"
        replicas = tuple(server.replica_urls)
        clients = bench.clients
        assert set(clients) == {ALTO, *CONTROL_SYSTEMS}
        assert len({id(c) for c in clients.values()}) == len(clients)
        assert all(c is not bench.ops.llm for c in clients.values())
        assert bench.cap == 64

        def seen(system: str) -> tuple[Any, ...]:
            client = clients[system]
            stats = client.dispatch_stats()
            return (
                client.base_urls,
                tuple(r.limit for r in stats.replicas),
                stats.order,
                stats.route,
                client.send_priority,
            )

        assert seen(ALTO) == (replicas, (16,) * 4, "root-first", "lineage", honoured)
        assert seen(ALTO_AT_BALANCER) == (
            (server.base_url,), (64,), "root-first", "lineage", honoured,
        )  # fmt: skip
        assert seen(ALTO_NO_LINEAGE) == (replicas, (16,) * 4, "fifo", "least-loaded", False)
        assert seen(ALTO_NO_PRIORITY) == (replicas, (16,) * 4, "root-first", "lineage", False)
        for system in CLIENTS:
            assert seen(system) == (replicas, (16,) * 4, "fifo", "least-loaded", False)
        # the semaphore-held systems share the balancer's client
        assert bench.ops.llm.base_urls == (server.base_url,)
        assert set(bench.plans) == set(clients)


# -- a baseline's calls, held by its client's dispatcher --------------------------------------


class LeasingLLM(LLM):
    """Takes one lease of its dispatcher per call, as ``OpenAIClient`` does; counts the most
    calls in flight per replica."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.max_concurrency = 16
        self.inflight: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.infos: list[Any] = []

    @property
    def name(self) -> str:
        return "leasing"

    async def _call(self) -> str:
        async with self.dispatcher.lease("prefix") as lease:
            self.infos.append(alto.current_call())
            r = lease.replica
            self.inflight[r] = self.inflight.get(r, 0) + 1
            self.peak[r] = max(self.peak.get(r, 0), self.inflight[r])
            await anyio.sleep(0.01)
            self.inflight[r] -= 1
            lease.done(prompt_tokens=4, output_tokens=2)
        return "ok"

    async def _generate(self, request: Request) -> str:
        return await self._call()

    async def _generate_stream(self, request: Request) -> AsyncGenerator[str, None]:
        async with self.dispatcher.lease("prefix") as lease:  # opened on the first piece
            self.infos.append(alto.current_call())
            r = lease.replica
            self.inflight[r] = self.inflight.get(r, 0) + 1
            self.peak[r] = max(self.peak.get(r, 0), self.inflight[r])
            for piece in ("a", " b", " c"):
                await anyio.sleep(0.005)
                yield piece
            self.inflight[r] -= 1


def _wrapped(anonymous: bool) -> tuple[RecordingLLM, LeasingLLM]:
    inner = LeasingLLM(Dispatcher(["a", "b"], max_inflight=2, order="fifo", route="least-loaded"))
    return RecordingLLM(inner, Recorder(), anonymous_calls=anonymous), inner


async def _baseline_calls(llm: RecordingLLM, n: int) -> None:
    async def chat() -> None:
        assert await llm.chat([{"role": "user", "content": "q"}]) == "ok"

    async def stream() -> None:
        async with aclosing(llm.stream([{"role": "user", "content": "q"}])) as pieces:
            assert "".join([p async for p in pieces]) == "a b c"

    async with anyio.create_task_group() as group:
        for i in range(n):
            group.start_soon(chat if i % 2 else stream)


@pytest.mark.anyio
async def test_a_baselines_calls_are_held_by_its_clients_dispatcher() -> None:
    llm, inner = _wrapped(anonymous=True)
    await _baseline_calls(llm, 12)
    stats = inner.dispatcher.stats()
    assert inner.peak == {0: 2, 1: 2}  # the limit per replica held, both replicas used
    assert stats.max_queued >= 8  # 12 calls, 4 slots: the rest waited in the dispatcher
    assert sum(r.calls for r in stats.replicas) == 12 and stats.queued == 0
    # each an anonymous call: a root of its own, no ancestry beyond it
    assert len(inner.infos) == 12 and all(i is not None for i in inner.infos)
    assert len({i.roots for i in inner.infos}) == 12
    assert all(i.ancestries == (i.roots,) for i in inner.infos)
    assert alto.current_call() is None  # nothing left behind in the caller
    assert len(llm.recorder.calls) == 12 and not any(c.error for c in llm.recorder.calls)


@pytest.mark.anyio
async def test_without_it_the_dispatcher_lets_calls_outside_stages_through() -> None:
    llm, inner = _wrapped(anonymous=False)
    await _baseline_calls(llm, 12)
    assert max(inner.peak.values()) > 2  # no limit held
    assert inner.dispatcher.stats().max_queued == 0
    assert inner.infos == [None] * 12


@pytest.mark.anyio
async def test_a_stage_call_keeps_its_own_lineage() -> None:
    llm, inner = _wrapped(anonymous=True)

    @alto.stage(replicas=4)
    async def ask(x: int) -> str:
        return await llm.chat([{"role": "user", "content": str(x)}])

    @alto.flow
    def flow(x: int):  # type: ignore[no-untyped-def]
        return ask(x)

    assert await flow.run(range(3)) == ["ok"] * 3
    assert sorted(i.roots for i in inner.infos) == [(0,), (1,), (2,)]
    assert {i.stage for i in inner.infos} == {"ask"}


# -- the report -------------------------------------------------------------------------------


def _row(level: float, system: str, p50: float) -> dict[str, Any]:
    return {
        "level": level, "system": system, "p50_s": p50, "p50_ci": [p50 - 0.1, p50 + 0.1],
        "p95_s": 2 * p50, "p95_ci": [None, None], "failed": 0,
    }  # fmt: skip


def test_the_controls_table_puts_each_control_beside_its_system() -> None:
    systems = [ALTO, "asyncio-reference", "langgraph-flat", ALTO_NO_LINEAGE,
               "asyncio-reference+client"]  # fmt: skip
    app: dict[str, Any] = {
        "systems": systems,
        "timing_emulation": True,
        "summary": [_row(level, s, 1.0 + i) for level in (1.0, 4.0) for i, s in enumerate(systems)],
        "fairness": {"llm_cap_enforcement": {s: f"held by {s}" for s in systems}},
    }
    lines = controls_section("factcheck", app, "closed")
    assert "### Controls: what each ingredient buys (timing emulation)" in lines
    assert "- `asyncio-reference+client`: held by asyncio-reference+client" in lines
    rows = [line.split(" | ") for line in lines if line.startswith("| ") and "---" not in line]
    assert rows[0][0] == "| system" and len(rows[0]) == 5  # closed loop: no SLO column
    named = [r[0].removeprefix("| ") for r in rows[1:] if r[0] != "| "]
    # langgraph-flat ran no control: it is not in the table
    assert named == [ALTO, ALTO_NO_LINEAGE, "asyncio-reference", "asyncio-reference+client"]
    assert rows[1][2:4] == ["1", "1.000 [0.900, 1.100]"] and rows[2][2] == "4"
    assert rows[1][4] == "2.000 |"  # no interval: the point alone
    assert lines[-1] == "Table: factcheck, controls, timing emulation."
    assert controls_section("factcheck", {**app, "systems": [ALTO]}, "closed") == []


# -- a tiny emulated bench with every control --------------------------------------------------


@pytest.mark.server
@pytest.mark.langgraph
def test_every_control_runs_and_matches_the_reference(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "alto.cli", "bench", "factcheck",
            "--llm", "emulated", "--emulator-mode", "thread", "--deployment", "rr4",
            "--embedder", "hash", "--load", "closed", "--concurrency", "1",
            "--closed-inputs", "2", "--queries", "2", "--controls", "--no-progress",
            "--out", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    app = json.loads((tmp_path / "results.json").read_text())["apps"]["factcheck"]
    assert app["systems"] == list(ALL_SYSTEMS) and app["skipped"] == {}
    cap = app["fairness"]["llm_cap"]
    assert cap == 64
    # the bench's emulator honours priority: Alto sends it, behind the balancer and traced
    # too; no other
    sent = {s for s, c in app["fairness"]["clients"].items() if c["send_priority"]}
    assert sent == {ALTO, ALTO_AT_BALANCER, ALTO_TRACED}
    runs = {r["system"]: r for r in app["runs"]}
    assert set(runs) == set(ALL_SYSTEMS)
    for system, run in runs.items():
        assert run["completed"] == 2 and run["failed"] == 0, system
        assert run["mismatched"] == 0, system  # the reference's outputs, exactly
        endpoint, per_replica = run["endpoint"], run["emulator_replicas"]
        assert endpoint["calls"] == run["llm_calls"] == run["requests"] > 0, system
        if not holds_client(system):
            assert endpoint["client"] == "semaphore" and endpoint["limit"] == cap
            continue
        assert endpoint["client"] == "dispatcher" and endpoint["limit"] == cap, system
        clients = [r["calls"] for r in endpoint["replicas"]]
        if system == ALTO_AT_BALANCER:  # one target: the balancer places its calls
            assert [r["limit"] for r in endpoint["replicas"]] == [cap]
        else:  # straight to the replicas: its replica i is the server's
            assert clients == [r["requests"] for r in per_replica], system
            assert [r["limit"] for r in endpoint["replicas"]] == [16] * 4
            assert all(r["max_in_flight"] <= 16 for r in endpoint["replicas"])
        want = "fifo" if system in (ALTO_NO_LINEAGE, *CLIENTS) else "root-first"
        assert endpoint["order"] == want, system
    report = (tmp_path / "report.md").read_text()
    table = report.split("### Controls: what each ingredient buys (timing emulation)")[1]
    table = table.split("Table: factcheck, controls")[0]
    named = [line.split(" | ")[0].removeprefix("| ") for line in table.splitlines()]
    assert set(ALL_SYSTEMS) <= set(named)


def _open_app(sweep: dict[str, Any]) -> dict[str, Any]:
    p50 = {ALTO: (0.2, 0.4), ALTO_NO_LINEAGE: (0.2, 0.22)}
    summary = []
    for system, values in p50.items():
        for rate, v in zip((1.0, 2.0), values, strict=True):
            row = _row(rate, system, v)
            row["p95_ci"] = [2 * v - 0.05, 2 * v + 0.05]
            for key in ("p50_vs_alto", "p50_vs_alto_ci", "p50_vs_alto_parity"):
                row[key] = None  # what the SLO table reads beside the rate (not shown here)
            row.update(cached_share=None, in_flight=None)
            summary.append(row)
    return {"systems": [ALTO, ALTO_NO_LINEAGE], "summary": summary, "sweep": sweep}


def _rate_cells(lines: list[str]) -> dict[str, str]:
    rows = [line.split(" | ") for line in lines if line.startswith("| ") and "---" not in line]
    assert rows[0][-1] == "max rate under SLO |"
    return {r[0].removeprefix("| "): r[-1].removesuffix(" |") for r in rows[1:] if r[0] != "| "}


def test_the_controls_table_gives_the_highest_rate_under_the_slo() -> None:
    # a fixed-rate sweep: the highest rate whose p95 stays under the SLO
    fixed = _open_app({"slo_s": 0.5, "moderate_rate": 1.0, "levels": [1.0, 2.0]})
    assert _rate_cells(controls_section("x", fixed, "open")) == {
        ALTO: "1/s",  # its p95 at 2/s, 0.8 s, is over the SLO
        ALTO_NO_LINEAGE: "2/s",
    }
    # a rate search: its highest passing rate, with the rate interval of its repeats
    found = {
        ALTO: {"best_rate": 2.0, "first_fail": 2.5, "repeat_min": 1.8, "repeat_max": 2.4},
        ALTO_NO_LINEAGE: {"best_rate": None, "first_fail": 0.5},
    }
    searched = _open_app({"slo_s": 0.5, "search": {"systems": found}})
    assert _rate_cells(controls_section("x", searched, "open")) == {
        ALTO: "2/s [1.8, 2.5]",
        ALTO_NO_LINEAGE: "none",
    }


def _settings(*args: str) -> Any:
    import argparse

    from alto.bench.cli import add_arguments, settings_from

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from(parser.parse_args(["factcheck", *args]))


def test_controls_are_chosen_by_name_or_all_at_once() -> None:
    from alto.bench.cli import BenchError

    emulated = ("--llm", "emulated", "--deployment", "rr4")
    assert _settings(*emulated).systems == list(SYSTEMS)
    assert _settings(*emulated, "--controls").systems == list(ALL_SYSTEMS)
    named = _settings(*emulated, "--systems", "alto-no-priority,alto,langgraph-flat+client")
    assert named.systems == [ALTO, ALTO_NO_PRIORITY, "langgraph-flat+client"]
    with pytest.raises(BenchError, match="hold LLM clients of their own"):
        _settings("--llm", "fake", "--controls")
    # a control that does not change how Alto reaches the LLM needs no server
    traced = _settings("--llm", "fake", "--systems", "alto,alto-traced")
    assert traced.systems == [ALTO, ALTO_TRACED]
    with pytest.raises(BenchError, match="unknown systems"):
        _settings(*emulated, "--systems", "alto@nowhere")


def test_the_traced_control_runs_where_no_llm_is_called(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "alto.cli", "bench", "ingest", "--llm", "fake",
            "--embedder", "hash", "--systems", "alto,alto-traced,asyncio-reference",
            "--load", "closed", "--concurrency", "2", "--closed-inputs", "4",
            "--no-progress", "--out", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    app = json.loads((tmp_path / "results.json").read_text())["apps"]["ingest"]
    assert set(app["systems"]) == {ALTO, ALTO_TRACED, "asyncio-reference"}
    assert app["skipped"] == {}
    for run in app["runs"]:
        assert run["completed"] == 4 and run["failed"] == run["mismatched"] == 0, run["system"]
        assert run["late_spans"] == 0, run["system"]
    report = (tmp_path / "report.md").read_text()
    table = report.split("### Controls: what each ingredient buys")[1].split("Table: ingest")[0]
    assert "held to the cap" not in table  # ingest makes no LLM calls
    assert "| alto-traced | a span per stage call (`trace=True`) |" in table


@pytest.mark.anyio
async def test_alto_reads_its_work_per_input_from_the_recorded_calls() -> None:
    from alto.bench.record import recording_operators
    from alto.bench.systems import Arrival, make_server
    from alto.operators.embedding import HashEmbedder
    from examples.common import Operators
    from examples.ingest.steps import Corpus, Doc

    app = load_app("ingest")
    words = " ".join(f"w{i}" for i in range(200))  # 3 chunks: a batched embed call
    corpora = [Corpus(f"c{i}", (Doc(f"d{i}", words),)) for i in range(3)]
    seen: dict[str, Any] = {}
    for system in (ALTO, ALTO_TRACED):
        recorder = Recorder()
        ops = recording_operators(Operators(embedder=HashEmbedder()), recorder)
        server = make_server(system, app, ops, recorder=recorder, langgraph_concurrency=1)

        async def arrivals() -> AsyncGenerator[Arrival, None]:
            for i, corpus in enumerate(corpora):
                yield Arrival(10 + i, corpus, 0.0)  # the run's indexes, not Alto's

        got: list[Any] = []

        def done(i: int, value: Any, error: BaseException | None, got: list[Any] = got) -> None:
            got.append((i, error))

        await server.serve(arrivals(), done)
        assert sorted(got) == [(10, None), (11, None), (12, None)], system
        roots = {r for call in recorder.calls for r in call.roots}
        assert roots == {0, 1, 2} and all(c.root is None for c in recorder.calls)
        seen[system] = (server.stats.spans is not None, server.span_ends())
    traced, ends = seen[ALTO_TRACED]
    assert traced and set(ends) == {10, 11, 12}
    untraced, ends = seen[ALTO]
    assert not untraced and set(ends) == {10, 11, 12}  # from the operator calls alone


def test_a_call_in_a_stage_call_carries_the_roots_of_its_fragments() -> None:
    from alto.bench.record import current_root, stage_roots

    seen: list[tuple[int, ...]] = []

    @alto.stage(batch=8)
    async def embed(texts: list[str]) -> list[str]:
        seen.append(stage_roots())
        return texts

    @alto.flow
    def one(text: str):
        return embed(text)

    assert stage_roots() == ()  # outside a stage call
    alto.run(one, ["a", "b", "c"])
    assert sorted(r for batch in seen for r in batch) == [0, 1, 2]
    token = current_root.set(7)  # a per-input system's call: its root, not a stage's
    try:
        assert stage_roots() == ()
    finally:
        current_root.reset(token)
