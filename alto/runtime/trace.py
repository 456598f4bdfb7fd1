"""Stage calls as Chrome trace events (the JSON format Perfetto and chrome://tracing open)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alto.ancestry.ancestry import format_ancestry
from alto.errors import UsageError
from alto.runtime.metrics import RunStats


def chrome_trace(stats: RunStats, *, process: str = "alto") -> dict[str, Any]:
    """One complete ("X") event per stage call, one track per stage replica.

    Needs a run made with ``trace=True`` (``stats.spans``). Times are in
    microseconds from the start of the run; each event names the root input and
    the fragment's ancestry.
    """
    if stats.spans is None:
        msg = "the run recorded no spans; run it with trace=True"
        raise UsageError(msg)
    t0 = stats.started
    tracks: dict[tuple[str, int], int] = {}
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": process}}
    ]
    for stage in stats.stages.values():
        for r in range(stage.replicas):
            tid = len(tracks) + 1
            tracks[(stage.name, r)] = tid
            label = stage.name if stage.replicas == 1 else f"{stage.name}[{r}]"
            events.append({"ph": "M", "name": "thread_name", "pid": 1, "tid": tid,
                           "args": {"name": label}})
    for span in stats.spans:
        tid = tracks.setdefault((span.stage, span.replica), len(tracks) + 1)
        events.append({
            "ph": "X",
            "name": span.stage,
            "cat": "stage",
            "pid": 1,
            "tid": tid,
            "ts": round((span.start - t0) * 1e6, 3),
            "dur": round((span.end - span.start) * 1e6, 3),
            "args": {"input": span.ancestry[0], "ancestry": format_ancestry(span.ancestry),
                     "fragments": span.size},
        })
    for index in sorted(stats.root_end):
        if index in stats.root_start:
            events.append({
                "ph": "X", "name": f"input {index}", "cat": "root", "pid": 2, "tid": 1,
                "ts": round((stats.root_start[index] - t0) * 1e6, 3),
                "dur": round((stats.root_end[index] - stats.root_start[index]) * 1e6, 3),
            })
    events.append({"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "inputs"}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_chrome_trace(stats: RunStats, path: str | Path, *, process: str = "alto") -> Path:
    """Write :func:`chrome_trace` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(chrome_trace(stats, process=process)))
    return path
