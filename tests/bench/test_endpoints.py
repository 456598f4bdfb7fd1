"""Alto's own LLM client in the bench, and what the endpoint saw per run (pure parts)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import alto
from alto.bench.endpoints import (
    DispatchWatch,
    client_plan,
    most_at_once,
    replica_deltas,
    replica_urls,
    semaphore_figures,
)
from alto.bench.record import Call
from alto.operators.llm.dispatch import Dispatcher
from alto.operators.llm.observe import counter_events, dispatch_table, endpoints_of

BASE = "http://127.0.0.1:9/v1"


def plan(replicas: int = 4, **kw: Any) -> Any:
    args: dict[str, Any] = dict(
        base_url=BASE, replicas=replica_urls(BASE, replicas), cap=64, endpoint=None,
        max_inflight=None, order=None, route=None, send_priority=True,
    )  # fmt: skip
    return client_plan(**{**args, **kw})


def test_alto_gets_the_replica_urls_by_default_when_there_are_several() -> None:
    p = plan()
    assert p.endpoint == "replicas"
    assert p.targets == tuple(f"http://127.0.0.1:9/r/{i}/v1" for i in range(4))
    assert p.ceiling == 16 and p.as_dict()["total_limit"] == 64
    one = plan(replicas=1, cap=16)
    assert one.endpoint == "balancer" and one.targets == (BASE,) and one.ceiling == 16
    behind = plan(endpoint="balancer")
    assert behind.targets == (BASE,) and behind.ceiling == 64


def test_the_knobs_default_to_the_clients_own() -> None:
    from alto.operators.llm.openai import OpenAIClient

    params = inspect.signature(OpenAIClient.__init__).parameters
    p = plan()
    default = params["max_inflight"].default
    # a number or "auto" as the client has it; a limit the servers report, the cap's share
    held = default if isinstance(default, int) or default == "auto" else p.ceiling
    assert (p.order, p.route, p.max_inflight) == (
        params["order"].default,
        params["route"].default,
        min(held, p.ceiling) if isinstance(held, int) else held,
    )
    assert plan(order="fifo", route="round-robin", max_inflight="8").max_inflight == 8


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"max_inflight": "17"}, "more than the shared cap of 64: at most 16"),
        ({"max_inflight": "0"}, "at least 1"),
        ({"max_inflight": "many"}, "a number or auto"),
        ({"cap": 3}, "cannot give each of 4 replicas one"),
    ],
)
def test_alto_never_gets_more_than_the_shared_cap(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        plan(**kw)


def _call(start: float, end: float, queued: float = 0.0, operator: str = "llm") -> Call:
    return Call(0, operator, "chat", "step", start, end, queued_s=queued)


def test_the_semaphores_queue_and_flight_come_from_the_recorded_calls() -> None:
    assert most_at_once([]) == 0
    assert most_at_once([(0, 1), (1, 2)]) == 1  # one ends as the next starts
    assert most_at_once([(0, 3), (1, 2), (1.5, 4)]) == 3
    calls = [
        _call(0.0, 1.0),
        _call(0.0, 1.0),
        _call(1.0, 2.0, queued=1.0),  # waited from 0 to 1
        _call(1.0, 2.0, queued=0.5),  # waited from 0.5 to 1
        _call(0.2, 0.3, operator="embedder"),
    ]
    got = semaphore_figures(calls, 2)
    assert got == {
        "client": "semaphore",
        "limit": 2,
        "max_queued": 2,
        "max_in_flight": 2,
        "calls": 4,
        "replicas": [],
    }


def test_emulator_counters_per_replica_are_differences_over_the_run() -> None:
    def stats(i: int, requests: int, queried: int, hit: int) -> dict[str, Any]:
        return {
            "replica": i,
            "requests": requests,
            "prefix_cache": {"queried_tokens": queried, "hit_tokens": hit},
        }

    before = [stats(0, 5, 100, 10), stats(1, 0, 0, 0)]
    after = [stats(0, 9, 300, 110), stats(1, 2, 50, 0)]
    assert replica_deltas(before, after) == [
        {"replica": 0, "requests": 4, "prompt_tokens": 200, "cached_tokens": 100,
         "cached_share": 0.5},
        {"replica": 1, "requests": 2, "prompt_tokens": 50, "cached_tokens": 0,
         "cached_share": 0.0},
    ]  # fmt: skip


class _Endpoint:
    """What the bench and the CLI need of a client: ``dispatcher`` and ``dispatch_stats()``."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.name = "scripted endpoint"

    def dispatch_stats(self) -> Any:
        return self.dispatcher.stats()


def _leasing_flow(endpoint: _Endpoint) -> Any:
    @alto.stage(replicas=8)
    async def call(x: int) -> int:
        async with endpoint.dispatcher.lease(f"shared prefix {x}") as lease:
            await anyio.sleep(0.01)
            lease.done(prompt_tokens=10, cached_tokens=4, output_tokens=3)
        return x

    @alto.flow
    def leasing(x: int):  # type: ignore[no-untyped-def]
        return call(x)

    return leasing


@pytest.mark.anyio
async def test_a_runs_dispatcher_figures_and_counter_tracks() -> None:
    endpoint = _Endpoint(Dispatcher(["a", "b"], max_inflight=1, route="round-robin"))
    watch = DispatchWatch(endpoint)
    await _leasing_flow(endpoint).run(range(3))  # an earlier run: not counted below
    watch.start()
    assert endpoint.dispatcher.samples == []
    assert await _leasing_flow(endpoint).run(range(6)) == list(range(6))
    samples = [list(s) for s in endpoint.dispatcher.samples]
    got = watch.finish()
    assert endpoint.dispatcher.samples == []  # handed over, not kept for the next run
    assert got["client"] == "dispatcher" and got["limit"] == 2
    assert got["calls"] == 6 and [r["calls"] for r in got["replicas"]] == [3, 3]
    assert [r["max_in_flight"] for r in got["replicas"]] == [1, 1]  # the limit held
    assert got["max_queued"] >= 1  # 8 stage replicas, 2 slots: calls waited
    assert all(r["cached_share"] == 0.4 and r["healthy"] for r in got["replicas"])

    events = counter_events("scripted endpoint", ["a", "b"], samples, pid=7)
    names = {e["name"] for e in events if e["ph"] == "C"}
    assert names == {"in flight [0] a", "in flight [1] b", "queued"}
    assert all(e["pid"] == 7 for e in events)
    flights = [e["args"]["in flight"] for e in events if e["name"].startswith("in flight")]
    assert max(flights) == 1 and flights[-1] == 0  # every call ended
    queued = [e["args"]["queued"] for e in events if e["name"] == "queued"]
    assert max(queued) == got["max_queued"] and queued[-1] == 0

    table = dispatch_table(endpoint.dispatch_stats(), label=endpoint.name)
    lines = table.splitlines()
    assert lines[0].startswith("scripted endpoint: order root-first, route round-robin")
    assert "queued 0 now" in lines[0] and "cached 40% of 90 prompt tokens" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["a"][1:] == ["5", "0", "1", "40%", "0", "yes"]  # 2 + 3 calls over both runs
    assert rows["b"][1] == "4"


def test_endpoints_are_the_operators_with_a_dispatcher_each_once() -> None:
    endpoint = _Endpoint(Dispatcher(["a"]))
    assert endpoints_of([None, endpoint, SimpleNamespace(), endpoint]) == [endpoint]
