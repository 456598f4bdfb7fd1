"""What a model endpoint's dispatcher did, for people: a text table and Chrome counter tracks.

Both read only the dispatcher's public surface: ``dispatch_stats()`` (a
:class:`~alto.operators.llm.dispatch.DispatchStats` snapshot) and, for the timeline, the
``(time.monotonic(), replica, in flight, queued)`` samples a dispatcher keeps while
``record(True)`` is on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

LEGEND = """\
  queued     (per endpoint) calls waiting for admission now, and the most that ever waited
  calls      calls the replica was given
  in flight  calls on it now
  limit      its limit on calls in flight now (learned when auto; - for none)
  limit from where the limits came from: given (max_inflight), server (what the server says it
             serves at once: llama.cpp's /props total_slots, vLLM's max_num_seqs), default
             (16: the server said nothing), auto (learned)
  cached     share of its calls' prompt tokens the server served from its prefix cache
  failures   calls that failed on it
  healthy    in rotation (NO: out of it, being probed)"""


def stats_dict(stats: Any) -> dict[str, Any]:
    """A ``DispatchStats`` snapshot as plain data (for JSON)."""
    return {
        "name": stats.name,
        "order": stats.order,
        "route": stats.route,
        "queued": stats.queued,
        "max_queued": stats.max_queued,
        "replicas": [
            {
                "target": r.target,
                "calls": r.calls,
                "inflight": r.inflight,
                "limit": r.limit,
                "limit_source": getattr(r, "limit_source", "given"),
                "failures": r.failures,
                "prompt_tokens": r.prompt_tokens,
                "cached_tokens": r.cached_tokens,
                "healthy": r.healthy,
            }
            for r in stats.replicas
        ],
    }


def endpoints_of(objects: Iterable[Any]) -> list[Any]:
    """The objects that have a dispatcher (a ``dispatch_stats`` method), each once."""
    seen: dict[int, Any] = {}
    for obj in objects:
        if obj is not None and callable(getattr(obj, "dispatch_stats", None)):
            seen.setdefault(id(obj), obj)
    return list(seen.values())


def _share(cached: int, prompt: int) -> str:
    return f"{cached / prompt:.0%}" if prompt else "-"


def dispatch_table(stats: Any, *, label: str | None = None) -> str:
    """One endpoint's dispatcher as a plain-text table: a heading line, one row per replica.

    Args:
        stats: a ``DispatchStats`` snapshot.
        label: the endpoint's name in the heading (default: ``stats.name``).
    """
    name = label or stats.name or "LLM endpoint"
    prompt = sum(r.prompt_tokens for r in stats.replicas)
    cached = sum(r.cached_tokens for r in stats.replicas)
    lines = [
        f"{name}: order {stats.order}, route {stats.route}; queued {stats.queued} now, "
        f"{stats.max_queued} at most; cached {_share(cached, prompt)} of {prompt} prompt tokens"
    ]
    width = max([len("replica"), *(len(r.target) for r in stats.replicas)])
    lines.append(
        f"{'replica':<{width}}{'calls':>8}{'in flight':>11}{'limit':>7}{'cached':>8}"
        f"{'failures':>10}{'healthy':>9}"
    )
    for r in stats.replicas:
        limit = "-" if r.limit is None else str(r.limit)
        lines.append(
            f"{r.target:<{width}}{r.calls:>8}{r.inflight:>11}{limit:>7}"
            f"{_share(r.cached_tokens, r.prompt_tokens):>8}{r.failures:>10}"
            f"{'yes' if r.healthy else 'NO':>9}"
        )
    lines.append(f"limit from: {_sources(stats.replicas)}")
    return "\n".join(lines)


def _sources(replicas: Sequence[Any]) -> str:
    """Where the replicas' limits came from: one word when they agree, else per replica."""
    sources = [getattr(r, "limit_source", "given") for r in replicas]
    if len(set(sources)) == 1:
        return sources[0]
    return ", ".join(f"{r.target} {source}" for r, source in zip(replicas, sources))


def relative_samples(samples: Iterable[Sequence[Any]], t0: float) -> list[list[Any]]:
    """A dispatcher's samples with their time in seconds from ``t0``.

    ``t0`` is a ``time.perf_counter()`` reading (the clock of Alto's run statistics).
    """
    offset = time.monotonic() - time.perf_counter()  # the two clocks, read together
    return [[t - offset - t0, *rest] for t, *rest in samples]


def counter_events(
    name: str, targets: Sequence[str], samples: Iterable[Sequence[Any]], *, pid: int
) -> list[dict[str, Any]]:
    """Chrome trace counter ("C") events of one endpoint, in a process of its own.

    One counter track per replica (``in flight``) and one for the endpoint (``queued``),
    a point wherever the value changed.

    Args:
        name: the endpoint's name (the process's name in the trace).
        targets: the replicas' labels, by index.
        samples: ``(seconds from the trace's start, replica, in flight, queued)``
            (:func:`relative_samples`); a replica that is None or negative marks a change
            of the queue alone.
        pid: the trace process id to use (one no other process of the trace has).
    """
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"LLM endpoint {name}"}},
        {"ph": "M", "name": "process_sort_index", "pid": pid, "args": {"sort_index": pid}},
    ]
    last_flight: dict[int, int] = {}
    last_queued: int | None = None
    for t, replica, inflight, queued in samples:
        ts = round(t * 1e6, 3)
        if replica is not None and 0 <= replica and last_flight.get(replica) != inflight:
            last_flight[replica] = inflight
            label = targets[replica] if replica < len(targets) else f"replica {replica}"
            events.append(
                {"ph": "C", "name": f"in flight [{replica}] {label}", "pid": pid, "ts": ts,
                 "args": {"in flight": inflight}}
            )  # fmt: skip
        if queued != last_queued:
            last_queued = queued
            events.append(
                {"ph": "C", "name": "queued", "pid": pid, "ts": ts, "args": {"queued": queued}}
            )
    return events
