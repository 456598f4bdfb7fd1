"""One meaning of ``batch_timeout`` on every backend (:mod:`alto.runtime.batching`).

A partial batch waits for more inputs only while something upstream can still send
some; when nothing can, it runs at once instead of waiting out its timeout.
"""

from __future__ import annotations

import anyio
import pytest

import alto
from alto import Gather, Split
from alto.runtime.batching import BatchPolicy

pytestmark = pytest.mark.anyio

HANG = 60  # seconds: only reached when a partial batch waits out its hour-long timeout


async def test_a_lone_input_does_not_wait_out_the_timeout(backend, shared):
    @alto.stage(batch=32, batch_timeout=3600)
    async def doubled(xs: list[int]) -> list[int]:
        await shared.append("batches", list(xs))
        return [2 * x for x in xs]

    @alto.flow
    def f(x: int):
        return doubled(x)

    with anyio.fail_after(HANG):
        assert await f.run([21], backend=backend) == [42]
    assert await shared.get("batches", []) == [[21]]


async def test_a_partial_batch_waits_while_the_split_upstream_works(backend, shared):
    @alto.stage
    async def slowly(n: int) -> Split[int]:
        for i in range(n):
            await anyio.sleep(0.02)
            yield i

    @alto.stage(batch=64, batch_timeout=HANG)
    async def doubled(xs: list[int]) -> list[int]:
        await shared.append("batches", list(xs))
        return [2 * x for x in xs]

    @alto.stage
    async def total(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def f(n: int):
        return total(doubled(slowly(n)))

    with anyio.fail_after(2 * HANG):
        assert await f.run([4], backend=backend) == [12]
    assert await shared.get("batches", []) == [[0, 1, 2, 3]]


async def test_inputs_held_back_by_the_concurrency_cap_do_not_make_a_batch_wait(
    backend, shared
):
    # the source has more inputs, but none can enter until a root ends: a batch that waited
    # for them would wait out its hour-long timeout once per input
    @alto.stage(batch=32, batch_timeout=3600)
    async def doubled(xs: list[int]) -> list[int]:
        await shared.append("batches", list(xs))
        return [2 * x for x in xs]

    @alto.flow
    def f(x: int):
        return doubled(x)

    async def arriving():
        for x in (1, 2, 3):
            yield x

    with anyio.fail_after(HANG):
        assert await f.run([1, 2, 3], backend=backend, concurrency=1) == [2, 4, 6]
        assert await f.run(arriving(), backend=backend, concurrency=1) == [2, 4, 6]
    assert await shared.get("batches", []) == [[1], [2], [3]] * 2


def test_the_policy():
    upstream = [True]
    policy = BatchPolicy(4, 10.0, lambda: upstream[0])
    assert policy.due(4, 0.0, ended=False)  # full
    assert policy.due(1, 0.0, ended=True)  # nothing more will come at all
    assert policy.due(1, -1e9, ended=False)  # waited out the timeout
    assert not policy.due(1, float("inf"), ended=False)  # upstream works: wait
    upstream[0] = False
    assert policy.due(1, float("inf"), ended=False)  # nothing upstream: run now
    assert BatchPolicy(4, 0.0, lambda: True).due(1, float("inf"), ended=False)
    assert 0 <= policy.recheck_in(0.0) <= 1e-3
