"""``alto.current_call()``: the lineage of the stage call running now, on every backend."""

from __future__ import annotations

import time

import anyio
import pytest

import alto
from alto import CallInfo, Gather, GatherStream, Split
from alto.ancestry import child

pytestmark = pytest.mark.anyio


@alto.stage
async def whoami(x: int) -> CallInfo | None:
    return alto.current_call()


@alto.stage
async def spread(n: int) -> Split[CallInfo | None]:
    for _ in range(n):
        yield alto.current_call()


@alto.stage
async def child_call(parent_call: CallInfo | None) -> tuple[CallInfo | None, CallInfo | None]:
    return parent_call, alto.current_call()


@alto.stage
async def collect(pairs: Gather[tuple]) -> tuple[list[tuple], CallInfo | None]:
    return list(pairs), alto.current_call()


@alto.stage(batch=4, batch_timeout=0.5)
async def batched(xs: list[int]) -> list[CallInfo | None]:
    await anyio.sleep(0)
    call = alto.current_call()
    return [call] * len(xs)


@alto.stage
async def in_a_task(x: int) -> CallInfo | None:
    seen: list[CallInfo | None] = []

    async def look() -> None:
        seen.append(alto.current_call())

    async with anyio.create_task_group() as tg:
        tg.start_soon(look)
    return seen[0]


@alto.stage
async def count_stream(children: GatherStream[int]) -> tuple[int, CallInfo | None]:
    n = 0
    async for _ in children:
        n += 1
    return n, alto.current_call()


@alto.stage
async def numbers(n: int) -> Split[int]:
    for i in range(n):
        yield i


def _submitted_in(info: CallInfo, before: float, after: float) -> bool:
    return all(before <= t <= after for t in info.submitted)


async def test_outside_a_stage_call_there_is_none():
    assert alto.current_call() is None

    @alto.flow
    def f(x: int):
        return whoami(x)

    await f.run([1])
    assert alto.current_call() is None


async def test_a_plain_call_sees_its_fragment(backend):
    @alto.flow
    def f(x: int):
        return whoami(x)

    before = time.monotonic()
    out = await f.run([10, 11, 12], backend=backend)
    after = time.monotonic()
    assert all(isinstance(info, CallInfo) for info in out)
    assert [info.ancestries for info in out] == [((0,),), ((1,),), ((2,),)]
    assert [info.roots for info in out] == [(0,), (1,), (2,)]
    assert {info.stage for info in out} == {"whoami"}
    assert len({info.run for info in out}) == 1 and isinstance(out[0].run, str)
    assert all(_submitted_in(info, before, after) for info in out)
    assert out[0].submitted[0] <= out[2].submitted[0]  # admitted in input order
    again = await f.run([10], backend=backend)
    assert again[0].run != out[0].run  # one id per run


async def test_a_split_and_its_children_and_their_gather(backend):
    @alto.flow
    def f(n: int):
        return collect(child_call(spread(n)))

    before = time.monotonic()
    out = await f.run([2, 0, 3], backend=backend)
    after = time.monotonic()
    for root, (pairs, gather_call) in enumerate(out):
        assert gather_call.stage == "collect"
        assert gather_call.ancestries == ((root,),)  # a gather's call is its parent's
        assert gather_call.roots == (root,)
        assert _submitted_in(gather_call, before, after)
        for k, (split_call, own) in enumerate(pairs):
            assert split_call.stage == "spread" and split_call.ancestries == ((root,),)
            assert own.stage == "child_call"
            assert own.ancestries == (child((root,), "spread", k),)
            assert own.roots == (root,)
            assert own.submitted == gather_call.submitted == split_call.submitted
            assert own.run == gather_call.run == split_call.run
    assert [len(pairs) for pairs, _ in out] == [2, 0, 3]


async def test_a_batched_call_lists_every_fragment(backend):
    @alto.flow
    def f(x: int):
        return batched(x)

    before = time.monotonic()
    out = await f.run(list(range(10)), backend=backend)
    after = time.monotonic()
    for root, info in enumerate(out):
        assert info.stage == "batched"
        assert (root,) in info.ancestries  # the call that served this input lists it
        assert 1 <= len(info.ancestries) <= 4
        assert info.roots == tuple(a[0] for a in info.ancestries)
        assert len(info.submitted) == len(info.roots)
        assert _submitted_in(info, before, after)
    # ten inputs given at once, batches of at most four: some call served several
    assert max(len(info.ancestries) for info in out) > 1
    calls = {info.ancestries for info in out}
    assert sorted(a for ancs in calls for a in ancs) == [(i,) for i in range(10)]


async def test_a_streaming_gather_and_a_task_started_in_a_call(backend):
    @alto.flow
    def f(n: int):
        return count_stream(numbers(n)), in_a_task(n)

    out = await f.run([3, 1], backend=backend)
    for root, ((_, stream_call), task_call) in enumerate(out):
        assert stream_call.stage == "count_stream" and stream_call.ancestries == ((root,),)
        assert task_call.stage == "in_a_task" and task_call.ancestries == ((root,),)
    assert [n for (n, _), _ in out] == [3, 1]


@alto.stage
async def runs_a_flow(x: int) -> tuple[CallInfo | None, CallInfo | None, CallInfo | None]:
    @alto.flow
    def inner_flow(x: int):
        return whoami(x)

    before = alto.current_call()
    (inner,) = await inner_flow.run([x])
    return before, inner, alto.current_call()


@pytest.mark.parametrize("backend", ["local"], indirect=True)
async def test_a_flow_run_inside_a_stage_call_leaves_the_call_as_it_was(backend):
    """The inner run's tasks keep their calls in slots of their own. (Local only: a stage
    that uses another stage of a test module cannot be unpickled on a Ray worker.)"""
    @alto.flow
    def f(x: int):
        return runs_a_flow(x)

    (before, inner, after), = await f.run([5], backend=backend)
    assert before == after and before.stage == "runs_a_flow" and before.ancestries == ((0,),)
    assert inner.stage == "whoami" and inner.run != before.run
