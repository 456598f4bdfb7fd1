"""The load levels of one app's measured runs, its SLO and its rate ceiling (pure)."""

from __future__ import annotations

import math
from typing import Any

from alto.bench.settings import Settings
from alto.bench.stats import finite, percentile

RATE_FRACTIONS = (0.25, 0.4, 0.55, 0.7, 0.85, 1.0)
"""The automatic open-loop sweep, as fractions of the app's rate ceiling on the deployment
(LLM apps), the second being the *moderate* rate every system runs."""
RATE_MULTIPLES = (0.1, 0.25, 0.5, 1.0)
"""The automatic sweep of an app without LLM calls: multiples of 1 / its unloaded p50 (its
work is CPU-bound Python, so one input at a time is about all a process can serve)."""


def plan_levels(
    settings: Settings, bounds: dict[str, Any], emulator: Any, *, cpu_is_work: bool = False
) -> dict[str, Any]:
    """The load levels of the measured runs, the SLO, and the rate ceiling.

    The SLO is ``settings.slo_s``, else ``settings.slo_factor`` times the asyncio
    reference's unloaded p50 but at least ``settings.slo_floor_s``: with ingest's unloaded
    p50 of about 2 ms, 3x is a 6 ms bound on a p95, which one garbage collection or one
    time slice lost to another process on a shared 2-core machine overruns, so every system
    missed it at every rate; 50 ms is a bound that such stalls alone do not break, and the
    search then finds where each system's queue starts to grow. ``cpu_is_work``: the
    systems' own CPU work is what is measured (no model calls, or the model in-process); it
    goes into the result for the rate search (:func:`alto.bench.machine.saturation`).

    Closed loop: ``settings.concurrency``. Open loop: ``settings.rates``, or the automatic
    sweep: :data:`RATE_FRACTIONS` of the rate ceiling (the deployment's peak decode
    throughput over the decode tokens of an input), or for an app without LLM calls
    :data:`RATE_MULTIPLES` of 1 / its unloaded p50. The *moderate* rate is the second.
    Search: one level, the search's start rate (``settings.search_start``, else half the
    rate ceiling, else a quarter of 1 / the unloaded p50); the search goes on from there.
    """
    rows = [q for q in bounds["queries"] if "unloaded_reference_s" in q]
    unloaded = percentile([q["unloaded_reference_s"] for q in rows], 50) if rows else math.nan
    slo = (
        settings.slo_s
        if settings.slo_s
        else max(settings.slo_factor * unloaded, settings.slo_floor_s)
    )
    ceiling = bounds.get("rate_ceiling")
    if settings.load == "closed":
        levels = [float(c) for c in settings.concurrency]
        how = "closed-loop concurrency"
    elif settings.load == "search":
        base = 1.0 / unloaded if unloaded and unloaded > 0 else 1.0
        start = settings.search_start or round(0.5 * ceiling if ceiling else 0.25 * base, 3)
        levels = [start]
        how = f"rate search from {start:g}/s" + (
            " (given)"
            if settings.search_start
            else " (half the rate ceiling)"
            if ceiling
            else " (a quarter of 1 / the unloaded p50)"
        )
    elif settings.rates:
        levels = sorted(float(r) for r in settings.rates)
        how = "given rates"
    elif ceiling:
        levels = [round(ceiling * f, 3) for f in RATE_FRACTIONS]
        how = f"fractions {', '.join(f'{f:g}' for f in RATE_FRACTIONS)} of the rate ceiling"
    else:
        base = 1.0 / unloaded if unloaded and unloaded > 0 else 1.0
        levels = [round(base * m, 3) for m in RATE_MULTIPLES]
        how = f"multiples {', '.join(f'{m:g}' for m in RATE_MULTIPLES)} of 1 / unloaded p50"
    moderate = levels[min(1, len(levels) - 1)] if settings.load == "open" else None
    return {
        "levels": levels,
        "how": how,
        "moderate_rate": moderate,
        "unloaded_reference_p50_s": finite(unloaded),
        "slo_s": finite(slo),
        "slo_rule": (
            f"fixed {settings.slo_s:g} s"
            if settings.slo_s
            else f"{settings.slo_factor:g} x the asyncio reference's unloaded p50, "
            f"at least {settings.slo_floor_s:g} s"
        ),
        "rate_ceiling": ceiling,
        "cpu_is_work": cpu_is_work,
    }
