"""What a run measures: per-stage counters, per-root timings, optional per-call trace."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from alto.ancestry.ancestry import Ancestry


@dataclass(slots=True)
class StageStats:
    """Counters of one stage, summed over its replicas.

    Attributes:
        fragments_in: fragments the stage took on its main input: the stream it runs on
            (for a join, the first joined stream; a gather's children), so it equals
            ``fragments_out`` of the stage that feeds that input. Values broadcast from outer
            levels are not counted; a fragment that failed upstream is (it travels on so
            that gathers can complete).
        fragments_out: fragments the stage emitted (children, for a split).
        calls: calls of the stage function (a batch counts once).
        busy_s: seconds spent inside the stage function, summed over replicas.
        errors: calls that failed after their retries.
        retries: calls that were tried again.
        bisections: calls of a batched stage on part of a batch whose call failed, made
            to isolate the fragments that fail (see :mod:`alto.runtime.invoke`).
        peak_queue: most fragments waiting in the stage's input at once.
        queued: fragments waiting in the stage's input now.
        working: replicas handling records now (not waiting on an empty input).
    """

    name: str
    replicas: int = 1
    fragments_in: int = 0
    fragments_out: int = 0
    calls: int = 0
    busy_s: float = 0.0
    errors: int = 0
    retries: int = 0
    bisections: int = 0
    queued: int = 0
    peak_queue: int = 0
    working: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The counters as a dict for JSON.

        ``busy_s`` is rounded to microseconds; ``queued`` and ``working``, which only say
        what is happening now, are left out.
        """
        return {
            "name": self.name,
            "replicas": self.replicas,
            "fragments_in": self.fragments_in,
            "fragments_out": self.fragments_out,
            "calls": self.calls,
            "busy_s": round(self.busy_s, 6),
            "errors": self.errors,
            "retries": self.retries,
            "bisections": self.bisections,
            "peak_queue": self.peak_queue,
        }


@dataclass(frozen=True, slots=True)
class CallSpan:
    """One call of a stage function, for timelines (``trace=True``)."""

    stage: str
    ancestry: Ancestry
    start: float
    end: float
    replica: int
    size: int = 1  # fragments in the call (a batch has several)


@dataclass(slots=True)
class RunStats:
    """Statistics of one run; pass one to ``Flow.run(..., stats=...)`` to have it filled.

    Attributes:
        stages: per-stage counters by stage name, in plan order.
        root_start / root_end: ``time.perf_counter()`` when each root input entered
            and got its outcome, by input index.
        spans: every stage call, when the run was started with ``trace=True``.
        started / finished: ``time.perf_counter()`` at the run's start and end.
    """

    stages: dict[str, StageStats] = field(default_factory=dict)
    root_start: dict[int, float] = field(default_factory=dict)
    root_end: dict[int, float] = field(default_factory=dict)
    spans: list[CallSpan] | None = None
    started: float = 0.0
    finished: float = 0.0

    def latency(self, index: int) -> float:
        """Seconds from when root ``index`` entered the run to its outcome."""
        return self.root_end[index] - self.root_start[index]

    @property
    def wall_s(self) -> float:
        """Seconds from the run's start to its end."""
        return self.finished - self.started

    def table(self) -> str:
        """A plain-text table of the stage counters."""
        head = (
            f"{'stage':<24}{'repl':>5}{'in':>9}{'out':>9}{'calls':>8}{'busy s':>10}"
            f"{'err':>6}{'peakq':>7}"
        )
        rows = [head]
        for s in self.stages.values():
            rows.append(
                f"{s.name[:23]:<24}{s.replicas:>5}{s.fragments_in:>9}{s.fragments_out:>9}"
                f"{s.calls:>8}{s.busy_s:>10.3f}{s.errors:>6}{s.peak_queue:>7}"
            )
        return "\n".join(rows)

    def legend(self) -> str:
        """What the columns of :meth:`table` mean."""
        return LEGEND

    def as_dict(self) -> dict[str, Any]:
        """The run's statistics as a dict for JSON.

        The wall time, each stage's counters, and per root input that finished its start and
        end in seconds from the run's start.
        """
        return {
            "wall_s": round(self.wall_s, 6),
            "stages": [s.as_dict() for s in self.stages.values()],
            "roots": {
                i: {
                    "start": self.root_start[i] - self.started,
                    "end": self.root_end[i] - self.started,
                }
                for i in sorted(self.root_end)
                if i in self.root_start
            },
        }


LEGEND = """\
  repl   replicas: calls of the stage that may run at once
  in     fragments taken on the stage's main input (a join's first stream, a gather's
         children); equals the feeding stage's out. Broadcast values are not counted
  out    fragments emitted (a split's children; one per call otherwise)
  calls  calls of the stage function (a batch, or a gathered group, is one call)
  busy s seconds inside the stage function, summed over replicas
  err    calls that failed after their retries
  peakq  most fragments waiting at the stage's input at once"""

now = time.perf_counter
