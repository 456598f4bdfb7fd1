"""``report.md``: the benchmark's tables, in Markdown, from ``results.json``'s content.

Every table of a run on the serving-timing emulator says "timing emulation" in its title:
those latencies come from a model of GPU serving, not from a model answering. Every p50,
p95, throughput and ratio is printed with its bootstrap 95% interval; a ratio whose
interval holds 1 is printed as *parity*.
"""

from __future__ import annotations

from typing import Any

from alto.bench.summary import BOUND, search_table, slo_table
from alto.bench.systems import ALTO

EMULATION = "timing emulation"


def _s(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(value: float | None, ci: list[float | None] | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if not ci or ci[0] is None or ci[1] is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _ratio(row: dict[str, Any], key: str, lower_is_better: bool) -> str:
    """``1.03x [0.98, 1.07] parity`` / ``... Alto better`` / ``... Alto worse``."""
    value, ci = row.get(f"{key}_vs_alto"), row.get(f"{key}_vs_alto_ci")
    if row["system"] == ALTO or value is None:
        return "–"
    text = f"{value:.2f}x" + (
        f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and ci[0] is not None and ci[1] is not None else ""
    )
    same = row.get(f"{key}_vs_alto_parity")
    if same is None or not ci or ci[0] is None:
        return f"{value:.2f}x (no interval)"  # too few samples: no difference can be told
    if same:  # the interval holds 1: no difference, whatever the point value
        return f"parity [{ci[0]:.2f}, {ci[1]:.2f}]"
    worse = (value > 1) == lower_is_better  # this system is worse than Alto
    return f"{text} {'Alto better' if worse else 'Alto worse'}"


def _load(values: list[float] | None) -> str:
    return "–" if not values else f"{values[0]:.1f}"


def _level(load: str, level: float) -> str:
    return f"{int(level)}" if load == "closed" else f"{level:g}/s"


def _tag(app: dict[str, Any]) -> str:
    return f" ({EMULATION})" if app.get("timing_emulation") else ""


def render(results: dict[str, Any]) -> str:
    """The whole report."""
    settings = results["settings"]
    env = results["environment"]
    load = settings["load"]
    deployment = settings.get("deployment", "single")
    if load == "closed":
        sizes = (
            f"closed loop at concurrency {', '.join(map(str, settings['concurrency']))}; "
            f"{settings['closed_inputs']} submissions per level (slots refilled as inputs "
            "complete), measured in the steady-state window (from the first *c* "
            "completions to the last submission)"
        )
    elif load == "search":
        sizes = (
            "open loop, Poisson arrivals; per system a rate search for the highest rate "
            f"whose p95 meets the SLO at 95% confidence: {settings['search_arrivals']} "
            f"measured arrivals per trial over {settings['repeats']} repeats (each its own "
            f"Poisson realisation, {settings['search_warmup']} warm-up arrivals per run "
            "discarded), extended to "
            f"{settings['search_arrivals'] * settings['search_rounds']} when undecided; "
            "the rule and the search below, per app"
        )
    else:
        rates = (
            ", ".join(f"{r:g}" for r in settings["rates"])
            if settings.get("rates")
            else "the automatic sweep (per app, below)"
        )
        sizes = (
            f"open loop, Poisson arrivals at {rates} inputs/s, {settings['open_inputs']} "
            "measured arrivals per run (latency from the scheduled arrival) after "
            f"{settings['search_warmup']} warm-up arrivals or one SLO's worth, whichever is "
            "more, not measured; "
            + (
                "a system whose p95 surely missed the SLO (its whole interval above it) at "
                "or past the moderate rate is not run at higher rates"
                if settings.get("sweep_stop", True)
                else "every system at every rate"
            )
        )
    lines = [
        "# Alto vs LangGraph vs the asyncio reference: latency and throughput",
        "",
        f"- LLM: `{settings['llm']}`"
        + (
            " (the serving-timing emulator: **timing emulation, not a model**), deployment "
            f"`{deployment}`"
            if settings["llm"] == "emulated"
            else f" (real llama.cpp servers started by the bench), deployment `{deployment}`"
            if settings["llm"] == "llama-server"
            else f" (llama.cpp's own llama-server processes started by the bench, "
            f"{settings.get('llm_slots')} slot(s) and {settings.get('llm_threads')} thread(s) "
            f"each), deployment `{deployment}`"
            if settings["llm"] == "llama-server-native"
            else ""
        ),
        f"- Load: {sizes}.",
        f"- Sample size: {settings['repeats']} repeat(s); systems interleaved (level x "
        f"repeat x system, order rotating); seed {settings['seed']}. These are **small "
        "samples** sized for a 2-core machine: read the intervals, not the point values.",
        f"- Fan-out: `{settings.get('fanout', 'uniform')}`"
        + (
            " (per input: answers of 1-8 sentences, lists of 1-6 items, documents with "
            "their own section counts, corpora of varying size)"
            if settings.get("fanout") == "varied"
            else " (every input fans out alike: the old reports' mode)"
        ),
        f"- Machine: {env['cpu_count']} CPUs ({env['machine']}), Python {env['python']}, "
        f"{env['platform']}; BLAS threads {env.get('blas_threads') or 'as OpenBLAS chose'}; "
        f"commit `{env.get('git_commit') or 'unknown'}`; load average "
        f"(1 min) {_load(env.get('load_average'))} at the start, "
        f"{_load(results.get('load_average_at_end'))} at the end (the machine is shared)",
        "",
        "How to read: latencies in seconds per root input, from its submission to its result "
        "in the driver's hands (one clock for every system). Brackets are bootstrap 95% "
        "intervals (1000 resamples of the measured inputs; throughput from the gaps between "
        "completions). Ratios divide by Alto at the same load: a ratio whose interval holds "
        "1 is **parity**; otherwise the table says whether Alto is better or worse. "
        "*in flight*: time-averaged inputs in flight in the measured window. *cached*: the "
        f"share of prompt tokens {_cache_words(settings['llm'])}. *first fragment*: per "
        "input, from submission to its first per-fragment result.",
        "",
    ]
    for name, app in results["apps"].items():
        lines += _app_section(name, app, load)
    lines += _method_section(results)
    return "\n".join(lines) + "\n"


def _app_section(name: str, app: dict[str, Any], load: str) -> list[str]:
    tag = _tag(app)
    knobs = app["fairness"]
    sweep = app.get("sweep") or {}
    lines = [f"## {name}{tag}", "", f"{app['description']}. {app['inputs']} distinct inputs.", ""]
    ops = "; ".join(f"{k}: {v}" for k, v in app["operators"].items())
    lines.append(f"- Operators: {ops}")
    if knobs["alto_llm_stages"]:
        lines += _cap_lines(app, knobs)
    else:
        lines.append(
            "- No LLM calls (its timings are measured, not emulated). LangGraph "
            f"`max_concurrency={knobs['langgraph_max_concurrency']}`; Alto's and the "
            "asyncio reference's stages as the app defines them."
        )
    if sweep:
        lines.append(
            f"- Levels: {', '.join(_level(load, v) for v in sweep['levels'])} "
            f"({sweep['how']})"
            + (
                f"; rate ceiling {sweep['rate_ceiling']:g}/s (peak decode rate of the "
                "deployment over the decode tokens of an input: no system can sustain more)"
                if sweep.get("rate_ceiling")
                else ""
            )
            + "."
        )
        if sweep.get("slo_s") is not None:
            lines.append(
                f"- SLO: p95 <= {sweep['slo_s']:.3f} s ({sweep['slo_rule']}; unloaded p50 "
                f"{_s(sweep.get('unloaded_reference_p50_s'))} s)."
            )
    for system, reason in app.get("skipped", {}).items():
        lines.append(f"- Skipped {system}: {reason}")
    problems = [
        r
        for r in app["summary"]
        if r["system"] != BOUND and (r["failed"] or r["mismatched"] or r.get("late_spans"))
    ]
    for r in problems:
        lines.append(
            f"- **{r['system']} at {_level(load, r['level'])}: {r['failed']} failed, "
            f"{r['mismatched']} outputs differ from the asyncio reference's, "
            f"{r.get('late_spans', 0)} inputs with work recorded after their completion**"
        )
    probe = (app.get("emulator") or {}).get("probe")
    if probe and not probe["agrees"]:
        lines.append(
            "- **The running emulator's modeled time to first token "
            f"({probe['reported_ttft_s']}) differs from the timing model the bound "
            f"uses ({probe['expected_ttft_s']}): the bound is not valid.**"
        )
    slo = slo_table(app, app["summary"])
    if slo:
        moderate = slo[0]["moderate_rate"]
        lines += [
            "",
            f"### Throughput at a latency target{tag}",
            "",
            f"Highest offered rate up to which every p95 stays under the SLO "
            f"({sweep['slo_s']:.3f} s): none above a rate whose p95 missed it, nor above one "
            "whose whole p95 interval lies over it (a *sure miss*, after "
            "which the system was not run at higher rates); *surely* / *maybe*: the highest "
            "rate up to which the p95 intervals lie wholly / partly under the SLO. p50 at "
            f"the moderate rate {moderate:g}/s.",
            "",
            "| system | max rate under SLO | surely | maybe | sure miss at | "
            f"p50 at {moderate:g}/s | p50 / Alto | in flight | cached |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in slo:
            share = r["cached_share"]
            lines.append(
                f"| {r['system']} | {_rate(r['max_rate'])} | {_rate(r['max_rate_low'])} | "
                f"{_rate(r['max_rate_high'])} | {_stop(r['stopped_at'])} | "
                f"{_ci(r['moderate_p50_s'], r['moderate_p50_ci'])} | "
                f"{_ratio_text(r)} | {_s(r['in_flight'], 1)} | "
                f"{'–' if share is None else f'{share:.0%}'} |"
            )
        lines += ["", f"Table: {name}, {EMULATION if app.get('timing_emulation') else 'measured'}."]
    lines += _search_section(name, app, tag)
    level_name = "concurrency" if load == "closed" else "arrival rate"
    lines += [
        "",
        f"### Latency and throughput{tag}",
        "",
        f"| {level_name} | system | n | p50 | p95 | p50 / Alto | p95 / Alto | throughput /s | "
        "throughput / Alto | in flight | LLM calls / input | cached | first fragment p50 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in app["summary"]:
        if r["system"] == BOUND:
            lines.append(
                f"| {_level(load, r['level'])} | *{BOUND} (mean, {r['bound_kind']})* | | "
                f"mean >= {_s(r['mean_s'])} | | | | | | | | | |"
            )
            continue
        per_input = r["llm_calls"] / r["submitted"] if r.get("submitted") else None
        share = r.get("cached_share")
        lines.append(
            f"| {_level(load, r['level'])} | {r['system']} | {r['n']} | "
            f"{_ci(r['p50_s'], r['p50_ci'])} | {_ci(r['p95_s'], r['p95_ci'])} | "
            f"{_ratio(r, 'p50', True)} | {_ratio(r, 'p95', True)} | "
            f"{_ci(r['throughput'], r['throughput_ci'], 2)} | "
            f"{_ratio(r, 'throughput', False)} | {_s(r.get('in_flight'), 1)} | "
            f"{_s(per_input, 1)} | {'–' if share is None else f'{share:.0%}'} | "
            f"{_s(r['first_fragment_p50_s'])} |"
        )
    lines += ["", f"Table: {name}, {EMULATION if app.get('timing_emulation') else 'measured'}."]
    if _servers(app) in REAL_SERVERS:
        lines += _prompt_section(name, app, load)
    lines += _endpoint_section(name, app, load, tag)
    from alto.bench.controls import controls_section  # the controls, beside their systems

    lines += controls_section(name, app, load)
    lines += _bound_section(name, app, tag)
    lines += [
        "",
        f"![latency CDF, {name}](latency_cdf_{name}.png)",
        f"![throughput, {name}](throughput_{name}.png)",
        f"![timeline of one input, {name}](timeline_{name}.png)",
        "",
    ]
    return lines


REAL_SERVERS = {
    "llama_cpp.server": "as each server's log counted them",
    "llama-server": "as each server's own `/metrics` counted them",
}
"""The real servers a deployment records (``deployment["servers"]``), and where their
prompt-token counts come from."""


def _servers(app: dict[str, Any]) -> str | None:
    servers: str | None = (app.get("deployment") or {}).get("servers")
    return servers


def _cache_words(llm: str) -> str:
    if llm == "llama-server-native":
        return (
            "the llama-server processes served from their slots' KV caches (each slot keeps "
            "its last sequence and a request goes to the idle slot sharing most of its "
            "prompt; counted by each server's `/metrics`; every slot is erased before every "
            "run, and no prompts are kept outside the slots)"
        )
    if llm == "llama-server":
        return (
            "the llama.cpp servers served from their KV cache (each keeps its last sequence "
            "and reuses the longest common prefix of the next prompt; counted from each "
            "server's log; each server is sent a short unrelated prompt before every run)"
        )
    return "the emulator's prefix cache served (the cache is emptied before every run)"


def _prompt_section(name: str, app: dict[str, Any], load: str) -> list[str]:
    """Prompt tokens per completed input, as the servers counted them (:data:`REAL_SERVERS`)."""
    level_name = "concurrency" if load == "closed" else "arrival rate"
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for run in app.get("runs", []):
        if run.get("prompt_tokens") is not None:
            groups.setdefault((run["level"], run["system"]), []).append(run)
    order = {s: i for i, s in enumerate(app.get("systems", []))}
    rows = []
    for (level, system), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))
    ):
        done = sum(r["completed"] for r in runs)
        prompt = sum(r["prompt_tokens"] for r in runs)
        cached = sum(r["cached_tokens"] for r in runs)
        rows.append((level, system, done, prompt, cached))
    if not rows:
        return []
    alto = {level: (p - c) / d for level, s, d, p, c in rows if s == ALTO and d}
    lines = [
        "",
        f"### Prompt tokens the servers evaluated, {name}",
        "",
        "Per completed input, over every measured run: the prompt tokens the llama.cpp "
        "servers received, those they took from their KV cache, and those they evaluated "
        f"(the rest), {REAL_SERVERS[_servers(app) or 'llama_cpp.server']}. "
        "*evaluated / Alto*: evaluated tokens over Alto's at the same level.",
        "",
        f"| {level_name} | system | inputs | prompt / input | cached / input | "
        "evaluated / input | evaluated / Alto |",
        "|---|---|---|---|---|---|---|",
    ]
    for level, system, done, prompt, cached in rows:
        if not done:
            continue
        evaluated = (prompt - cached) / done
        base = alto.get(level)
        ratio = f"{evaluated / base:.2f}x" if base else "–"
        lines.append(
            f"| {_level(load, level)} | {system} | {done} | {prompt / done:.0f} | "
            f"{cached / done:.0f} | {evaluated:.0f} | {ratio} |"
        )
    lines += ["", f"Table: {name}, measured."]
    return lines


def _cap_lines(app: dict[str, Any], knobs: dict[str, Any]) -> list[str]:
    """The one cap, how each system is held to it, and the knobs lifted above it."""
    cap = knobs["llm_cap"]
    enforcement = knobs.get("llm_cap_enforcement") or {}
    systems = [s for s in app.get("systems", []) if s in enforcement]
    lines = [
        f"- One cap for every system: at most {cap} LLM calls in flight. Lifted above it: "
        f"Alto's {knobs['alto_llm_stages']} LLM stages have "
        f"{knobs['alto_replicas_per_llm_stage']} replicas each; LangGraph "
        f"`max_concurrency={knobs['langgraph_max_concurrency']}` per invocation; the asyncio "
        "reference has no limit of its own. Enforced:"
    ]
    if not systems:  # results from before the dispatcher: one way for all
        return [
            lines[0].removesuffix(" Enforced:") + f" Enforced by {knobs['llm_cap_enforced_by']}."
        ]
    ways: dict[str, list[str]] = {}
    for system in systems:  # systems held the same way share a line
        ways.setdefault(enforcement[system], []).append(system)
    for how, held in ways.items():
        lines.append(f"  - {', '.join(held)}: {how}")
    client = knobs.get("alto_client")
    if client:
        limit = client["max_inflight"]
        per_replica = (
            f"per replica the slot count each server reports (`/props`), at most "
            f"{client['ceiling']}"
            if limit == "server"
            else f"`--max-inflight {limit}`"
            + (f" (at most {client['ceiling']})" if limit == "auto" else "")
        )
        lines.append(
            f"- Alto's dispatcher: `--alto-endpoint {client['endpoint']}`, {per_replica}"
            + f", `--order {client['order']}`, `--route {client['route']}`, priority "
            + ("sent" if client["send_priority"] else "not sent")
            + "; targets "
            + ", ".join(f"`{t}`" for t in client["targets"])
            + ". The other systems send no priority (their calls carry no lineage)."
        )
    return lines


def _endpoint_section(name: str, app: dict[str, Any], load: str, tag: str) -> list[str]:
    """Per level and system: who held the cap and the longest client queue.

    Also, per replica, the calls and cached-token share the emulator counted.
    """
    counted_by = "the llama.cpp servers'" if _servers(app) in REAL_SERVERS else "the emulator's"
    from alto.bench.endpoints import endpoint_rows

    rows = endpoint_rows(app)
    if not rows:
        return []
    level_name = "concurrency" if load == "closed" else "arrival rate"
    lines = [
        "",
        f"### The LLM endpoint per system{tag}",
        "",
        "*client*: what held the system to the cap (Alto's dispatcher, or the shared "
        "semaphore); *limit*: its calls in flight in all (for the dispatcher, per replica at "
        "the end of the last run); *max queued*: the most calls waiting for it at once; "
        f"*calls / replica* and *cached / replica*: {counted_by} own counts per replica "
        "(requests, and the share of prompt tokens its prefix cache served); *max in "
        "flight / replica*: the dispatcher's most calls in flight on each replica (for the "
        "semaphore, on all of them together).",
        "",
        f"| {level_name} | system | client | limit | max queued | calls | calls / replica | "
        "cached / replica | max in flight / replica | failures |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = r["emulator_replicas"]
        calls = " / ".join(str(x["requests"]) for x in per) or "–"
        cached = (
            " / ".join(
                "–" if x["cached_share"] is None else f"{x['cached_share']:.0%}" for x in per
            )
            or "–"
        )
        limit = "–" if r["limit"] is None else str(r["limit"])
        if r["client_limits"]:
            limit += (
                " (" + " / ".join("–" if x is None else str(x) for x in r["client_limits"]) + ")"
            )
        peaks = " / ".join(str(x) for x in r["client_max_in_flight"]) or (
            f"{r['max_in_flight']} in all" if r.get("max_in_flight") else "–"
        )
        failures = str(r["client_failures"]) + (
            f" (unhealthy at the end: {', '.join(r['unhealthy'])})" if r["unhealthy"] else ""
        )
        lines.append(
            f"| {_level(load, r['level'])} | {r['system']} | {r['client']} | {limit} | "
            f"{r['max_queued']} | {r['calls']} | {calls} | {cached} | {peaks} | "
            f"{failures if r['client'] == 'dispatcher' else '–'} |"
        )
    lines += ["", f"Table: {name}, {EMULATION if app.get('timing_emulation') else 'measured'}."]
    return lines


def _stop(value: float | None) -> str:
    return "–" if value is None else f"{value:g}/s"


def _rate(value: float | None) -> str:
    return "none" if value is None else f"{value:g}/s"


def _ratio_text(r: dict[str, Any]) -> str:
    row = {
        "system": r["system"],
        "p50_vs_alto": r["moderate_p50_vs_alto"],
        "p50_vs_alto_ci": r["moderate_p50_vs_alto_ci"],
        "p50_vs_alto_parity": r["moderate_parity"],
    }
    return _ratio(row, "p50", True)


def _search_section(name: str, app: dict[str, Any], tag: str) -> list[str]:
    """The rate search's outcome per system, its rule, and every trial in short."""
    rows = search_table(app)
    if not rows:
        return []
    sweep = app["sweep"]
    plan = sweep["search"]["plan"]
    lines = [
        "",
        f"### Highest rate under the SLO, rate search{tag}",
        "",
        f"The SLO: p95 <= {sweep['slo_s']:.3f} s. A trial at one rate is one run per repeat "
        f"({plan['repeats']}; each its own Poisson realisation, the first {plan['warmup']} "
        "arrivals of each discarded); of its *n* measured arrivals, *k* were over the SLO "
        "or failed. It **passes** when P[Binom(n, 0.05) <= k] <= 0.05 (the p95 meets the "
        "SLO at 95% confidence: with no miss, n >= 59), **fails** when P[Binom(n, 0.05) >= "
        f"k] <= 0.05, and is otherwise extended, up to {plan['rounds']} rounds of "
        f"{plan['arrivals']} arrivals, then counted as a fail (*undecided*). From "
        f"{plan['start']:g}/s the rate is multiplied (divided) by {plan['factor']:g} until "
        "a trial fails (passes), with no upper limit, then bisected until the first failing "
        f"rate is within {plan['width']:.0%} of the highest passing one. *highest passing*: "
        "the highest rate that passed below the lowest that failed (*first failing*); "
        "*repeats*: per repeat, the highest rate where its own arrivals' share over the SLO "
        "was at most 5%, median [min, max]; *served*: completions per second in the runs' "
        "steady windows (first measured arrival to last arrival) at the highest passing "
        "rate; */ Alto*: highest passing rate over Alto's, **parity** when the two systems' "
        "intervals (from the lower of highest passing and repeats' min to the higher of "
        "first failing and repeats' max) overlap; *saturated*: trials during which the "
        "bench process used more than 90% of a core or the emulator's steps ran late by "
        "more than 5% of the SLO (p95), each redone once at the end.",
        "",
        "| system | highest passing | repeats | first failing | served /s | / Alto | "
        "trials | saturated (redone) | undecided |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        spread = (
            "–"
            if r["repeat_median"] is None
            else f"{r['repeat_median']:g} [{r['repeat_min']:g}, {r['repeat_max']:g}]"
        )
        lines.append(
            f"| {r['system']} | {_rate(r['best_rate'])} | {spread} | "
            f"{_rate(r['first_fail']) if r['first_fail'] is not None else 'none (see trials)'} "
            f"| {_s(r['served_at_best'], 2)} | {_rate_ratio(r)} | {r['trials']} | "
            f"{r['saturated_trials']} ({r['redone_trials']}) | {r['undecided_trials']} |"
        )
    lines += ["", f"Table: {name}, {EMULATION if app.get('timing_emulation') else 'measured'}.", ""]
    lines.append("Trials in order (rate: verdict, k of n; *sat*: saturated; *redo*: redone):")
    lines.append("")
    for r in rows:
        trials = [t for t in sweep["search"]["trials"] if t["system"] == r["system"]]
        steps = "; ".join(
            f"{t['rate']:g}/s: {t['verdict']} {t['k']}/{t['n']}"
            + (" sat" if t["saturated"] else "")
            + (" redo" if t["redo_of"] is not None else "")
            for t in trials
        )
        stop = f" ({r['stop_reason']})" if r["stop_reason"] else ""
        lines.append(f"- {r['system']}: {steps}{stop}")
    return lines


def _rate_ratio(r: dict[str, Any]) -> str:
    """A system's highest passing rate over Alto's: *parity* when the intervals overlap."""
    if r["system"] == ALTO or r["vs_alto_parity"] is None:
        return "–"
    if r["vs_alto_parity"]:
        return "parity"
    ci = r["vs_alto_ci"]
    value = r["vs_alto"]
    text = "–" if value is None else f"{value:.2f}x"
    if ci[0] is not None and ci[1] is not None:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return f"{text} {'Alto worse' if (ci[0] or 0) > 1 else 'Alto better'}"


def _bound_section(name: str, app: dict[str, Any], tag: str) -> list[str]:
    bound = app.get("bound") or {}
    rows = bound.get("queries", [])
    lines = ["", f"### Unloaded critical path per input{tag}", ""]
    if not bound.get("method"):
        if not app["fairness"]["alto_llm_stages"]:
            return lines + [f"Not computed: {name} makes no LLM calls, so no emulated timing."]
        return lines + [
            "Not computed: the bound needs the emulated LLM's timing model (`--llm emulated`)."
        ]
    lines += [
        "Each input alone (no load): the critical-path lower bound beside the asyncio "
        "reference's own unloaded latency. Under load this bound alone says little; the "
        "closed-loop tables give max(critical path, server work) instead.",
        "",
        "| input | bound | LLM (modeled) | other (measured) | LLM-only bound | reference alone | "
        "bound / reference | decode tokens | critical path |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for q in rows:
        if "bound_s" not in q:
            lines.append(f"| {q['index']} | failed: {q.get('error')} | | | | | | | |")
            continue
        alone = q["unloaded_reference_s"]
        share = q["bound_s"] / alone if alone else None
        lines.append(
            f"| {q['index']} | {_s(q['bound_s'])} | {_s(q['llm_s'])} | {_s(q['other_s'])} | "
            f"{_s(q.get('llm_only_bound_s'))} | {_s(alone)} | "
            f"{'–' if share is None else f'{share:.2f}x'} | {q.get('decode_tokens', '–')} | "
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
        "- One client-side cap on concurrent LLM calls for every system, the same number "
        "for all: the LangGraph versions and the asyncio reference are held to it by one "
        "semaphore in that wrapper (a FIFO queue); Alto, where it has a client of its own "
        "(an OpenAI-compatible server), by that client's dispatcher, whose per-replica "
        "limits sum to at most the cap, and not by the semaphore, whose FIFO would hide "
        "the dispatcher's order. Each system's own limits are lifted above the cap.",
        "- Alto runs each measured run as one streaming run fed by the load driver, keeping "
        "no span per stage call, as by default (each recorded call carries the roots of the "
        "stage call that made it; the `alto-traced` control keeps spans); the "
        "LangGraph variants (`baselines_langgraph`) run one graph invocation per input; the "
        "asyncio reference (`examples/<app>/asyncio_reference.py`) runs one coroutine per "
        "input. The asyncio reference is not an optimum: it schedules nothing across inputs.",
        "- Latency, every system alike: the driver puts each input in the system's queue at "
        "its submission time and reads the clock again when the result reaches it "
        "(`time.perf_counter`). No recorded operator call (or traced stage call) of an "
        "input may end "
        "after that (checked per run; a violation is listed above).",
        "- Every system is built afresh for each run (not timed) and answers one input "
        "unmeasured before the measured runs. Every output is compared with the asyncio "
        "reference's output for the same input (the mismatch counts above). "
        + (
            "Each llama.cpp server is sent a short unrelated prompt before every run."
            if results["settings"]["llm"] == "llama-server"
            else "Every slot of every llama-server is erased before every run (the servers "
            "keep no prompts outside their slots). Its outputs can differ from the "
            "reference's without any fault: llama.cpp's logits are not bit-identical across "
            "batch sizes (its server says so of prompt caching), so a greedy answer can take "
            "another path when its prompt shares a batch, or a cache, with others."
            if results["settings"]["llm"] == "llama-server-native"
            else "The emulator's prefix cache is emptied before every run."
        ),
        "- Critical path: each input runs alone through the asyncio reference once, with "
        "every operator call's causal dependencies recorded (the calls whose results the "
        "calling code had read; for a token stream, how many tokens). On that graph each "
        "LLM call costs the emulator's modeled *unloaded* service time and every other "
        "operator call its measured duration; the longest chain is a lower bound for that "
        "input on an idle server (the *LLM-only bound* leaves non-LLM calls out and holds "
        "for any orchestration). Under load, mean latency at *c* in flight is also at least "
        "*c* x decode tokens per input / the deployment's peak decode rate (Little's law); "
        "the closed-loop tables print the larger of the two. The rate ceiling is that peak "
        "rate over the decode tokens per input.",
        "",
    ]
