"""The Prometheus text of a service's figures."""

from __future__ import annotations

from alto.errors import DeadlineExceeded, InputCancelled
from alto.operators.llm.dispatch import DispatchStats, ReplicaStats
from alto.runtime.metrics import RunStats, StageStats
from alto.serve.metrics import Histogram, ServiceMetrics


class Endpoint:
    def __init__(self, name: str, replicas: tuple[ReplicaStats, ...]) -> None:
        self.name = name
        self.replicas = replicas

    def dispatch_stats(self) -> DispatchStats:
        return DispatchStats(self.name, "root-first", "lineage", 2, 5, self.replicas)


def replica(target: str, limit: int | None) -> ReplicaStats:
    return ReplicaStats(target, inflight=3, limit=limit, calls=40, failures=1,
                        prompt_tokens=900, cached_tokens=300, healthy=True, output_tokens=120,
                        queued=4)


def test_histogram_buckets_are_cumulative():
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    assert h.lines("t") == ['t_bucket{le="0.1"} 2', 't_bucket{le="1.0"} 3',
                            't_bucket{le="+Inf"} 4', "t_sum 3.65", "t_count 4"]


def test_outcomes_stages_and_replicas_in_text_form():
    m = ServiceMetrics()
    m.request("/v1/runs", 200, 0.3)
    m.request("/v1/runs", 429)
    for error in (None, None, ValueError("x"), InputCancelled(1), DeadlineExceeded(2, 1.0)):
        m.outcome(error)
    stats = RunStats()
    stats.stages["judge"] = StageStats("judge", replicas=4, calls=7, queued=2, busy_s=1.5)
    endpoints = [Endpoint("llm", (replica("http://a/v1", 16), replica("http://b/v1", None))),
                 Endpoint("embed", (replica("local", 1),))]
    lines = m.render(inflight=3, max_inflight=8, stats=stats, endpoints=endpoints).splitlines()
    for expected in [
        'alto_serve_requests_total{route="/v1/runs",status="200"} 1',
        'alto_serve_requests_total{route="/v1/runs",status="429"} 1',
        "alto_serve_request_seconds_count 1",
        'alto_serve_inputs_total{outcome="ok"} 2',
        'alto_serve_inputs_total{outcome="error"} 1',
        'alto_serve_inputs_total{outcome="cancelled"} 1',
        'alto_serve_inputs_total{outcome="deadline"} 1',
        "alto_serve_inputs_in_flight 3",
        "alto_serve_max_inflight 8",
        'alto_stage_calls_total{stage="judge"} 7',
        'alto_stage_queue_depth{stage="judge"} 2',
        'alto_stage_busy_seconds_total{stage="judge"} 1.5',
        'alto_stage_replicas{stage="judge"} 4',
        'alto_llm_queued{endpoint="llm"} 2',
        'alto_llm_replica_calls_total{endpoint="llm",replica="http://a/v1"} 40',
        'alto_llm_replica_limit{endpoint="llm",replica="http://a/v1"} 16',
        'alto_llm_replica_cached_tokens_total{endpoint="embed",replica="local"} 300',
        'alto_llm_replica_healthy{endpoint="llm",replica="http://b/v1"} 1',
        'alto_llm_replica_queued{endpoint="llm",replica="http://b/v1"} 4',
    ]:
        assert expected in lines, expected
    # a replica without a limit has no limit sample; each family is declared once
    assert not any(line.startswith('alto_llm_replica_limit{endpoint="llm",replica="http://b')
                   for line in lines)
    declared = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(declared) == len(set(declared))
