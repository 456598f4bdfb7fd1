"""Load generation: a closed loop of clients, or open-loop Poisson arrivals.

A **closed loop** at concurrency *c* keeps *c* root inputs in flight: the next input is
submitted the moment one completes (*c* clients, each sending its next request when its
answer arrives). Latency runs from submission to completion.

An **open loop** submits inputs at the times of a seeded Poisson schedule, whether or not
earlier ones have finished. Latency runs from the *scheduled* arrival, so a driver that
falls behind cannot hide queueing (no coordinated omission).

Both measure the same things for every system: per root, latency and (where measured)
time to its first per-fragment output; per run, wall time, time to the first completed
root, and throughput.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from alto.bench.systems import Arrival, Server, now


@dataclass(slots=True)
class Sample:
    """One root input's outcome in one measured run (times in seconds)."""

    index: int
    submitted: float  # from the run's start
    latency: float = math.nan
    first_fragment: float | None = None  # from submission to its first fragment output
    error: str | None = None
    output: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "submitted_s": round(self.submitted, 6),
            "latency_s": None if math.isnan(self.latency) else round(self.latency, 6),
            "first_fragment_s": (
                None if self.first_fragment is None else round(self.first_fragment, 6)
            ),
            "error": self.error,
        }


@dataclass(slots=True)
class Outcome:
    """What one measured run produced."""

    started: float  # perf_counter of the first submission
    samples: list[Sample] = field(default_factory=list)
    ended: float = 0.0
    timed_out: bool = False

    @property
    def completed(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None and not math.isnan(s.latency)]

    @property
    def wall_s(self) -> float:
        return self.ended - self.started

    @property
    def first_output_s(self) -> float:
        done = [s.submitted + s.latency for s in self.completed]
        return min(done) if done else math.nan


async def closed_loop(
    server: Server, inputs: Sequence[Any], concurrency: int, *, timeout: float | None = None
) -> Outcome:
    """Run ``inputs`` through ``server`` keeping ``concurrency`` of them in flight."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    free = anyio.Semaphore(concurrency)
    return await _drive(server, inputs, _closed_arrivals(inputs, free), free, timeout)


async def open_loop(
    server: Server, inputs: Sequence[Any], schedule: Sequence[float], *, timeout: float | None
) -> Outcome:
    """Submit ``inputs[i]`` at ``schedule[i]`` seconds after the start, not waiting for any."""
    if len(schedule) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(schedule)} arrival times")
    return await _drive(server, inputs, None, None, timeout, schedule=schedule)


async def _closed_arrivals(inputs: Sequence[Any], free: anyio.Semaphore) -> AsyncIterator[Arrival]:
    for i, value in enumerate(inputs):
        await free.acquire()
        yield Arrival(i, value, now())


async def _poisson_arrivals(
    inputs: Sequence[Any], schedule: Sequence[float], t0: float
) -> AsyncIterator[Arrival]:
    for i, (value, at) in enumerate(zip(inputs, schedule, strict=True)):
        delay = t0 + at - now()
        if delay > 0:
            await anyio.sleep(delay)
        yield Arrival(i, value, t0 + at)


async def _drive(
    server: Server,
    inputs: Sequence[Any],
    arrivals: AsyncIterator[Arrival] | None,
    free: anyio.Semaphore | None,
    timeout: float | None,
    *,
    schedule: Sequence[float] | None = None,
) -> Outcome:
    started = now()
    outcome = Outcome(started)
    submitted: dict[int, float] = {}
    finished: dict[int, tuple[float, Any, BaseException | None]] = {}
    if arrivals is None:
        assert schedule is not None
        arrivals = _poisson_arrivals(inputs, schedule, started)

    async def watched() -> AsyncIterator[Arrival]:
        async for arrival in arrivals:
            submitted[arrival.index] = arrival.submitted
            yield arrival

    def done(index: int, value: Any, error: BaseException | None) -> None:
        finished[index] = (now(), value, error)
        if free is not None:
            free.release()

    with anyio.move_on_after(timeout) as scope:
        await server.serve(watched(), done)
    outcome.timed_out = scope.cancelled_caught
    outcome.ended = max((t for t, _, _ in finished.values()), default=now())
    fragment_ends = server.fragment_ends()
    for i in range(len(inputs)):
        at = submitted.get(i)
        sample = Sample(i, (at - started) if at is not None else math.nan)
        if i not in finished:
            sample.error = "timed out" if outcome.timed_out else "no outcome"
        else:
            t, value, error = finished[i]
            assert at is not None
            sample.latency = t - at
            if error is not None:
                sample.error = f"{type(error).__name__}: {error}"[:500]
            sample.output = value
            if i in fragment_ends:
                sample.first_fragment = fragment_ends[i] - at
        outcome.samples.append(sample)
    return outcome


def fingerprint(value: Any) -> str:
    """A stable text form of an output, to check that every system computed the same."""
    return json.dumps(_plain(value), sort_keys=True, default=repr)


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    return value
