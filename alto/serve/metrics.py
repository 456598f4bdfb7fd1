"""A service's figures in the Prometheus text format (``GET /metrics``).

* ``alto_serve_requests_total{route, status}``: requests answered, by route and status.
* ``alto_serve_request_seconds``: a histogram of request latency (answered with 200).
* ``alto_serve_inputs_total{outcome}``: inputs with an outcome: ``ok``, ``error``,
  ``cancelled``, ``deadline``.
* ``alto_serve_inputs_in_flight`` and ``alto_serve_max_inflight``.
* per stage of the shared pipeline (``stage`` label): ``alto_stage_calls_total``,
  ``alto_stage_fragments_in_total``, ``alto_stage_fragments_out_total``,
  ``alto_stage_errors_total``, ``alto_stage_retries_total``, ``alto_stage_busy_seconds_total``,
  ``alto_stage_queue_depth`` (fragments waiting now), ``alto_stage_working`` (replicas busy
  now), ``alto_stage_replicas``.
* per model endpoint and replica (``endpoint``, ``replica`` labels), from the LLM
  dispatchers: ``alto_llm_replica_inflight``, ``alto_llm_replica_limit``,
  ``alto_llm_replica_calls_total``, ``alto_llm_replica_failures_total``,
  ``alto_llm_replica_prompt_tokens_total``, ``alto_llm_replica_cached_tokens_total``,
  ``alto_llm_replica_output_tokens_total``, ``alto_llm_replica_healthy``,
  ``alto_llm_replica_queued``; per endpoint ``alto_llm_queued``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

from alto.errors import DeadlineExceeded, InputCancelled
from alto.runtime.metrics import RunStats

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Upper bounds (seconds) of the request-latency histogram's buckets (``+Inf`` is added)."""


class Histogram:
    """Cumulative buckets, a sum and a count, as Prometheus histograms are exposed."""

    def __init__(self, bounds: Sequence[float] = BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        """The histogram as Prometheus text lines under metric ``name``: buckets, sum and count."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            running += n
            le = "+Inf" if bound == float("inf") else _number(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        out.append(f"{name}_sum {_number(self.sum)}")
        out.append(f"{name}_count {self.count}")
        return out


class ServiceMetrics:
    """The counters a service keeps, and their text form.

    Example:
        >>> m = ServiceMetrics()
        >>> m.request("/v1/runs", 200, 0.02)
        >>> 'alto_serve_requests_total{route="/v1/runs",status="200"} 1' in m.render()
        True
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency = Histogram()
        self.outcomes = {"ok": 0, "error": 0, "cancelled": 0, "deadline": 0}

    def request(self, route: str, status: int, seconds: float | None = None) -> None:
        """Count a request answered with ``status``; time it when it succeeded."""
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if seconds is not None and status == 200:
            self.latency.observe(seconds)

    def outcome(self, error: BaseException | None) -> None:
        """Count one input's outcome."""
        if error is None:
            kind = "ok"
        elif isinstance(error, InputCancelled):
            kind = "cancelled"
        elif isinstance(error, DeadlineExceeded):
            kind = "deadline"
        else:
            kind = "error"
        self.outcomes[kind] += 1

    def render(
        self,
        *,
        inflight: int = 0,
        max_inflight: int = 0,
        stats: RunStats | None = None,
        endpoints: Iterable[Any] = (),
    ) -> str:
        """Every figure, in the Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        family("alto_serve_requests_total", "counter", "Requests answered, by route and status.")
        for (route, status), n in sorted(self.requests.items()):
            labels = f'route="{_label(route)}",status="{status}"'
            out.append(f"alto_serve_requests_total{{{labels}}} {n}")
        family("alto_serve_request_seconds", "histogram",
               "Latency of requests answered with 200, in seconds.")
        out.extend(self.latency.lines("alto_serve_request_seconds"))
        family("alto_serve_inputs_total", "counter", "Inputs with an outcome, by outcome.")
        for kind, n in self.outcomes.items():
            out.append(f'alto_serve_inputs_total{{outcome="{kind}"}} {n}')
        family("alto_serve_inputs_in_flight", "gauge", "Inputs admitted and not finished.")
        out.append(f"alto_serve_inputs_in_flight {inflight}")
        family("alto_serve_max_inflight", "gauge", "The most inputs admitted at once.")
        out.append(f"alto_serve_max_inflight {max_inflight}")
        if stats is not None and stats.stages:
            out.extend(_stage_lines(stats))
        endpoints = list(endpoints)
        if endpoints:
            out.extend(_endpoint_lines(endpoints))
        return "\n".join(out) + "\n"


_STAGE_FIGURES = (
    ("alto_stage_calls_total", "counter", "Calls of the stage function.", "calls"),
    ("alto_stage_fragments_in_total", "counter", "Fragments taken on the main input.",
     "fragments_in"),
    ("alto_stage_fragments_out_total", "counter", "Fragments emitted.", "fragments_out"),
    ("alto_stage_errors_total", "counter", "Calls that failed after their retries.", "errors"),
    ("alto_stage_retries_total", "counter", "Calls tried again.", "retries"),
    ("alto_stage_busy_seconds_total", "counter",
     "Seconds inside the stage function, summed over replicas.", "busy_s"),
    ("alto_stage_queue_depth", "gauge", "Fragments waiting at the stage's input now.", "queued"),
    ("alto_stage_working", "gauge", "Replicas handling records now.", "working"),
    ("alto_stage_replicas", "gauge", "Calls of the stage that may run at once.", "replicas"),
)


def _stage_lines(stats: RunStats) -> list[str]:
    out = []
    stages = list(stats.stages.values())
    for name, kind, help_, attr in _STAGE_FIGURES:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for s in stages:
            out.append(f'{name}{{stage="{_label(s.name)}"}} {_number(getattr(s, attr))}')
    return out


_REPLICA_FIGURES = (
    ("alto_llm_replica_inflight", "gauge", "Calls on the replica now.", "inflight"),
    ("alto_llm_replica_limit", "gauge", "The replica's limit on calls in flight.", "limit"),
    ("alto_llm_replica_calls_total", "counter", "Calls given to the replica.", "calls"),
    ("alto_llm_replica_failures_total", "counter", "Calls that failed on the replica.",
     "failures"),
    ("alto_llm_replica_prompt_tokens_total", "counter", "Prompt tokens of its calls.",
     "prompt_tokens"),
    ("alto_llm_replica_cached_tokens_total", "counter",
     "Prompt tokens served from the replica's prefix cache.", "cached_tokens"),
    ("alto_llm_replica_output_tokens_total", "counter", "Output tokens of its calls.",
     "output_tokens"),
    ("alto_llm_replica_healthy", "gauge", "1 while the replica is in rotation.", "healthy"),
    ("alto_llm_replica_queued", "gauge", "Calls waiting for the replica (routed by lineage).",
     "queued"),
)


def _endpoint_lines(endpoints: list[Any]) -> list[str]:
    snapshots = []
    for endpoint in endpoints:
        stats = endpoint.dispatch_stats()
        snapshots.append((_label(str(getattr(endpoint, "name", None) or stats.name)), stats))
    out = ["# HELP alto_llm_queued Calls waiting for admission by the endpoint's dispatcher.",
           "# TYPE alto_llm_queued gauge"]
    out += [f'alto_llm_queued{{endpoint="{name}"}} {stats.queued}' for name, stats in snapshots]
    for metric, kind, help_, attr in _REPLICA_FIGURES:
        out.append(f"# HELP {metric} {help_}")
        out.append(f"# TYPE {metric} {kind}")
        for name, stats in snapshots:
            for replica in stats.replicas:
                value = getattr(replica, attr)
                if value is None:
                    continue  # no limit
                out.append(f'{metric}{{endpoint="{name}",replica="{_label(replica.target)}"}} '
                           f"{_number(value)}")
    return out


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
