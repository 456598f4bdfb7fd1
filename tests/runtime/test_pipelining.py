"""Streaming shown with events, not timings: stages overlap, parents complete on their own.

Each test makes an upstream stage wait for an event that only a downstream
stage can set. A runtime with a barrier between stages would never set it;
``fail_after`` turns that hang into a failure.
"""

from __future__ import annotations

import anyio
import pytest

import alto
from alto import Gather, GatherStream, Split

pytestmark = pytest.mark.anyio

HANG = 20  # seconds: only reached when the runtime does not pipeline


async def test_downstream_takes_first_fragment_before_split_ends(backend):
    seen_first = anyio.Event()
    log: list[str] = []

    @alto.stage
    async def produce(n: int) -> Split[int]:
        yield 0
        log.append("yielded 0")
        await seen_first.wait()  # the rest only once fragment 0 went downstream
        log.append("resumed")
        for i in range(1, n):
            yield i

    @alto.stage
    async def consume(i: int) -> int:
        if i == 0:
            log.append("consumed 0")
            seen_first.set()
        return i

    @alto.stage
    async def total(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def f(n: int):
        return total(consume(produce(n)))

    with anyio.fail_after(HANG):
        assert await f.run([5], backend=backend) == [10]
    assert log == ["yielded 0", "consumed 0", "resumed"]


async def test_one_parent_gathers_while_another_still_splits(backend):
    first_done = anyio.Event()

    @alto.stage(replicas=2)  # two parents split at once
    async def parts(name: str) -> Split[str]:
        yield f"{name}.0"
        if name == "slow":
            await first_done.wait()  # hold this parent open until the other one finished
        yield f"{name}.1"

    @alto.stage(replicas=2)
    async def upper(p: str) -> str:
        return p.upper()

    @alto.stage
    async def joined(ps: Gather[str]) -> str:
        if ps[0].startswith("FAST"):
            first_done.set()
        return "+".join(ps)

    @alto.stage(replicas=2)
    async def route(name: str) -> str:
        return name

    @alto.flow
    def f(name: str):
        return joined(upper(parts(route(name))))

    order: list[int] = []
    with anyio.fail_after(HANG):
        async for r in f.stream(["slow", "fast"], backend=backend):
            order.append(r.index)
            assert r.ok
    assert order == [1, 0]


async def test_streaming_gather_starts_before_last_child(backend):
    first_child_seen = anyio.Event()

    @alto.stage
    async def parts(n: int) -> Split[int]:
        yield 0
        await first_child_seen.wait()
        for i in range(1, n):
            yield i

    @alto.stage
    async def running_total(xs: GatherStream[int]) -> int:
        total = 0
        async for x in xs:
            total += x
            first_child_seen.set()
        return total

    @alto.flow
    def f(n: int):
        return running_total(parts(n))

    with anyio.fail_after(HANG):
        assert await f.run([4], backend=backend) == [6]


async def test_replicas_run_concurrently(backend):
    inside = 0
    all_in = anyio.Event()

    @alto.stage(replicas=4)
    async def meet(i: int) -> int:
        nonlocal inside
        inside += 1
        if inside == 4:
            all_in.set()
        await all_in.wait()  # needs four calls in flight at once
        return i

    @alto.flow
    def f(i: int):
        return meet(i)

    with anyio.fail_after(HANG):
        assert await f.run(range(4), backend=backend) == [0, 1, 2, 3]


async def test_backpressure_bounds_how_far_a_fast_split_runs_ahead(backend):
    made = 0
    lead = 0

    @alto.stage(buffer=2)
    async def many(n: int) -> Split[int]:
        nonlocal made
        for i in range(n):
            made += 1
            yield i

    @alto.stage(buffer=2)
    async def slow(i: int) -> int:
        nonlocal lead
        lead = max(lead, made - i)
        if i % 100 == 0:
            await anyio.sleep(0.001)
        return 1

    @alto.stage
    async def count(xs: GatherStream[int]) -> int:
        return sum([x async for x in xs])

    @alto.flow
    def f(n: int):
        return count(slow(many(n)))

    assert await f.run([20_000], backend=backend) == [20_000]
    # bounded by the buffers between the two stages (a few chunks of 64), not by n
    assert lead < 1_000
