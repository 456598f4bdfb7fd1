"""One emulated replica in a running server: its batcher paced against the wall clock.

Timing emulation, not a model. The batcher (:mod:`alto.bench.emulator.batcher`) plans steps on
a modeled clock; the replica's driver task sleeps until each step's modeled end (times
``time_scale``) and then hands out the step's tokens, so clients see tokens when a GPU
serving engine would have sent them. Deadlines are absolute, so sleep overshoot does not
accumulate; an idle batcher's clock jumps to the wall clock when a request arrives.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Sequence as Seq
from typing import Any

import anyio

from alto.bench.emulator.batcher import ContinuousBatcher, Sequence
from alto.bench.emulator.config import EmulatorConfig

LAG_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, float("inf"))
"""Upper bounds of the step-lag histogram's buckets (seconds of wall clock): a step counts in
the first bucket whose bound is at least how late its tokens were handed out."""


class StepLag:
    """How far each step's delivery fell behind its modeled end on the wall clock.

    A count, a sum, a maximum and a histogram over :data:`LAG_BUCKETS_S`. Cumulative, so one
    run's share is the difference of two reads (the maximum excepted: it is the lifetime
    one).
    """

    __slots__ = ("counts", "max_s", "steps", "sum_s")

    def __init__(self) -> None:
        self.steps, self.sum_s, self.max_s = 0, 0.0, 0.0
        self.counts = [0] * len(LAG_BUCKETS_S)

    def add(self, late: float) -> None:
        """Count one step delivered ``late`` seconds after its modeled end."""
        self.steps += 1
        self.sum_s += late
        self.max_s = max(self.max_s, late)
        self.counts[bisect.bisect_left(LAG_BUCKETS_S, late)] += 1

    def as_dict(self) -> dict[str, Any]:
        """The counters as a dict for JSON (an open last bucket's bound as None)."""
        return {
            "steps": self.steps,
            "sum_s": self.sum_s,
            "max_s": self.max_s,
            "bucket_bounds_s": [b if math.isfinite(b) else None for b in LAG_BUCKETS_S],
            "bucket_counts": list(self.counts),
        }


class _Watch:
    """What a request's client has been handed: tokens delivered, and a change signal."""

    __slots__ = ("changed", "delivered")

    def __init__(self) -> None:
        self.changed = anyio.Event()
        self.delivered = 0


class EmulatedReplica:
    """A batcher, its prefix cache, its counters and its driver loop.

    Args:
        index: the replica's number (its URL is ``/r/{index}/v1``).
        config: the timing model and capacity.
        origin: the server's ``perf_counter`` at modeled time 0.
    """

    def __init__(self, index: int, config: EmulatorConfig, origin: float) -> None:
        self.index = index
        self.config = config
        self.batcher = ContinuousBatcher(config)
        self.origin = origin
        self.in_flight = 0  # requests routed here and not yet answered (the balancer's load)
        self.requests = 0
        self.completed = 0
        self.peak_running = 0
        self._wake = anyio.Event()
        self._watches: dict[Sequence, _Watch] = {}

    # -- clocks ---------------------------------------------------------------------------------

    def model_now(self) -> float:
        """The wall clock, on the modeled clock (the batcher's own when time does not pass)."""
        scale = self.config.time_scale
        if scale <= 0:
            return self.batcher.now
        return (time.perf_counter() - self.origin) / scale

    def wall(self, t: float) -> float:
        """The server's ``perf_counter`` value at modeled time ``t``."""
        return self.origin + t * self.config.time_scale

    # -- requests -------------------------------------------------------------------------------

    async def submit(self, prompt: Seq[int], output: Seq[int], priority: int) -> Sequence:
        """Enter a request after the server's own per-request work (modeled ``ttft_s - tpot_s``).

        Returns its sequence, whose tokens :meth:`tokens` then waits for.
        """
        delay = self.config.overhead_s * self.config.time_scale
        if delay > 0:
            await anyio.sleep(delay)
        self.batcher.advance(self.model_now())
        seq = self.batcher.add(prompt, output, priority)
        self._watches[seq] = _Watch()
        self.requests += 1
        self._wake.set()
        return seq

    async def wait(self, seq: Sequence, have: int) -> int:
        """Tokens of ``seq`` delivered so far, once there are more than ``have``.

        The batcher plans a step before its modeled end; its tokens are delivered at the end.
        """
        watch = self._watches[seq]
        while watch.delivered <= have and not seq.aborted:
            await watch.changed.wait()
        return watch.delivered

    def release(self, seq: Sequence) -> None:
        """Forget a request (answered, failed or abandoned); an unfinished one is aborted."""
        self.batcher.abort(seq)
        watch = self._watches.pop(seq, None)
        if watch is not None:
            watch.changed.set()

    # -- the driver -----------------------------------------------------------------------------

    async def run(self, on_step: Any = None) -> None:
        """Step the batcher forever, pacing each step to its modeled end."""
        batcher = self.batcher
        lag = self.step_lag = StepLag()
        while True:
            if not batcher.busy:
                self._wake = anyio.Event()
                if not batcher.busy:
                    await self._wake.wait()
                continue
            step = batcher.step()
            if step is None:  # waiting requests that cannot enter yet: wait for a change
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            self.peak_running = max(self.peak_running, step.sequences)
            delay = self.wall(step.end) - time.perf_counter()
            await anyio.sleep(max(0.0, delay))
            if self.config.time_scale > 0:  # how late, on the wall clock, its tokens go out
                lag.add(max(0.0, time.perf_counter() - self.wall(step.end)))
            self.completed += len(step.finished)
            for seq in step.emitted:
                watch = self._watches.get(seq)
                if watch is not None:
                    watch.delivered += 1
                    event, watch.changed = watch.changed, anyio.Event()
                    event.set()
            if on_step is not None:
                on_step()

    def stats(self) -> dict[str, Any]:
        """This replica's counters and cache state."""
        batcher, pool = self.batcher, self.batcher.pool
        return {
            "replica": self.index,
            "requests": self.requests,
            "in_flight": self.in_flight,
            "running": len(batcher.running),
            "waiting": batcher.waiting,
            "peak_running": self.peak_running,
            "completed": self.completed,
            "steps": batcher.steps,
            "preemptions": batcher.preemptions,
            "modeled_clock_s": batcher.now,
            "step_lag": getattr(self, "step_lag", StepLag()).as_dict(),
            "kv_blocks": pool.num_blocks,
            "kv_free_blocks": pool.free_blocks,
            "prefix_cache": {
                "enabled": pool.caching,
                "cached_blocks": pool.cached_blocks,
                "hit_tokens": pool.hit_tokens,
                "queried_tokens": pool.queried_tokens,
                "evictions": pool.evictions,
            },
        }
