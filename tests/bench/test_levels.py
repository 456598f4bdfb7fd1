"""An app's SLO and its search's start, from its unloaded pass."""

from __future__ import annotations

from typing import Any

import pytest

from alto.bench.errors import BenchError
from alto.bench.levels import plan_levels
from alto.bench.settings import Settings


def bounds(unloaded_s: float, ceiling: float | None = None) -> dict[str, Any]:
    return {
        "queries": [{"unloaded_reference_s": unloaded_s} for _ in range(5)],
        "rate_ceiling": ceiling,
    }


def test_the_slo_is_the_factor_times_the_unloaded_p50_but_at_least_the_floor() -> None:
    settings = Settings(apps=["factcheck"], load="search")
    llm = plan_levels(settings, bounds(0.45, ceiling=46.8), None)
    assert llm["slo_s"] == pytest.approx(1.35)  # 3 x 0.45 s, far above the floor
    assert llm["levels"] == [23.4]  # half the rate ceiling
    cpu = plan_levels(Settings(apps=["ingest"], load="search"), bounds(0.002), None)
    assert cpu["slo_s"] == 0.05  # 3 x 2 ms = 6 ms would be under the floor
    assert cpu["slo_rule"] == "3 x the asyncio reference's unloaded p50, at least 0.05 s"
    assert cpu["levels"] == [125.0]  # a quarter of 1 / the unloaded p50
    fixed = plan_levels(Settings(apps=["ingest"], load="search", slo_s=0.004), bounds(0.002), None)
    assert fixed["slo_s"] == 0.004 and fixed["slo_rule"] == "fixed 0.004 s"  # given: no floor
    none = plan_levels(Settings(apps=["ingest"], slo_floor_s=0.0), bounds(0.002), None)
    assert none["slo_s"] == pytest.approx(0.006)


def test_whether_cpu_is_the_work_is_handed_to_the_search() -> None:
    settings = Settings(apps=["ingest"], load="search")
    assert plan_levels(settings, bounds(0.002), None, cpu_is_work=True)["cpu_is_work"] is True
    assert plan_levels(settings, bounds(0.002), None)["cpu_is_work"] is False


def test_a_negative_slo_floor_is_refused() -> None:
    with pytest.raises(BenchError, match="--slo-floor must be a number of seconds >= 0"):
        Settings(apps=["ingest"], slo_floor_s=-1.0)
