"""The controls of the comparison: what each of Alto's ingredients buys.

The main systems are each deployed one way. Alto's LLM calls go through a client of its own
on the replica URLs: at most ``llm_cap // replicas`` calls in flight per replica, the oldest
root's calls first (``root-first``), each call to the replica holding its root's prefix
(``lineage``; a root's first call to the least loaded one), and the root's age sent as the
request's ``priority`` where the server honours it. The LangGraph versions and the asyncio
reference go through one semaphore of ``llm_cap`` permits in front of the balancer's URL, the
way users deploy them. Each control changes one of those things, so a reader sees what it
buys; each is a system of its own (``--systems``, or ``--controls`` for all of them), built on
the same recording operators and inputs, and its outputs are checked against the same
reference answers:

* ``alto@balancer``: Alto with its client given the balancer's URL only, like the
  semaphore-held systems. Its dispatcher still orders its calls, under the whole cap on that
  one URL; the balancer places them.
* ``alto-no-lineage``: Alto with lineage off: its dispatcher orders its calls by arrival
  (``fifo``) and routes each to the least loaded replica (``least-loaded``), and sends no
  ``priority`` (the priority is the root's age: lineage too).
* ``alto-no-priority``: Alto as configured, sending no ``priority``: the servers serve
  waiting requests by arrival.
* ``alto-traced``: Alto keeping a span per stage call (``trace=True``), as a user who
  traces a run does; Alto runs untraced, as by default, and no other system keeps spans.
  Its spans' ends count in the check that no work of an input ends after its result. It
  needs no server, so it runs on ingest too.
* ``asyncio-reference+client``, ``langgraph-flat+client``, ``langgraph-subgraph+client``,
  ``langgraph-functional+client``: the baseline with the best a user can do without lineage:
  one client over the replica URLs, shared by all of the system's calls, holding the cap per
  replica (``max_inflight=llm_cap // replicas``), its waiting calls in arrival order
  (``fifo``), each sent to the least loaded replica (``least-loaded``), no ``priority``, and
  no semaphore in front of it. Every LangGraph version has one: they pipeline differently
  (the flat graph level by level, the subgraph per fragment, the Functional API on
  futures), so what a per-replica cap with least-loaded placement buys each can differ.

**How a baseline's client holds its cap.** An ``OpenAIClient``'s dispatcher queues only the
calls made inside an Alto stage call (:func:`alto.current_call`); other calls go at once,
round-robin. So the recording wrapper makes each LLM call of a ``+client`` system an
anonymous call (:class:`~alto.bench.record.RecordingLLM`'s ``anonymous_calls``): a root of
its own, submitted as the call is made, no ancestry. Nothing in it links one call to another,
and neither ``fifo`` nor ``least-loaded`` reads it; it only lets the dispatcher admit the
call under its limit, in arrival order, on the least loaded replica with room: what any
client-side per-replica limiter with least-loaded placement does.

**Priority** is sent only to a server that honours it (the emulator started with priority
scheduling); elsewhere no system sends it, and ``alto-no-priority`` equals ``alto``.

Every client-holding system has a client object of its own, opened once per app
(:func:`client_plans` says how each is made), and its dispatcher's figures are recorded per
run (:class:`~alto.bench.endpoints.DispatchWatch`). :func:`controls_section` renders one
table per app: each system's latency at every level beside the systems it changes, and its
highest rate under the SLO where the run swept rates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from alto.bench.endpoints import ClientPlan, client_plan
from alto.bench.systems import ALTO, LANGGRAPH_VARIANTS, REFERENCE, SYSTEMS

ALTO_AT_BALANCER = "alto@balancer"
ALTO_NO_LINEAGE = "alto-no-lineage"
ALTO_NO_PRIORITY = "alto-no-priority"
ALTO_TRACED = "alto-traced"
CLIENT = "+client"
"""The suffix of a baseline's control with a client of its own."""
BASELINES = (REFERENCE, *(f"langgraph-{v}" for v in LANGGRAPH_VARIANTS))


@dataclass(frozen=True, slots=True)
class Control:
    """One control system.

    Attributes:
        name: the system's name (``--systems``).
        base: the main system it is built like (the same flow, graph or coroutine).
        change: what differs from ``base``, in words for the report.
        needs_server: whether it changes how the system reaches an LLM server (and so
            runs only where the app calls one).
    """

    name: str
    base: str
    change: str
    needs_server: bool = True


CONTROLS: tuple[Control, ...] = (
    Control(ALTO_AT_BALANCER, ALTO, "its client on the balancer's URL, like the others"),
    Control(ALTO_NO_LINEAGE, ALTO, "lineage off: order `fifo`, route `least-loaded`, no priority"),
    Control(ALTO_NO_PRIORITY, ALTO, "no `priority` sent"),
    Control(ALTO_TRACED, ALTO, "a span per stage call (`trace=True`)", needs_server=False),
    *(
        Control(
            f"{base}{CLIENT}",
            base,
            "a client of its own over the replica URLs: cap per replica, `fifo`, "
            "`least-loaded`, no semaphore",
        )
        for base in BASELINES
    ),
)
CONTROL_SYSTEMS = tuple(c.name for c in CONTROLS)
ALL_SYSTEMS = (*SYSTEMS, *CONTROL_SYSTEMS)
"""The main systems, then the controls: the order runs and tables take."""
_BY_NAME = {c.name: c for c in CONTROLS}


def base_system(system: str) -> str:
    """The main system ``system`` is built like (itself for a main system)."""
    control = _BY_NAME.get(system)
    return control.base if control is not None else system


def is_control(system: str) -> bool:
    """Whether ``system`` is one of the controls rather than a main system."""
    return system in _BY_NAME


def needs_server(system: str) -> bool:
    """Whether control ``system`` runs only where the app calls an LLM server."""
    control = _BY_NAME.get(system)
    return control is not None and control.needs_server


def holds_client(system: str) -> bool:
    """Whether ``system`` calls the LLM through a client of its own, not the shared semaphore.

    Its client's dispatcher then holds the cap.
    """
    return base_system(system) == ALTO or system.endswith(CLIENT)


def anonymous_calls(system: str) -> bool:
    """Whether ``system`` is a baseline whose dispatcher admits LLM calls made outside stage calls.

    That is, a baseline with a client of its own: its LLM calls are made outside stage calls
    but must be admitted by its client's dispatcher.
    """
    return holds_client(system) and base_system(system) != ALTO


def client_plans(
    systems: Iterable[str],
    *,
    base_url: str,
    replicas: Sequence[str],
    cap: int,
    priority: bool,
    endpoint: str | None = None,
    max_inflight: str | None = None,
    order: str | None = None,
    route: str | None = None,
    server_limit: int | None = None,
) -> dict[str, ClientPlan]:
    """The client of every client-holding system among ``systems``.

    ``endpoint``, ``max_inflight``, ``order`` and ``route`` are Alto's knobs as given (None:
    the client's defaults); the Alto controls change only the knob they are named for.

    Args:
        systems: the systems of the run (those holding no client are left out).
        base_url: the balancer's URL (the one server's, on a deployment of one).
        replicas: the replicas' own base URLs.
        cap: the one cap on concurrent LLM calls.
        priority: whether the server honours a request ``priority`` (Alto sends it only
            then).
        endpoint: Alto's ``endpoint`` knob as given (None: the client's default).
        max_inflight: Alto's ``max_inflight`` knob as given (None: the client's default).
        order: Alto's ``order`` knob as given (None: the client's default).
        route: Alto's ``route`` knob as given (None: the client's default).
        server_limit: what each replica says it serves at once, where the bench knows it
            (see :func:`~alto.bench.endpoints.client_plan`).
    """
    alto = dict(endpoint=endpoint, max_inflight=max_inflight, order=order, route=route)
    per_replica = max(1, cap // len(replicas))
    plans: dict[str, ClientPlan] = {}
    for system in systems:
        if not holds_client(system):
            continue
        knobs: dict[str, Any]
        if system in (ALTO, ALTO_TRACED):
            knobs = {**alto, "send_priority": priority}
        elif system == ALTO_AT_BALANCER:  # the whole cap on the one URL (or learned under it)
            limit = "auto" if max_inflight == "auto" else None
            knobs = {**alto, "endpoint": "balancer", "max_inflight": limit}
            knobs["send_priority"] = priority
        elif system == ALTO_NO_LINEAGE:
            knobs = {**alto, "order": "fifo", "route": "least-loaded", "send_priority": False}
        elif system == ALTO_NO_PRIORITY:
            knobs = {**alto, "send_priority": False}
        else:  # a baseline's own client: the best without lineage
            knobs = dict(
                endpoint=None,
                max_inflight=str(per_replica),
                order="fifo",
                route="least-loaded",
                send_priority=False,
            )
        plans[system] = client_plan(
            base_url=base_url, replicas=replicas, cap=cap, server_limit=server_limit, **knobs
        )
    return plans


# -- the report ---------------------------------------------------------------------------


def _ci(value: float | None, ci: Sequence[float | None] | None) -> str:
    if value is None:
        return "–"
    if not ci or ci[0] is None or ci[1] is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _rate(rate: float | None, low: float | None, high: float | None) -> str:
    if rate is None:
        return "none"
    text = f"{rate:g}/s"
    if low is not None and high is not None and (low, high) != (rate, rate):
        text += f" [{low:g}, {high:g}]"
    return text


def table_order(systems: Sequence[str]) -> list[str]:
    """The systems of a controls table, in order.

    Alto and its controls, then each baseline followed by its ``+client`` control; a main
    system only where a control of it ran.
    """
    ran = set(systems)
    out = []
    for main in SYSTEMS:
        mine = [c.name for c in CONTROLS if c.base == main and c.name in ran]
        if mine and main in ran:
            out.append(main)
        out += mine
    return out


def best_rates(app: dict[str, Any]) -> dict[str, tuple[float | None, float | None, float | None]]:
    """Per system, its highest rate under the SLO with an interval, where the run has one.

    That is a rate search's highest passing rate and its rate interval
    (:func:`~alto.bench.search.rate_interval`), else a fixed-rate sweep's highest rate whose
    p95 stays under the SLO with the interval its p95 intervals allow; empty otherwise (a
    closed loop).
    """
    search = (app.get("sweep") or {}).get("search")
    if search:
        from alto.bench.search import rate_interval

        return {
            system: (row.get("best_rate"), *rate_interval(row))
            for system, row in search["systems"].items()
        }
    from alto.bench.summary import slo_table

    return {
        r["system"]: (r["max_rate"], r["max_rate_low"], r["max_rate_high"])
        for r in slo_table(app, app.get("summary", []))
    }


def controls_section(name: str, app: dict[str, Any], load: str) -> list[str]:
    """The app's controls table (markdown lines), or nothing when no control ran.

    Per system (each control beside the main system it changes), how its LLM calls were
    held to the cap, then per load level its p50 and p95 with bootstrap 95% intervals, and
    where the run searched or swept rates against an SLO its highest rate under it
    (:func:`best_rates`).
    """
    systems = table_order(app.get("systems", []))
    if not any(is_control(s) for s in systems):
        return []
    emulated = bool(app.get("timing_emulation"))
    tag = " (timing emulation)" if emulated else ""
    rows = {(r["level"], r["system"]): r for r in app.get("summary", [])}
    levels = sorted({level for level, system in rows if system in systems})
    best = best_rates(app)
    held = (app.get("fairness") or {}).get("llm_cap_enforcement") or {}
    lines = [
        "",
        f"### Controls: what each ingredient buys{tag}",
        "",
        "Each control changes one thing about the system it follows (see "
        "`alto/bench/controls.py`)."
        + (" How each system's LLM calls were held to the cap:" if held else ""),
    ]
    if held:
        lines.append("")
    for system in systems:
        if system in held:
            lines.append(f"- `{system}`: {held[system]}")
    by_level = "concurrency" if load == "closed" else "arrival rate"
    head = f"| system | change | {by_level} | p50 (s) | p95 (s) |"
    rule = "|---|---|---|---|---|"
    if best:
        head += " max rate under SLO |"
        rule += "---|"
    lines += ["", head, rule]
    for system in systems:
        change = _BY_NAME[system].change if is_control(system) else "(as in the main tables)"
        first = True
        for level in levels:
            r = rows.get((level, system))
            if r is None:
                continue
            level_text = f"{int(level)}" if load == "closed" else f"{level:g}/s"
            line = (
                f"| {system if first else ''} | {change if first else ''} | {level_text} | "
                f"{_ci(r['p50_s'], r['p50_ci'])} | {_ci(r['p95_s'], r['p95_ci'])} |"
            )
            if best:
                rate = _rate(*best[system]) if system in best else "–"
                line += f" {rate if first else ''} |"
            lines.append(line)
            first = False
    lines += ["", f"Table: {name}, controls, {'timing emulation' if emulated else 'measured'}."]
    return lines
