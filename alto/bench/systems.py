"""The systems under test, behind one interface the load driver can feed.

* ``alto``: the app's Alto flow, run once per measured run as one streaming run whose
  root inputs arrive over time (an async iterable), so fragments of different roots
  share stages and batches as they do in production.
* ``langgraph-flat``, ``langgraph-subgraph``, ``langgraph-functional``: the LangGraph
  versions (``baselines_langgraph``), one graph invocation per root input.
* ``asyncio-reference``: the app's hand-written asyncio version
  (``examples/<app>/asyncio_reference.py``), one coroutine per root input. It is a
  reference, not an optimum: it schedules nothing across inputs.

The **controls** (:mod:`alto.bench.controls`; ``--controls`` runs them all) are built like
one of those and change one thing, to show what each ingredient buys:

* ``alto@balancer``: Alto, its client given the balancer's URL only (its dispatcher still
  orders its calls, under the whole cap on that URL).
* ``alto-no-lineage``: Alto, its client ordering ``fifo`` and routing ``least-loaded``, no
  ``priority`` sent.
* ``alto-no-priority``: Alto, no ``priority`` sent.
* ``alto-traced``: Alto keeping a span per stage call (``trace=True``).
* ``asyncio-reference+client``, ``langgraph-flat+client``, ``langgraph-subgraph+client``,
  ``langgraph-functional+client``: the baseline, its calls through one client of its own
  over the replica URLs (the cap per replica, ``fifo``, ``least-loaded``, no semaphore).

How each system reaches the LLM and is held to the one cap is in :mod:`alto.bench.endpoints`.

Every system is built afresh for every measured run, on operators that record their
calls (:mod:`alto.bench.record`); building is not timed.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from alto.bench.record import Call, Recorder, current_root
from alto.errors import UsageError

ALTO = "alto"
REFERENCE = "asyncio-reference"
LANGGRAPH_VARIANTS = ("flat", "subgraph", "functional")
SYSTEMS = (ALTO, *(f"langgraph-{v}" for v in LANGGRAPH_VARIANTS), REFERENCE)

FRAGMENT_OUTPUT: dict[str, str | None] = {
    "factcheck": "judge",
    "multihop": "answer",
    "summarize": "summarize_section",
    "ingest": None,
}
"""Per app, the first per-fragment result: the step function making its operator call.
Ingest's outputs are per corpus only."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """A root input handed to a system: its index in the run and when it was submitted."""

    index: int
    value: Any
    submitted: float


Done = Callable[[int, Any, BaseException | None], None]
"""Called once per root input, as it completes: ``(index, output, error)``."""


class Server(Protocol):
    """A system ready for one measured run."""

    async def serve(self, arrivals: AsyncIterator[Arrival], done: Done) -> None:
        """Run every arrival (they come over time) and report each with ``done``."""

    def fragment_ends(self) -> dict[int, float]:
        """Per root index, when its first per-fragment output was ready (if measured here)."""

    def span_ends(self) -> dict[int, float]:
        """Per root index, when the last recorded piece of its work ended."""


class PerRoot:
    """A system that runs one coroutine per root input (LangGraph, the asyncio reference).

    Args:
        run_one: runs one root input to its output.
        recorder: the recorder of the operators it calls (for fragment outputs).
        fragment_step: the step function whose operator call makes a per-fragment output.
    """

    def __init__(
        self,
        run_one: Callable[[Any], Awaitable[Any]],
        recorder: Recorder | None = None,
        fragment_step: str | None = None,
    ) -> None:
        self.run_one = run_one
        self.recorder = recorder
        self.fragment_step = fragment_step

    async def serve(self, arrivals: AsyncIterator[Arrival], done: Done) -> None:
        """Run each arrival in a task of its own and report its output or failure with ``done``."""
        async def one(arrival: Arrival) -> None:
            current_root.set(arrival.index)  # this task's own context: its calls carry it
            try:
                value = await self.run_one(arrival.value)
            except Exception as exc:  # a failed root is a sample too; the run goes on
                done(arrival.index, None, exc)
            else:
                done(arrival.index, value, None)

        async with asyncio.TaskGroup() as group:
            async for arrival in arrivals:
                group.create_task(one(arrival))

    def span_ends(self) -> dict[int, float]:
        """Per root index, the end of the last operator call recorded for it."""
        ends: dict[int, float] = {}
        for call in self.recorder.calls if self.recorder is not None else ():
            if call.root is not None:
                ends[call.root] = max(ends.get(call.root, call.end), call.end)
        return ends

    def fragment_ends(self) -> dict[int, float]:
        """From the recorded operator calls: the end of the root's first call of the step."""
        ends: dict[int, float] = {}
        if self.recorder is None or self.fragment_step is None:
            return ends
        for call in self.recorder.calls:
            if call.step == self.fragment_step and call.root is not None and call.error is None:
                ends[call.root] = min(ends.get(call.root, call.end), call.end)
        return ends


class AltoServer:
    """The Alto flow, one streaming run fed by the arrivals.

    It runs as a user runs it, keeping no span per stage call (``trace=False``, the
    default). What it did for each input is read from the recorded operator calls, as for
    the other systems: each call carries the roots of the stage call that made it
    (:func:`~alto.bench.record.stage_roots`). With ``trace=True`` (the ``alto-traced``
    control, and the one-input timeline) it keeps spans too, and their ends count as work.

    Args:
        flow: the app's flow.
        recorder: the recorder of the operators the flow calls.
        fragment_step: the step function whose operator call makes a per-fragment output.
        trace: keep a span per stage call.
    """

    def __init__(
        self,
        flow: Any,
        recorder: Recorder | None,
        fragment_step: str | None,
        *,
        trace: bool = False,
    ) -> None:
        import alto

        self.flow = flow
        self.recorder = recorder
        self.fragment_step = fragment_step
        self.trace = trace
        self.stats = alto.RunStats()
        self.order: list[int] = []  # Alto's root index -> the run's root index

    async def serve(self, arrivals: AsyncIterator[Arrival], done: Done) -> None:
        """Feed the arrivals to one streaming run of the flow; report each outcome with ``done``."""
        async def inputs() -> AsyncIterator[Any]:
            async for arrival in arrivals:
                self.order.append(arrival.index)
                yield arrival.value

        async with self.flow.stream(inputs(), stats=self.stats, trace=self.trace) as results:
            async for result in results:
                done(self.order[result.index], result.value, result.error)

    def _calls_by_root(self) -> Iterator[tuple[int, Call]]:
        """Each recorded call once per run root it worked for."""
        order = self.order
        for call in self.recorder.calls if self.recorder is not None else ():
            for root in call.roots:
                yield order[root], call

    def span_ends(self) -> dict[int, float]:
        """Per root index, the end of the last operator call (or stage span) for it."""
        ends: dict[int, float] = {}
        for root, call in self._calls_by_root():
            ends[root] = max(ends.get(root, call.end), call.end)
        for span in self.stats.spans or ():
            if span.ancestry:
                root = self.order[span.ancestry[0]]
                ends[root] = max(ends.get(root, span.end), span.end)
        return ends

    def fragment_ends(self) -> dict[int, float]:
        """From the recorded operator calls: the end of the root's first call of the step."""
        ends: dict[int, float] = {}
        if self.fragment_step is None:
            return ends
        for root, call in self._calls_by_root():
            if call.step == self.fragment_step and call.error is None:
                ends[root] = min(ends.get(root, call.end), call.end)
        return ends


def load_reference(app: ModuleType) -> Callable[..., Awaitable[Any]]:
    """The app's ``asyncio_reference(ops, input, config=None)``."""
    module = importlib.import_module(f"{app.__name__}.asyncio_reference")
    reference: Callable[..., Awaitable[Any]] = module.asyncio_reference
    return reference


def langgraph_unavailable() -> str | None:
    """Why the LangGraph baselines cannot run here, or None when they can."""
    try:
        importlib.import_module("baselines_langgraph")
    except ImportError as exc:
        return f"baselines_langgraph cannot be imported: {exc}"
    return None


def make_server(
    system: str,
    app: ModuleType,
    ops: Any,
    *,
    recorder: Recorder,
    langgraph_concurrency: int,
    config: Any = None,
    trace: bool = False,
) -> Server:
    """A fresh ``system`` for ``app`` on ``ops``.

    Args:
        system: one of :data:`SYSTEMS`, or a control built like one
            (:data:`~alto.bench.controls.CONTROL_SYSTEMS`; its client is in ``ops``).
        app: the app's module (``examples.<name>``).
        ops: recording operators for this run.
        recorder: their recorder.
        langgraph_concurrency: LangGraph's ``max_concurrency``.
        config: the app's ``Config`` (its defaults when None).
        trace: Alto keeps a span per stage call (as the ``alto-traced`` control does).
    """
    from alto.bench.controls import ALL_SYSTEMS, ALTO_TRACED, base_system

    name = app.NAME
    step = FRAGMENT_OUTPUT.get(name)
    given, system = system, base_system(system)
    if system == ALTO:
        traced = trace or given == ALTO_TRACED
        return AltoServer(app.build(ops, config), recorder, step, trace=traced)
    if system == REFERENCE:
        reference = load_reference(app)
        return PerRoot(lambda value: reference(ops, value, config), recorder, step)
    if system.startswith("langgraph-"):
        import baselines_langgraph

        variant = system.removeprefix("langgraph-")
        runner = baselines_langgraph.build(
            name, variant, ops, config, max_concurrency=langgraph_concurrency
        )
        return PerRoot(runner, recorder, step)
    msg = f"unknown system {given!r}; choose from {', '.join(ALL_SYSTEMS)}"
    raise UsageError(msg)


def now() -> float:
    """The clock of the bench's timings (``time.perf_counter``), in seconds."""
    return time.perf_counter()
