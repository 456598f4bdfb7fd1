"""Streaming shown with events, not timings: stages overlap, parents complete on their own.

Each test makes an upstream stage wait for an event that only a downstream
stage can set. A runtime with a barrier between stages would never set it;
``fail_after`` turns that hang into a failure. Events and counters live in
``shared``, so the stages may run in other processes (the ``ray`` backend).
"""

from __future__ import annotations

import anyio
import pytest

import alto
from alto import Gather, GatherStream, Split

pytestmark = pytest.mark.anyio

HANG = 20  # seconds: only reached when the runtime does not pipeline


async def test_downstream_takes_first_fragment_before_split_ends(backend, shared):
    @alto.stage
    async def produce(n: int) -> Split[int]:
        yield 0
        await shared.append("log", "yielded 0")
        await shared.wait("seen_first")  # the rest only once fragment 0 went downstream
        await shared.append("log", "resumed")
        for i in range(1, n):
            yield i

    @alto.stage
    async def consume(i: int) -> int:
        if i == 0:
            await shared.append("log", "consumed 0")
            await shared.set("seen_first")
        return i

    @alto.stage
    async def total(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def f(n: int):
        return total(consume(produce(n)))

    with anyio.fail_after(HANG):
        assert await f.run([5], backend=backend) == [10]
    log = await shared.get("log")
    if backend == "local":
        assert log == ["yielded 0", "consumed 0", "resumed"]
    else:  # two processes log "yielded 0" and "consumed 0": only "resumed" is ordered
        assert sorted(log[:2]) == ["consumed 0", "yielded 0"] and log[2:] == ["resumed"]


async def test_one_parent_gathers_while_another_still_splits(backend, shared):
    @alto.stage(replicas=2)  # two parents split at once
    async def parts(name: str) -> Split[str]:
        yield f"{name}.0"
        if name == "slow":
            await shared.wait("first_done")  # hold this parent open until the other one finished
        yield f"{name}.1"

    @alto.stage(replicas=2)
    async def upper(p: str) -> str:
        return p.upper()

    @alto.stage
    async def joined(ps: Gather[str]) -> str:
        if ps[0].startswith("FAST"):
            await shared.set("first_done")
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


async def test_streaming_gather_starts_before_last_child(backend, shared):
    @alto.stage
    async def parts(n: int) -> Split[int]:
        yield 0
        await shared.wait("first_child_seen")
        for i in range(1, n):
            yield i

    @alto.stage
    async def running_total(xs: GatherStream[int]) -> int:
        total = 0
        async for x in xs:
            total += x
            await shared.set("first_child_seen")
        return total

    @alto.flow
    def f(n: int):
        return running_total(parts(n))

    with anyio.fail_after(HANG):
        assert await f.run([4], backend=backend) == [6]


async def test_replicas_run_concurrently(backend, shared):
    @alto.stage(replicas=4)
    async def meet(i: int) -> int:
        if await shared.add("inside") == 4:
            await shared.set("all_in")
        await shared.wait("all_in")  # needs four calls in flight at once
        return i

    @alto.flow
    def f(i: int):
        return meet(i)

    with anyio.fail_after(HANG):
        assert await f.run(range(4), backend=backend) == [0, 1, 2, 3]


async def test_backpressure_bounds_how_far_a_fast_split_runs_ahead(backend, shared):
    # Locally every child is counted; across processes a message per child would be
    # the bottleneck, so the split reports every `every` children and the lead is
    # rounded up by as much (it can only be overestimated).
    every = 1 if backend == "local" else 64

    @alto.stage(buffer=2)
    async def many(n: int) -> Split[int]:
        for i in range(n):
            if i % every == 0:
                await shared.put("made", i + every)
            yield i

    @alto.stage(buffer=2)
    async def slow(i: int) -> int:
        if i % every == 0:
            await shared.top("lead", await shared.get("made") - i)
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
    assert 0 < await shared.get("lead") < 1_000


def _split_batch_gather(split, batch_timeout: float, batches: list[list[int]]) -> alto.Flow:
    """``split`` -> a batched doubling stage (its batches go to ``batches``) -> a sum."""

    @alto.stage(batch=64, batch_timeout=batch_timeout)
    async def doubled(xs: list[int]) -> list[int]:
        batches.append(list(xs))
        return [2 * x for x in xs]

    @alto.stage
    async def total(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def f(n: int):
        return total(doubled(split(n)))

    return f


async def test_partial_batch_runs_at_once_when_nothing_upstream_works():
    # The second input arrives only after the first one's result: with a batch
    # that waited out its (hour-long) timeout, the first result would never come.
    batches: list[list[int]] = []

    @alto.stage
    async def parts(n: int) -> Split[int]:
        for i in range(n):
            yield i

    f = _split_batch_gather(parts, 3600, batches)
    first_done = anyio.Event()

    async def inputs():
        yield 3
        await first_done.wait()
        yield 2

    got = {}
    with anyio.fail_after(HANG):
        async for result in f.stream(inputs()):
            got[result.index] = result.value
            first_done.set()
    assert got == {0: 6, 1: 2}
    assert batches == [[0, 1, 2], [0, 1]]


async def test_partial_batch_waits_while_an_upstream_stage_works():
    # The split sleeps between its children: each is sent on at once, and the
    # batch waits for the next while the split still runs.
    batches: list[list[int]] = []

    @alto.stage
    async def slowly(n: int) -> Split[int]:
        for i in range(n):
            await anyio.sleep(0.01)
            yield i

    f = _split_batch_gather(slowly, HANG, batches)
    with anyio.fail_after(2 * HANG):
        assert await f.run([4]) == [12]
    assert batches == [[0, 1, 2, 3]]
