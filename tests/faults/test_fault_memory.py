"""Bounded memory, shown as behaviour: a fast split cannot run ahead of a slow consumer by more
than the buffers between them, however many fragments it makes.

Memory figures (peak RSS at 10k vs 1M fragments) come from ``benchmarks/memory.py``; this
test checks the mechanism that keeps them flat, counting fragments rather than bytes:

* the split's lead (children made minus children the slow stage has taken) stays within
  the slow stage's inbox (``buffer`` chunks of ``CHUNK`` records) plus a chunk in each of
  the three places a chunk can be between them (being filled, being sent, being worked on);
* ``RunStats.peak_queue`` of every stage stays within its inbox plus one chunk per sender
  blocked on it.
"""

from __future__ import annotations

import anyio
import pytest
from faultkit import fault

import alto
from alto import GatherStream, Split
from alto.runtime.records import CHUNK

pytestmark = pytest.mark.anyio

N = 200_000
BUFFER = 2


@fault("a split that makes 200k fragments as fast as it can, into a slow stage",
       where="stages only (no server)",
       observed="the split waits for the slow stage: its lead stays within the buffers "
       "((buffer + 3) x 64 fragments) and every stage's peak_queue within its inbox, "
       "independent of the number of fragments", roots="none fail")
async def test_fast_split_into_slow_stage_stays_within_the_buffers() -> None:
    made = [0]
    lead = [0]

    @alto.stage(buffer=BUFFER)
    async def many(n: int) -> Split[int]:
        for i in range(n):
            made[0] = i + 1
            yield i

    @alto.stage(buffer=BUFFER)
    async def slow(i: int) -> int:
        ahead = made[0] - i
        if ahead > lead[0]:
            lead[0] = ahead
        if i % 100 == 0:
            await anyio.sleep(0.001)
        return 1

    @alto.stage
    async def count(xs: GatherStream[int]) -> int:
        return sum([x async for x in xs])

    @alto.flow
    def f(n: int):
        return count(slow(many(n)))

    stats = alto.RunStats()
    with anyio.fail_after(240):
        assert await f.run([N], stats=stats) == [N]
    assert made[0] == N and stats.stages["slow"].fragments_out == N
    assert CHUNK <= lead[0] <= (BUFFER + 3) * CHUNK, lead[0]
    # each inbox holds `buffer` chunks of CHUNK records; one more chunk per blocked sender
    for name, buffer in (("many", 8), ("slow", BUFFER), ("count", 8)):
        peak = stats.stages[name].peak_queue
        assert 0 < peak <= (buffer + 1) * CHUNK, (name, peak)
    assert stats.stages["slow"].peak_queue > CHUNK  # the slow stage's inbox did fill up
