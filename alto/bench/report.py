"""``report.md``: the benchmark's tables, in Markdown, from ``results.json``'s content.

Every table of a run on the serving-timing emulator says "timing emulation" in its title:
those latencies come from a model of GPU serving, not from a model answering.
"""

from __future__ import annotations

from typing import Any

from alto.bench.summary import BOUND

EMULATION = "timing emulation"


def _s(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _level(mode: str, level: float) -> str:
    return f"{int(level)}" if mode == "closed" else f"{level:g}/s"


def _tag(app: dict[str, Any]) -> str:
    return f" ({EMULATION})" if app.get("timing_emulation") else ""


def render(results: dict[str, Any]) -> str:
    """The whole report."""
    settings = results["settings"]
    env = results["environment"]
    mode = settings["mode"]
    lines = [
        "# Alto vs LangGraph vs asyncio optimum: latency and throughput",
        "",
        f"- LLM: `{settings['llm']}`"
        + (
            " (the serving-timing emulator: **timing emulation, not a model**)"
            if settings["llm"] == "emulated"
            else ""
        ),
        "- Load: "
        + (
            f"closed loop at concurrency {', '.join(map(str, settings['concurrency']))}"
            if mode == "closed"
            else f"open loop, Poisson arrivals at {', '.join(f'{r:g}' for r in settings['rates'])}"
            " inputs/s (latency from the scheduled arrival)"
        ),
        f"- {settings['queries']} inputs per app, {settings['repeats']} repeat(s); systems "
        "interleaved (repeat x level x system, order rotating); seed "
        f"{settings['seed']}",
        f"- Machine: {env['cpu_count']} CPUs ({env['machine']}), Python {env['python']}, "
        f"{env['platform']}; commit `{env.get('git_commit') or 'unknown'}`",
        "",
        "How to read: latencies in seconds per root input, percentiles over every completed "
        "input of every repeat. *first output*: from the run's first submission to its first "
        "completed input (median over repeats). *first fragment*: per input, from submission "
        "to its first per-fragment result (Alto: end of that stage's first call for the "
        "input, from Alto's stage spans; the others: end of the step's first operator call "
        "for the input, from the operator recording). Ratios divide by Alto at the same "
        "load: latency below 1x and throughput above 1x beat Alto. *lower bound*: the "
        "critical-path bound of each input (see the section at the end).",
        "",
    ]
    for name, app in results["apps"].items():
        lines += _app_section(name, app, mode)
    lines += _method_section(results)
    return "\n".join(lines) + "\n"


def _app_section(name: str, app: dict[str, Any], mode: str) -> list[str]:
    tag = _tag(app)
    knobs = app["fairness"]
    lines = [f"## {name}{tag}", "", f"{app['description']}. {app['inputs']} inputs.", ""]
    ops = "; ".join(f"{k}: {v}" for k, v in app["operators"].items())
    lines.append(f"- Operators: {ops}")
    if knobs["alto_llm_stages"]:
        lines.append(
            f"- Concurrency knobs: Alto {knobs['alto_replicas_per_llm_stage']} replicas on each "
            f"of its {knobs['alto_llm_stages']} LLM stages (at most "
            f"{knobs['alto_llm_calls_in_flight_max']} LLM calls in flight); LangGraph "
            f"`max_concurrency={knobs['langgraph_max_concurrency']}`; optimum LLM semaphore "
            f"{knobs['optimum_llm_slots']}."
        )
    else:
        lines.append(
            "- No LLM calls (its timings are measured, not emulated). Concurrency knobs: "
            f"LangGraph `max_concurrency={knobs['langgraph_max_concurrency']}`; Alto's and the "
            "optimum's stages as the app defines them."
        )
    for system, reason in app.get("skipped", {}).items():
        lines.append(f"- Skipped {system}: {reason}")
    problems = [r for r in app["summary"] if r["failed"] or r["mismatched"]]
    for r in problems:
        lines.append(
            f"- **{r['system']} at {_level(mode, r['level'])}: {r['failed']} failed, "
            f"{r['mismatched']} outputs differ from the optimum's**"
        )
    probe = (app.get("emulator") or {}).get("probe")
    if probe and not probe["agrees"]:
        lines.append(
            "- **The running emulator's modeled time to first token "
            f"({probe['reported_ttft_s']}) differs from the timing model the bound "
            f"uses ({probe['expected_ttft_s']}): the bound is not valid.**"
        )
    level_name = "concurrency" if mode == "closed" else "arrival rate"
    lines += [
        "",
        f"### Latency and throughput{tag}",
        "",
        f"| {level_name} | system | p50 | p95 | p50 / Alto | p95 / Alto | first output | "
        "first fragment p50 | throughput /s | throughput / Alto |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in app["summary"]:
        system = f"*{r['system']}*" if r["system"] == BOUND else r["system"]
        lines.append(
            f"| {_level(mode, r['level'])} | {system} | {_s(r['p50_s'])} | {_s(r['p95_s'])} | "
            f"{_x(r['p50_vs_alto'])} | {_x(r['p95_vs_alto'])} | {_s(r['first_output_s'])} | "
            f"{_s(r['first_fragment_p50_s'])} | {_s(r['throughput'], 2)} | "
            f"{_x(r['throughput_vs_alto'])} |"
        )
    lines += ["", f"Table: {name}, {EMULATION if app.get('timing_emulation') else 'measured'}."]
    lines += _bound_section(name, app, tag)
    lines += [
        "",
        f"![latency CDF, {name}](latency_cdf_{name}.png)",
        f"![throughput, {name}](throughput_{name}.png)",
        f"![timeline of one input, {name}](timeline_{name}.png)",
        "",
    ]
    return lines


def _bound_section(name: str, app: dict[str, Any], tag: str) -> list[str]:
    bound = app.get("bound") or {}
    rows = bound.get("queries", [])
    lines = ["", f"### Critical-path lower bound per input{tag}", ""]
    if not bound.get("method"):
        if not app["fairness"]["alto_llm_stages"]:
            return lines + [f"Not computed: {name} makes no LLM calls, so no emulated timing."]
        return lines + [
            "Not computed: the bound needs the emulated LLM's timing model (`--llm emulated`)."
        ]
    lines += [
        "| input | bound | LLM (modeled) | other (measured) | LLM-only bound | optimum alone | "
        "bound / optimum alone | critical path |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for q in rows:
        if "bound_s" not in q:
            lines.append(f"| {q['index']} | failed: {q.get('error')} | | | | | | |")
            continue
        share = q["bound_s"] / q["unloaded_optimum_s"] if q["unloaded_optimum_s"] else None
        lines.append(
            f"| {q['index']} | {_s(q['bound_s'])} | {_s(q['llm_s'])} | {_s(q['other_s'])} | "
            f"{_s(q.get('llm_only_bound_s'))} | {_s(q['unloaded_optimum_s'])} | {_x(share)} | "
            f"{' → '.join(q['chain'])} |"
        )
    lines += ["", f"Table: {name}, {EMULATION}; seconds."]
    return lines


def _method_section(results: dict[str, Any]) -> list[str]:
    return [
        "## Method",
        "",
        "- Every system calls the same operator objects through the same recording "
        "wrappers (each call's step, start, end, tokens), so timelines and per-input "
        "fragment times are measured alike, and the wrappers' small cost falls on all alike.",
        "- Alto runs each measured run as one streaming run fed by the load driver; the "
        "LangGraph variants (`baselines_langgraph`) run one graph invocation per input; the "
        "asyncio optimum (`examples/<app>/optimum.py`) runs one coroutine per input.",
        "- Every system is built afresh for each run (not timed) and answers one input "
        "unmeasured before the measured runs. Every output is compared with the optimum's "
        "output for the same input (the mismatch counts above).",
        "- Lower bound: after the warm-up, each input runs alone through the optimum once, "
        "with every operator "
        "call's causal dependencies recorded (the calls whose results the calling code had "
        "read; for a token stream, how many tokens). On that graph each LLM call costs the "
        "emulator's modeled *unloaded* service time (time to first token for its prompt with "
        "one sequence running, plus the per-token time for every further token it returned, "
        "or was read of a stream), and every other operator call its measured duration in "
        "that run. The longest chain to the input's result is the bound: no orchestration "
        "of the same calls can finish the input sooner on an idle server. Python between "
        "calls and HTTP time are left out. The emulator is probed once per app to confirm "
        "its timing model is the one the bound uses. The LLM part is exact; the measured "
        "part holds for orchestrations making the same non-LLM calls (embedding calls that "
        "queue for the one model include their wait), so the *LLM-only bound* (non-LLM "
        "calls free) is given too: it holds for any orchestration.",
        "",
    ]
