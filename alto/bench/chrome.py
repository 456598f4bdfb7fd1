"""The timelines as Chrome trace events (the JSON Perfetto and chrome://tracing open).

One process per (app, system), one track per operator call of the recorded input, so the
trace shows the same Gantt chart as ``timeline_<app>.png``; Alto's own stage calls of the
same run follow as a separate process per app, and, where Alto's client has a dispatcher,
its counter tracks (calls in flight per replica, calls queued) over the same run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def chrome_trace(results: dict[str, Any]) -> dict[str, Any]:
    """``{"traceEvents": [...]}`` with one complete ("X") event per call (microseconds)."""
    events: list[dict[str, Any]] = []
    pid = 0
    for app_name, app in results["apps"].items():
        for system, line in app.get("timelines", {}).items():
            pid += 1
            where = f"{app_name} / {system}"
            events.append(_meta("process_name", pid, name=f"{where} (operator calls)"))
            events.append(_meta("process_sort_index", pid, sort_index=pid))
            for tid, call in enumerate(line["calls"], 1):
                events.append(_meta("thread_name", pid, tid, name=f"{tid:02d} {call['step']}"))
                events.append(
                    _event(
                        call["step"],
                        call["operator"],
                        pid,
                        tid,
                        call["start"],
                        call["end"],
                        {
                            k: call[k]
                            for k in (
                                "method",
                                "root",
                                "items",
                                "tokens",
                                "prompt_chars",
                                "queued_s",
                                "error",
                            )
                        },
                    )
                )
            if line.get("stage_spans"):
                pid += 1
                events.append(_meta("process_name", pid, name=f"{where} (stage calls)"))
                tracks: dict[tuple[str, int], int] = {}
                for span in line["stage_spans"]:
                    key = (span["stage"], span["replica"])
                    if key not in tracks:
                        tracks[key] = len(tracks) + 1
                        track = f"{span['stage']}[{span['replica']}]"
                        events.append(_meta("thread_name", pid, tracks[key], name=track))
                    events.append(
                        _event(
                            span["stage"],
                            "stage",
                            pid,
                            tracks[key],
                            span["start"],
                            span["end"],
                            {"fragments": span["size"]},
                        )
                    )
            dispatch = line.get("dispatch")
            if dispatch and dispatch.get("samples"):
                from alto.operators.llm.observe import counter_events

                pid += 1
                targets = [r["target"] for r in dispatch["replicas"]]
                name = f"{app_name} / {system} ({len(targets)} target(s))"
                events += counter_events(name, targets, dispatch["samples"], pid=pid)
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def _meta(kind: str, pid: int, tid: int | None = None, **args: Any) -> dict[str, Any]:
    """A metadata ("M") event: names or orders a process (or, with ``tid``, a track)."""
    event: dict[str, Any] = {"ph": "M", "name": kind, "pid": pid}
    if tid is not None:
        event["tid"] = tid
    event["args"] = args
    return event


def _event(
    name: str, cat: str, pid: int, tid: int, start: float, end: float, args: dict[str, Any]
) -> dict[str, Any]:
    return {
        "ph": "X",
        "name": name,
        "cat": cat,
        "pid": pid,
        "tid": tid,
        "ts": round(start * 1e6, 3),
        "dur": round(max(end - start, 0.0) * 1e6, 3),
        "args": args,
    }


def write_chrome_trace(results: dict[str, Any], path: str | Path) -> Path:
    """Write :func:`chrome_trace` to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(chrome_trace(results), allow_nan=False))
    return path
