"""The balancer in its own terms: SGLang router's cache-aware policy as its launcher runs it
(timing emulation: nothing here is a model), round-robin and least-loaded, and the radix
tree's laws."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from alto.bench.emulator import Balancer, EmulatorConfig, EmulatorServer
from alto.bench.emulator.balancer import RadixTree
from examples.summarize import steps

# 400 characters every call below shares, then a short question of its own
SHARED = ("The report covers rivers, roads and the towns between them in detail. " * 6)[:400]


def summarize_prompts(n: int = 200) -> list[str]:
    """``n`` prompts as summarize sends them (its section calls: the instructions, then the
    document's title and the section's, then the picked chunks), from the shipped documents
    in order, and as the emulator and the proxy read them (message contents joined)."""
    config = steps.Config(**steps.VARIED_FANOUT)
    out: list[str] = []
    for document in steps.load_inputs():
        for section in steps.sections(document, config):
            picked = steps.chunks(section, config)[: config.central]
            messages = steps.section_messages(document.title, section.title, picked)
            out.append("\n".join(m["content"] for m in messages))
            if len(out) == n:
                return out
    return out


# -- the policies ------------------------------------------------------------------------------


def test_round_robin_cycles_and_counts_per_replica() -> None:
    b = Balancer("round-robin", 3)
    assert [b.choose("same", [5, 0, 0]) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert b.decisions == [{"round_robin": 3}, {"round_robin": 2}, {"round_robin": 2}]


def test_least_loaded_picks_the_idle_replica() -> None:
    b = Balancer("least-loaded", 3)
    assert b.choose("x", [3, 0, 2]) == 1
    assert b.choose("x", [1, 1, 1]) == 0  # ties: the lowest index
    assert b.decisions == [{"least_loaded": 1}, {"least_loaded": 1}, {"least_loaded": 0}]


def test_the_defaults_are_the_ones_sglang_routers_launcher_gives_users() -> None:
    assert Balancer("prefix-aware", 2).settings() == {
        "policy": "prefix-aware",
        "cache_threshold": 0.3,
        "balance_abs_threshold": 64,
        "balance_rel_threshold": 1.5,
        "eviction_interval_s": 120.0,
        "max_tree_size": 2**26,
    }


def test_summarize_shaped_calls_spread_evenly_at_low_load() -> None:
    prompts = summarize_prompts()
    assert len(prompts) == 200 and len({p.split("\n")[1] for p in prompts}) >= 8  # documents
    b = Balancer("prefix-aware", 4)
    served = Counter(b.choose(p, [0, 0, 0, 0]) for p in prompts)  # one after another
    assert sorted(served) == [0, 1, 2, 3]
    assert all(0.8 * 50 <= served[r] <= 1.2 * 50 for r in range(4)), served
    kinds = Counter()
    for per in b.decisions:
        kinds.update(per)
    assert kinds["imbalance"] == 0 and kinds["cache_match"] + kinds["smallest_tree"] == 200
    assert kinds["cache_match"] > 0  # sections of one document did follow their title
    assert [sum(per.values()) for per in b.decisions] == [served[r] for r in range(4)]


def test_a_shared_prefix_sticks_to_its_replica_while_the_load_is_balanced() -> None:
    b = Balancer("prefix-aware", 4)
    home = b.choose(SHARED + " Question 0?", [0, 0, 0, 0])
    assert home == 0  # every tree empty: the smallest, the lowest index first
    balanced = [
        [0, 0, 0, 0],
        [64, 0, 0, 0],  # max - min not over 64
        [300, 230, 230, 230],  # over 64 apart, but 300 is not over 1.5 x 230
        [0, 40, 50, 60],  # the prefix's replica idle, the others busy
    ]
    for i, loads in enumerate(balanced, start=1):
        assert b.choose(SHARED + f" Question {i}?", loads) == home, loads
    assert b.decisions[home]["cache_match"] == len(balanced)


def test_a_shared_prefix_moves_once_both_imbalance_thresholds_are_exceeded() -> None:
    b = Balancer("prefix-aware", 4)
    home = b.choose(SHARED + " Question 0?", [0, 0, 0, 0])
    # 65 apart and 65 > 1.5 x 0: imbalanced, the least-loaded replica (lowest index on ties)
    assert b.choose(SHARED + " Question 1?", [65, 0, 0, 0]) == 1
    # 101 apart and 300 > 1.5 x 199: the least-loaded replica, prefix or not
    assert b.choose(SHARED + " Question 2?", [300, 230, 199, 230]) == 2
    assert (b.decisions[1]["imbalance"], b.decisions[2]["imbalance"]) == (1, 1)
    assert b.decisions[home]["imbalance"] == 0
    # the moved calls were still recorded where they went
    assert b.trees[1].match(SHARED + " Question 1?") == len(SHARED) + len(" Question 1?")


def test_routing_never_evicts_and_the_timer_pass_trims_each_tree_to_the_budget() -> None:
    b = Balancer("prefix-aware", 2, max_tree_size=1_000)
    prompts = summarize_prompts(40)
    for p in prompts:
        b.choose(p, [0, 0])
    sizes = [t.size for t in b.trees]
    assert all(size > 1_000 for size in sizes)  # insertion alone lets the trees grow
    removed = b.evict()
    assert removed == sum(sizes) - sum(t.size for t in b.trees)
    assert all(t.size <= 1_000 for t in b.trees) and b.eviction_passes == 1
    # least recently used first: each tree still holds the last call routed to it
    last = {r: p for p, r in zip(prompts, _replay(prompts, 2), strict=True)}
    for replica, prompt in last.items():
        assert b.trees[replica].match(prompt) == len(prompt)
    assert b.evict() == 0  # within the budget: nothing more goes


def _replay(prompts: list[str], replicas: int) -> list[int]:
    b = Balancer("prefix-aware", replicas)
    return [b.choose(p, [0] * replicas) for p in prompts]


# -- the radix tree ----------------------------------------------------------------------------


def test_radix_tree_laws() -> None:
    tree = RadixTree()
    for text in ("abcdef", "abcxyz", "abd", "q"):
        tree.insert(text)
        assert tree.match(text) == len(text)
    assert tree.match("abcdzz") == 4 and tree.match("zzz") == 0
    assert tree.size == len("abcdef") + len("xyz") + len("d") + len("q")


def test_eviction_removes_least_recently_used_leaves_and_spares_nothing_else() -> None:
    shared = "p" * 50
    tree = RadixTree()
    tree.insert(shared + "x" * 50)
    tree.insert(shared + "y" * 50)
    tree.insert("z" * 100)
    assert tree.size == 250
    tree.match(shared + "x" * 50, touch=True)  # a routing match counts as a use
    assert tree.evict(200) == 50  # the y leaf, used longest ago; the shared part stays
    assert tree.match(shared + "x" * 50) == 100 and tree.match(shared + "y" * 50) == 50
    assert tree.match("z" * 100) == 100
    assert tree.evict(1_000) == 0 and tree.size == 200
    # the budget binds everything, the text inserted last included
    assert tree.evict(0) == 200 and tree.size == 0 and tree.match("z" * 100) == 0


# -- on the server -----------------------------------------------------------------------------


def test_the_server_runs_the_eviction_pass_on_its_timer_and_reports_decisions() -> None:
    # 120 modeled seconds at time_scale 1e-4: a pass every 12 ms of wall time
    config = EmulatorConfig(time_scale=1e-4)
    with EmulatorServer(config, replicas=2, balancer="prefix-aware") as server:
        for i in range(3):
            body = {"model": "m", "prompt": f"{SHARED} Question {i}?", "max_tokens": 2}
            httpx.post(f"{server.base_url}/completions", json=body, timeout=30).raise_for_status()
        deadline = time.monotonic() + 20
        while server.stats()["balancer_eviction_passes"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = server.stats()
    assert stats["balancer_eviction_passes"] > 0
    assert stats["balancer_settings"]["eviction_interval_s"] == 120.0
    assert stats["balancer_decisions"] == [
        {"cache_match": 2, "imbalance": 0, "smallest_tree": 1},
        {"cache_match": 0, "imbalance": 0, "smallest_tree": 0},
    ]


def test_no_timer_pass_when_modeled_time_does_not_pass() -> None:
    with EmulatorServer(EmulatorConfig(time_scale=0.0), replicas=2, balancer="prefix-aware") as s:
        httpx.post(f"{s.base_url}/completions", json={"model": "m", "prompt": "x"}, timeout=30)
        time.sleep(0.05)
        assert s.stats()["balancer_eviction_passes"] == 0


@pytest.mark.anyio
async def test_the_bench_keeps_each_runs_decisions_per_replica() -> None:
    from alto.bench.emulated import EmulatorCounters
    from alto.bench.settings import DEPLOYMENTS

    assert DEPLOYMENTS["ll4"] == (4, "least-loaded")
    async with EmulatorServer(EmulatorConfig(time_scale=0.0), replicas=2) as server:
        counters = EmulatorCounters(server)
        await counters.read()
        before = counters.decisions
        async with httpx.AsyncClient(timeout=30) as client:
            for i in range(3):
                body = {"model": "m", "prompt": f"Question {i}?", "max_tokens": 2}
                (await client.post(f"{server.base_url}/completions", json=body)).raise_for_status()
        await counters.read()
    assert before == [{"round_robin": 0}, {"round_robin": 0}]
    assert EmulatorCounters.decision_deltas(before, counters.decisions) == [
        {"round_robin": 2},
        {"round_robin": 1},
    ]
