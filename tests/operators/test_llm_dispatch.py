"""The dispatcher: order of waiting calls by lineage, routing, health, the learned limit.

Stage calls are made the way the engine makes them: each task gets its own call slot
(``fresh_slot``) and publishes its call's site and ancestry in it. Time is a virtual clock
where it matters, so nothing depends on the machine's speed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from alto.lineage import CallSite, fresh_slot
from alto.operators.llm.dispatch import Dispatcher, VegasLimit

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


SUBMITTED: dict[int, float] = {r: float(r) for r in range(10_000)}
SITE = CallSite("run-1", "check", SUBMITTED)


def in_stage(root: int, *hops: Any) -> None:
    """Make the running task's calls a stage call of fragment ``(root, *hops)``."""
    slot = fresh_slot()
    slot.site = SITE
    slot.one = (root, *hops)


async def settle() -> None:
    for _ in range(20):
        await anyio.sleep(0)


async def queued_order(d: Dispatcher, calls: list[int]) -> list[int]:
    """With one call holding the only slot, queue calls of roots ``calls`` (in that order of
    arrival), then let them all go: the roots in the order they were served."""
    served: list[int] = []
    gate = anyio.Event()

    async def hold() -> None:
        in_stage(9999)
        async with d.lease():
            await gate.wait()

    async def call(root: int) -> None:
        in_stage(root, "claims", 0)
        async with d.lease() as lease:
            served.append(root)
            lease.done(output_tokens=1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await settle()
        for root in calls:
            tg.start_soon(call, root)
            await settle()
        assert d.stats().queued == len(calls)
        gate.set()
    return served


async def test_root_first_serves_the_oldest_root_first() -> None:
    d = Dispatcher(["a"], max_inflight=1, order="root-first")
    assert await queued_order(d, [2, 1, 0, 2, 1, 0]) == [0, 0, 1, 1, 2, 2]


async def test_fifo_serves_in_arrival_order() -> None:
    d = Dispatcher(["a"], max_inflight=1, order="fifo")
    assert await queued_order(d, [2, 1, 0, 2, 1, 0]) == [2, 1, 0, 2, 1, 0]


async def test_least_attained_serves_the_least_served_root_first() -> None:
    d = Dispatcher(["a"], max_inflight=1, order="least-attained")
    for root, tokens in ((0, 100), (2, 50), (1, 0)):  # service so far: 0 got most, 1 none
        in_stage(root, "claims", 9)
        async with d.lease() as lease:
            lease.done(output_tokens=tokens)
    assert await queued_order(d, [0, 2, 1, 0, 2, 1]) == [1, 1, 2, 2, 0, 0]


async def test_no_root_starves_under_a_stream_of_new_roots() -> None:
    clock = Clock()

    async def run(order: str, aging: float) -> int | None:
        d = Dispatcher(["a"], max_inflight=1, order=order, aging=aging, clock=clock)  # type: ignore[arg-type]
        in_stage(0, "claims", 0)
        async with d.lease() as lease:
            lease.done(output_tokens=1000)  # root 0 has had much service
        served: list[int] = []
        gates: dict[int, anyio.Event] = {}

        async def call(root: int) -> None:
            in_stage(root, "claims", 1)
            gates[root] = anyio.Event()
            async with d.lease() as lease:
                served.append(root)
                await gates[root].wait()
                lease.done(output_tokens=1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, 1)  # holds the one slot
            await settle()
            tg.start_soon(call, 0)  # the old root's call: queued
            await settle()
            for new_root in range(2, 100):  # a root submitted later asks, every second
                tg.start_soon(call, new_root)
                await settle()
                clock.now += 1.0
                gates[served[-1]].set()  # the call on the replica ends: the next is served
                await settle()
                if 0 in served:
                    tg.cancel_scope.cancel()
                    return len(served) - 2  # calls served between root 0's arrival and it
            tg.cancel_scope.cancel()
        return None

    # least-attained without aging: new roots (no service) pass root 0 for ever
    assert await run("least-attained", float("inf")) is None
    # with aging, root 0 waits about the aging bound (10 s: 10 new roots, one a second)
    clock.now = 0.0
    assert await run("least-attained", 10.0) == 10
    # root-first: roots submitted later never pass it
    clock.now = 0.0
    assert await run("root-first", float("inf")) == 0


def _stage_roots(d: Dispatcher) -> Callable[[int, int], Any]:
    async def call(root: int, child: int, gate: anyio.Event, where: list[int]) -> None:
        in_stage(root, "claims", child)
        async with d.lease() as lease:
            where.append(lease.replica)
            await gate.wait()
            lease.done(output_tokens=1)

    return call  # type: ignore[return-value]


async def test_siblings_share_a_replica_until_it_is_overloaded_then_spread() -> None:
    d = Dispatcher([f"r{i}" for i in range(4)], max_inflight=8, route="lineage")
    call = _stage_roots(d)
    gate = anyio.Event()
    where: list[int] = []
    async with anyio.create_task_group() as tg:
        for child in range(12):
            tg.start_soon(call, 0, child, gate, where)
            await settle()
        # a limit of 8: siblings follow the replica that served their root while it has no
        # more than 8 // 4 = 2 calls in flight beyond the least loaded replica; then they
        # spread (a free replica now beats a cache hit later)
        first = where[0]
        assert where[:3] == [first] * 3
        assert where[3] != first
        assert len(set(where)) == 4
        gate.set()


async def test_siblings_follow_their_root_when_not_overloaded_but_round_robin_spreads() -> None:
    for route, expect_one in (("lineage", True), ("round-robin", False)):
        d = Dispatcher([f"r{i}" for i in range(4)], max_inflight=8, route=route)  # type: ignore[arg-type]
        where: list[int] = []
        for root in (0, 1):
            for child in range(6):
                in_stage(root, "claims", child)
                async with d.lease() as lease:
                    where.append(lease.replica)
                    lease.done(output_tokens=1)
        root0, root1 = where[:6], where[6:]
        assert (len(set(root0)) == 1 and len(set(root1)) == 1) is expect_one


async def test_a_roots_first_call_goes_least_loaded_and_a_known_prefix_breaks_ties() -> None:
    d = Dispatcher([f"r{i}" for i in range(3)], max_inflight=8, route="lineage")
    shared = "system: You check facts against the passage below.\n" * 3
    hold, release_x = anyio.Event(), anyio.Event()
    where: dict[str, int] = {}

    async def call(root: int, prefix: str, name: str, gate: anyio.Event | None) -> None:
        in_stage(root, "claims", 0)
        async with d.lease(prefix) as lease:
            where[name] = lease.replica
            if gate is not None:
                await gate.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, 100, "", "load", hold)  # r0 busy
        await settle()
        tg.start_soon(call, 101, "", "x", release_x)  # r1 busy
        await settle()
        await call(0, shared + "user: claim 0", "first", None)  # least loaded: r2
        release_x.set()
        await settle()
        # r1 and r2 are equally loaded now: the shared prefix says r2
        tg.start_soon(call, 1, shared + "user: claim 1", "same prefix", hold)
        await settle()
        # a root's first call is not sent to a busier replica for its prefix: r1
        tg.start_soon(call, 2, shared + "user: claim 2", "busier", hold)
        await settle()
        hold.set()
    assert where == {"load": 0, "x": 1, "first": 2, "same prefix": 2, "busier": 1}


async def test_outside_a_stage_calls_are_never_queued() -> None:
    d = Dispatcher(["a"], max_inflight=1)
    inside = Dispatcher(["a"], max_inflight=1)
    gate = anyio.Event()

    async def plain(dispatcher: Dispatcher, stage: bool) -> None:
        if stage:
            in_stage(0, "claims", 0)
        else:
            fresh_slot()
        async with dispatcher.lease() as lease:
            assert lease.priority is None or stage
            await gate.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(plain, d, False)
            tg.start_soon(plain, inside, True)
        await settle()
        assert (d.stats().replicas[0].inflight, d.stats().queued) == (10, 0)
        assert (inside.stats().replicas[0].inflight, inside.stats().queued) == (1, 9)
        gate.set()


async def test_priority_follows_root_submission_and_is_none_outside_a_stage() -> None:
    d = Dispatcher(["a"], max_inflight=None)
    priorities = []
    for root in (3, 5, 4):
        in_stage(root, "claims", 0)
        async with d.lease() as lease:
            priorities.append(lease.priority)
    assert priorities == [0, 2000, 1000]  # ms after the first submission seen

    async def outside() -> int | None:
        async with d.lease() as lease:
            return lease.priority

    async with anyio.create_task_group() as tg:  # a fresh task: no stage call
        result: list[int | None] = []

        async def run() -> None:
            fresh_slot()  # this task's own slot, with no stage call in it
            result.append(await outside())

        tg.start_soon(run)
    assert result == [None]


async def test_a_down_replica_is_skipped_then_probed_back() -> None:
    fresh_slot()  # outside a stage call
    clock = Clock()
    answers = {"up": False}
    probed: list[int] = []

    async def probe(replica: int) -> bool:
        probed.append(replica)
        return answers["up"]

    d = Dispatcher(["a", "b"], max_inflight=4, route="round-robin", probe=probe, clock=clock)
    async with d.lease() as lease:
        assert lease.replica == 0
        lease.failed(replica_down=True)
    stats = d.stats()
    assert [r.healthy for r in stats.replicas] == [False, True]
    assert stats.replicas[0].failures == 1
    for _ in range(4):  # skipped, inside and outside a stage
        async with d.lease() as lease:
            assert lease.replica == 1
    clock.now += 10.0  # past the backoff: probed, still down
    async with d.lease() as lease:
        assert lease.replica == 1
    assert probed == [0] and not d.stats().replicas[0].healthy
    answers["up"] = True
    clock.now += 100.0
    used = set()
    for _ in range(4):
        async with d.lease() as lease:
            used.add(lease.replica)
    assert probed == [0, 0] and d.stats().replicas[0].healthy and used == {0, 1}


async def test_without_a_probe_one_call_goes_through_after_the_backoff() -> None:
    fresh_slot()  # outside a stage call
    clock = Clock()
    d = Dispatcher(["a", "b"], max_inflight=4, route="round-robin", clock=clock)
    async with d.lease() as lease:
        lease.failed(replica_down=True)
    clock.now += 60.0
    replicas = []
    for _ in range(2):
        async with d.lease() as lease:
            replicas.append(lease.replica)
            lease.done(output_tokens=1)
    assert 0 in replicas and d.stats().replicas[0].healthy


async def test_when_every_replica_is_down_calls_still_go() -> None:
    d = Dispatcher(["a", "b"], max_inflight=1)
    for _ in range(2):
        in_stage(0, "claims", 0)
        async with d.lease() as lease:
            lease.failed(replica_down=True)
    assert not any(r.healthy for r in d.stats().replicas)
    in_stage(1, "claims", 0)
    with anyio.fail_after(5):
        async with d.lease() as lease:  # not queued, not hung: errors surface to the caller
            assert lease.replica in (0, 1)


async def test_an_exception_leaving_the_block_marks_the_replica() -> None:
    fresh_slot()  # outside a stage call
    d = Dispatcher(["a", "b"], max_inflight=1)
    with pytest.raises(ConnectionRefusedError):
        async with d.lease():
            raise ConnectionRefusedError
    with pytest.raises(ValueError):
        async with d.lease():
            msg = "not the replica's fault"
            raise ValueError(msg)
    assert [(r.failures, r.healthy) for r in d.stats().replicas] == [(1, False), (1, True)]


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    d = Dispatcher(["a"], max_inflight=1)
    gate = anyio.Event()

    async def hold() -> None:
        in_stage(0, "claims", 0)
        async with d.lease():
            await gate.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await settle()
        with anyio.move_on_after(0.01):
            in_stage(1, "claims", 0)
            async with d.lease():
                pytest.fail("admitted past the limit")
        assert d.stats().queued == 0
        gate.set()
    in_stage(2, "claims", 0)
    async with d.lease() as lease:
        assert lease.replica == 0
    assert d.stats().replicas[0].inflight == 0


def test_knobs_are_checked_with_the_allowed_values_named() -> None:
    with pytest.raises(ValueError, match="order must be one of 'root-first'.*got 'oldest'"):
        Dispatcher(["a"], order="oldest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="route must be one of .*'lineage'.*got 'random'"):
        Dispatcher(["a"], route="random")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="max_inflight must be an int >= 1, 'auto', 'server' or None"
    ):
        Dispatcher(["a"], max_inflight=0)


async def test_timeline_samples_only_while_recording() -> None:
    fresh_slot()  # outside a stage call
    d = Dispatcher(["a"], max_inflight=2)
    async with d.lease():
        pass
    assert d.samples == []
    d.record(True)
    async with d.lease() as lease:
        lease.done(prompt_tokens=10, cached_tokens=4, output_tokens=3)
    assert [(r, n) for _, r, n, _ in d.samples] == [(0, 1), (0, 0)]
    stats = d.stats()
    assert stats.timeline() == d.samples and stats.cached_share == 0.4


# -- the learned limit ---------------------------------------------------------------------


async def learned_limit(knee: int, *, max_limit: int = 64, completions: int = 2500) -> int:
    """A closed loop of 96 callers against a scripted replica whose time per output token is
    ``base`` with up to ``knee`` calls in flight and grows linearly beyond (throughput flat
    past the knee: processor sharing), answers of 50-150 tokens and +-20% noise per call, on
    a virtual clock. Returns the limit the dispatcher learned."""
    clock = Clock()
    d = Dispatcher(["a"], max_inflight="auto", start_limit=4, max_limit=max_limit, clock=clock)
    rng = random.Random(knee)
    active: dict[anyio.Event, list[float]] = {}  # call -> [work left, tokens]
    callers = 96

    async def caller(root: int) -> None:
        in_stage(root, "claims", 0)
        while True:
            async with d.lease() as lease:
                tokens = rng.randint(50, 150)
                done = anyio.Event()
                active[done] = [tokens * rng.uniform(0.8, 1.2), tokens]
                await done.wait()
                lease.done(output_tokens=tokens)

    async with anyio.create_task_group() as tg:
        for root in range(callers):
            tg.start_soon(caller, root)
        for _ in range(completions):
            while len(active) + d.stats().queued < callers:
                await anyio.sleep(0)
            n = len(active)
            rate = 1.0 if n <= knee else knee / n  # tokens per unit time, per call
            finish, left = min(active.items(), key=lambda kv: kv[1][0])
            dt = left[0] / rate
            clock.now += dt * 0.01
            for work in active.values():
                work[0] -= rate * dt
            del active[finish]
            finish.set()
        tg.cancel_scope.cancel()
    vegas = d.limiter(0)
    assert vegas is not None and d.stats().replicas[0].limit == vegas.limit
    return vegas.settled


@pytest.mark.parametrize("knee", [8, 16, 32])
async def test_the_auto_limit_grows_from_4_to_the_knee(knee: int) -> None:
    limit = await learned_limit(knee)
    assert knee / 1.5 <= limit <= knee * 1.5


async def test_the_auto_limit_never_passes_its_bound() -> None:
    assert await learned_limit(100, max_limit=20, completions=1000) == 20


def test_vegas_holds_under_noise_below_the_knee() -> None:
    """No load-dependent latency at all (only noise): the limit never collapses."""
    vegas = VegasLimit(start=16, max_limit=64)
    rng = random.Random(1)
    for _ in range(5000):
        tokens = rng.randint(20, 200)
        vegas.sample(tokens * 0.01 * rng.lognormvariate(0, 0.5), tokens, vegas.limit)
    assert vegas.limit >= 16


async def test_a_stall_lets_one_waiting_call_through_over_the_limit() -> None:
    """Every slot held by a call that cannot end (a stream whose consumer waits for this
    endpoint): after ``stall`` seconds with no call ending, the oldest waiter goes over the
    limit, and the next waits another ``stall``."""
    d = Dispatcher(["a"], max_inflight=1, stall=0.05)
    stuck = anyio.Event()
    served: list[int] = []

    async def hold() -> None:
        in_stage(0)
        async with d.lease():
            await stuck.wait()

    async def call(root: int) -> None:
        in_stage(root)
        async with d.lease():
            served.append(root)
            if root == 1:
                await anyio.sleep(0.3)  # still running when root 2's turn comes

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await settle()
        tg.start_soon(call, 1)
        await settle()
        tg.start_soon(call, 2)
        await settle()
        assert served == [] and d.stats().queued == 2
        with anyio.fail_after(5):
            while not served:
                await anyio.sleep(0.01)
        assert served == [1]  # the oldest went, over the limit
        assert d.stats().over_limit == 1
        assert d.stats().replicas[0].inflight == 2
        with anyio.fail_after(5):
            while len(served) < 2:
                await anyio.sleep(0.01)
        stuck.set()
    assert served == [1, 2]
    assert d.stats().over_limit == 2
    assert d.stats().replicas[0].inflight == 0


async def test_no_stall_while_calls_end() -> None:
    """Calls that keep ending never trigger the guard, however long a call waits."""
    d = Dispatcher(["a"], max_inflight=1, stall=0.05)

    async def call(root: int) -> None:
        in_stage(root)
        async with d.lease():
            await anyio.sleep(0.02)

    async with anyio.create_task_group() as tg:
        for root in range(12):
            tg.start_soon(call, root)
    assert d.stats().over_limit == 0
