"""Load generation: a closed loop of clients, or open-loop Poisson arrivals.

A **closed loop** at concurrency *c* keeps *c* root inputs in flight: the next input is
submitted the moment one completes (*c* clients, each sending its next request when its
answer arrives), until ``total`` inputs have been submitted (the inputs are reused in turn
when ``total`` is larger than their number). Its **steady-state window** runs from the
moment the first *c* inputs have completed to the last submission
(:func:`~alto.bench.stats.steady_window`); latency and throughput are taken inside it.

An **open loop** submits inputs at the times of a seeded Poisson schedule, whether or not
earlier ones have finished. Latency runs from the *scheduled* arrival, so a driver that
falls behind cannot hide queueing (no coordinated omission).

**One clock, one event.** Every input's latency runs from its submission to the moment its
result reaches the driver's ``done`` callback, both read from ``time.perf_counter()``.
Submission is the driver's own act: an input is put in the system's queue at its
submission time, whatever the system is doing, and the system takes it from there when it
is ready. (A system that pulled its inputs lazily used to set their submission time
itself, when it first asked for them: Alto's start-up before its first pull was left out
of its latency, and its operator calls ended after the latency it was credited with.)
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from alto.bench.stats import in_flight, steady_window
from alto.bench.systems import Arrival, Server, now
from alto.errors import UsageError


@dataclass(slots=True)
class Sample:
    """One root input's outcome in one measured run (times in seconds).

    ``index`` is the submission's number within the run; ``input`` the position of the
    input it carried in the run's input list (the same input may be submitted again).
    """

    index: int
    submitted: float  # from the run's start
    input: int = 0
    latency: float = math.nan
    first_fragment: float | None = None  # from submission to its first fragment output
    error: str | None = None
    output: Any = None
    in_window: bool = True

    def as_dict(self) -> dict[str, Any]:
        """The sample as a dict for JSON (seconds rounded to microseconds; None for no latency)."""
        return {
            "index": self.index,
            "input": self.input,
            "submitted_s": round(self.submitted, 6),
            "latency_s": None if math.isnan(self.latency) else round(self.latency, 6),
            "first_fragment_s": (
                None if self.first_fragment is None else round(self.first_fragment, 6)
            ),
            "error": self.error,
            "in_window": self.in_window,
        }


@dataclass(slots=True)
class Outcome:
    """What one measured run produced.

    ``window`` is the measured window, in seconds from ``started``: the steady state of a
    closed loop, or the whole run of an open one.
    """

    started: float  # perf_counter of the run's start (the first submission)
    samples: list[Sample] = field(default_factory=list)
    ended: float = 0.0
    timed_out: bool = False
    window: tuple[float, float] = (math.nan, math.nan)
    late_spans: list[int] = field(default_factory=list)
    """Submissions with a recorded span (operator call, stage call) that ended after the
    submission's recorded completion: none, when latency is taken on one clock."""

    @property
    def completed(self) -> list[Sample]:
        """The samples that got an output (no error, a latency)."""
        return [s for s in self.samples if s.error is None and not math.isnan(s.latency)]

    @property
    def measured(self) -> list[Sample]:
        """Completed samples submitted inside the window."""
        return [s for s in self.completed if s.in_window]

    @property
    def wall_s(self) -> float:
        """Seconds from the run's start to its end."""
        return self.ended - self.started

    @property
    def first_output_s(self) -> float:
        """Seconds from the run's start to its first output (NaN when none completed)."""
        done = [s.submitted + s.latency for s in self.completed]
        return min(done) if done else math.nan

    def completions(self) -> list[float]:
        """Completion time of every sample, from the start (NaN where none)."""
        return [s.submitted + s.latency for s in self.samples]

    @property
    def window_throughput(self) -> float:
        """Inputs completed inside the window per second of it."""
        start, end = self.window
        if math.isnan(start) or not end > start:
            return math.nan
        done = [t for t in self.completions() if not math.isnan(t) and start <= t <= end]
        return len(done) / (end - start)

    @property
    def in_flight(self) -> float:
        """Time-averaged inputs in flight inside the window."""
        return in_flight([s.submitted for s in self.samples], self.completions(), self.window)


async def closed_loop(
    server: Server,
    inputs: Sequence[Any],
    concurrency: int,
    *,
    total: int | None = None,
    timeout: float | None = None,
) -> Outcome:
    """Submit ``total`` inputs through ``server`` keeping ``concurrency`` of them in flight.

    ``total`` defaults to ``len(inputs)``; the inputs are reused in turn past their number.
    """
    if concurrency < 1:
        msg = f"concurrency must be >= 1, got {concurrency}"
        raise UsageError(msg)
    total = len(inputs) if total is None else total
    free = anyio.Semaphore(concurrency)

    async def pace(k: int, t0: float) -> float:
        await free.acquire()
        return now()

    outcome = await _drive(server, inputs, total, pace, free, timeout)
    start, end = steady_window(
        [s.submitted for s in outcome.samples], outcome.completions(), concurrency
    )
    if math.isnan(start) or total <= concurrency:
        # too short for a steady state (every input submitted at once): the whole run
        outcome.window = (0.0, outcome.wall_s)
    else:
        outcome.window = (start, end)
        for s in outcome.samples:
            s.in_window = start <= s.submitted <= end
    return outcome


async def open_loop(
    server: Server,
    inputs: Sequence[Any],
    schedule: Sequence[float],
    *,
    timeout: float | None,
    warmup: int = 0,
) -> Outcome:
    """Submit input ``k % len(inputs)`` at ``schedule[k]`` seconds after the start.

    It does not wait for any of them.

    With ``warmup`` the first ``warmup`` arrivals are not measured, and the window runs
    from the first measured arrival to the last arrival (the steady window: past the
    cold start, before the drain); without, it is the whole run.
    """
    if not inputs and schedule:
        msg = "an arrival schedule but no inputs"
        raise UsageError(msg)

    async def pace(k: int, t0: float) -> float:
        delay = t0 + schedule[k] - now()
        if delay > 0:
            await anyio.sleep(delay)
        return t0 + schedule[k]

    outcome = await _drive(server, inputs, len(schedule), pace, None, timeout)
    outcome.window = (0.0, outcome.wall_s)
    if 0 < warmup < len(schedule):
        outcome.window = (schedule[warmup], schedule[-1])
        for s in outcome.samples:
            s.in_window = s.index >= warmup
    return outcome


async def _drive(
    server: Server,
    inputs: Sequence[Any],
    total: int,
    pace: Callable[[int, float], Awaitable[float]],
    free: anyio.Semaphore | None,
    timeout: float | None,
) -> Outcome:
    send, receive = anyio.create_memory_object_stream[Arrival](math.inf)
    started = now()
    outcome = Outcome(started)
    submitted: dict[int, float] = {}
    finished: dict[int, tuple[float, Any, BaseException | None]] = {}

    async def produce() -> None:
        async with send:
            for k in range(total):
                at = await pace(k, started)
                submitted[k] = at
                send.send_nowait(Arrival(k, inputs[k % len(inputs)], at))

    async def arrivals() -> AsyncIterator[Arrival]:
        async with receive:
            async for arrival in receive:
                yield arrival

    def done(index: int, value: Any, error: BaseException | None) -> None:
        finished[index] = (now(), value, error)
        if free is not None:
            free.release()

    with anyio.move_on_after(timeout) as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(produce)
            await server.serve(arrivals(), done)
            group.cancel_scope.cancel()  # a system that stopped early: stop submitting
    outcome.timed_out = scope.cancelled_caught
    outcome.ended = max((t for t, _, _ in finished.values()), default=now())
    fragment_ends = server.fragment_ends()
    span_ends = server.span_ends()
    for i, (t, _, _) in finished.items():
        if span_ends.get(i, -math.inf) > t:
            outcome.late_spans.append(i)
    for i in range(total):
        at = submitted.get(i)
        sample = Sample(i, (at - started) if at is not None else math.nan, i % max(len(inputs), 1))
        if i not in finished:
            sample.error = "timed out" if outcome.timed_out else "no outcome"
        else:
            t, value, error = finished[i]
            assert at is not None
            sample.latency = t - at
            if error is not None:
                sample.error = describe(error)[:500]
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


def describe(error: BaseException) -> str:
    """``Type: message`` of ``error``; for an exception group, of the leaves it holds.

    A TaskGroup's ``unhandled errors`` says nothing of what went wrong.
    """
    if isinstance(error, BaseExceptionGroup):
        leaves = [describe(e) for e in error.exceptions]
        return f"{type(error).__name__} of {len(leaves)}: " + "; ".join(leaves)
    return f"{type(error).__name__}: {error}"
