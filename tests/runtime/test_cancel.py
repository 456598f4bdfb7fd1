"""Cancelling a run cancels every stage call it started, and leaves no task behind."""

from __future__ import annotations

import asyncio
import gc

import anyio
import pytest

import alto
from alto import Gather, Split

pytestmark = pytest.mark.anyio


class Probe:
    """Counts stage calls in progress, and how many were cancelled."""

    def __init__(self) -> None:
        self.running = 0
        self.cancelled = 0
        self.started = anyio.Event()


def blocking_flow(probe: Probe) -> alto.Flow:
    @alto.stage
    async def parts(n: int) -> Split[int]:
        for i in range(n):
            yield i

    @alto.stage(replicas=4)
    async def block(i: int) -> int:
        probe.running += 1
        probe.started.set()
        try:
            if i > 0:
                await anyio.sleep(60)
            return i
        except anyio.get_cancelled_exc_class():
            probe.cancelled += 1
            raise
        finally:
            probe.running -= 1

    @alto.stage
    async def total(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def f(n: int):
        return total(block(parts(n)))

    return f


def other_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_cancelling_run_cancels_stage_calls(backend):
    probe = Probe()
    f = blocking_flow(probe)
    before = other_tasks()
    with anyio.move_on_after(5) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(f.run, [3, 3])
            await probe.started.wait()
            await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught  # cancelled by us, not by the guard
    assert probe.running == 0 and probe.cancelled >= 2
    assert other_tasks() <= before


async def test_leaving_stream_early_cancels_the_rest(backend):
    probe = Probe()
    f = blocking_flow(probe)
    before = other_tasks()
    with anyio.fail_after(5):
        async with f.stream([1, 3, 3], backend=backend) as results:
            async for r in results:
                assert r.index == 0 and r.value == 0
                break
    assert probe.running == 0 and probe.cancelled >= 1
    assert other_tasks() <= before


async def test_breaking_out_of_a_bare_stream_loop_cancels_the_rest(backend):
    probe = Probe()
    f = blocking_flow(probe)
    before = other_tasks()
    with anyio.fail_after(5):
        async for r in f.stream([1, 3, 3], backend=backend):
            break
        gc.collect()
        while other_tasks() - before:
            await anyio.sleep(0.01)
    assert probe.running == 0 and probe.cancelled >= 1


async def test_cancelled_consumer_of_stream_cancels_the_run(backend):
    probe = Probe()
    f = blocking_flow(probe)
    stream = f.stream([3], backend=backend)
    with anyio.move_on_after(0.2):
        async for _ in stream:
            pass
    assert probe.running == 0 and probe.cancelled >= 1
