"""Cancelling a run cancels every stage call it started, and leaves no task behind.

The stage calls report to ``shared`` (they may run in other processes): how
many are running, how many were cancelled, and when the first one blocks.
"""

from __future__ import annotations

import asyncio
import functools
import gc

import anyio
import pytest

import alto
from alto import Gather, Split

pytestmark = pytest.mark.anyio

HANG = 90  # seconds: only reached when cancellation does not reach the stage calls (it also
# covers starting a run's Ray actors, which took up to 29 s on a loaded 2-core machine)


def blocking_flow(probe) -> alto.Flow:
    """Stage ``block`` returns fragment 0 at once and blocks on every other one."""

    @alto.stage
    async def parts(n: int) -> Split[int]:
        for i in range(n):
            yield i

    @alto.stage(replicas=4)
    async def block(i: int) -> int:
        await probe.add("running")
        await probe.set("started")
        try:
            if i > 0:
                await probe.add("blocked")
                await anyio.sleep(60)
            return i
        except anyio.get_cancelled_exc_class():
            await probe.add("cancelled")
            raise
        finally:
            await probe.add("running", -1)

    @alto.stage
    async def total(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def f(n: int):
        return total(block(parts(n)))

    return f


def other_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def blocked(probe, calls: int) -> None:
    """Wait until ``calls`` stage calls are blocked."""
    while await probe.get("blocked") < calls:
        await anyio.sleep(0.01)


async def settled(probe) -> tuple[int, int]:
    """``(running, cancelled)`` stage calls, read once the run has stopped.

    Every backend waits for the cleanup of every call it cancelled before the run
    returns (or the stream's task ends), so the counts are final when read.
    """
    return await probe.get("running"), await probe.get("cancelled")


async def test_cancelling_run_cancels_stage_calls(backend, shared):
    probe = shared
    f = blocking_flow(probe)
    before = other_tasks()
    with anyio.move_on_after(HANG) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(f.run, [3, 3], backend=backend))
            await probe.wait("started")
            await blocked(probe, 2)
            await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught  # cancelled by us, not by the guard
    running, cancelled = await settled(probe)
    assert running == 0 and cancelled >= 2
    assert other_tasks() <= before


async def test_leaving_stream_early_cancels_the_rest(backend, shared):
    probe = shared
    f = blocking_flow(probe)
    before = other_tasks()
    with anyio.fail_after(HANG):
        async with f.stream([1, 3, 3], backend=backend) as results:
            async for r in results:
                assert r.index == 0 and r.value == 0
                await blocked(probe, 1)
                break
    running, cancelled = await settled(probe)
    assert running == 0 and cancelled >= 1
    assert other_tasks() <= before


async def test_breaking_out_of_a_bare_stream_loop_cancels_the_rest(backend, shared):
    probe = shared
    f = blocking_flow(probe)
    before = other_tasks()
    with anyio.fail_after(HANG):
        async for _ in f.stream([1, 3, 3], backend=backend):
            await blocked(probe, 1)
            break
        gc.collect()
        while other_tasks() - before:
            await anyio.sleep(0.01)
    running, cancelled = await settled(probe)
    assert running == 0 and cancelled >= 1


async def test_cancelled_consumer_of_stream_cancels_the_run(backend, shared):
    probe = shared
    f = blocking_flow(probe)
    stream = f.stream([3], backend=backend)

    async def consume() -> None:
        async for _ in stream:
            pass

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)  # cancelled below, while it waits in the loop
            await blocked(probe, 1)
            await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    running, cancelled = await settled(probe)
    assert running == 0 and cancelled >= 1


@pytest.mark.ray
@pytest.mark.parametrize("backend", ["ray"], indirect=True)
async def test_cancelling_a_ray_run_cancels_the_stage_calls_not_their_own_remote_calls(
    backend, shared
):
    """Ray cancels a call and every task it submitted, unless told otherwise.

    A stage function that made a remote call of its own would see it fail with a
    ``TaskCancelledError`` when its call is cancelled, even one awaited in
    shielded cleanup (the cause of lost cleanup reports). As under the local
    runtime, only the stage call is cancelled: the remote call here outlives it
    and completes once its gate opens, after the run ended.
    """
    probe = shared

    @alto.stage
    async def reach_out(i: int) -> int:
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe.add_when, "landed", "gate")  # the stage's own remote call
            await anyio.sleep(60)
        return i

    @alto.flow
    def f(i: int):
        return reach_out(i)

    stream = f.stream([0], backend=backend)

    async def consume() -> None:
        async for _ in stream:
            pass

    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await probe.wait("landed.sent")
            tg.cancel_scope.cancel()  # the run ends (every stage call with it) before...
        await probe.set("gate")  # ...the stage's own remote call may go on
        while await probe.get("landed") < 1:
            await anyio.sleep(0.01)
