"""The report's PNG plots (matplotlib, Agg backend): latency CDFs, throughput, timelines.

Per app:

* ``latency_cdf_<app>.png``: one panel per load level, one curve per system, the unloaded
  critical path's CDF dashed on the first panel;
* ``throughput_<app>.png``: throughput against load level, with its bootstrap 95% interval;
* ``timeline_<app>.png``: one input alone, one row per operator call (a Gantt chart), Alto
  beside the flat LangGraph variant and the asyncio reference, on one time axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alto.bench.stats import cdf
from alto.bench.summary import BOUND

_COLORS = {
    "alto": "#1f77b4",
    "langgraph-flat": "#d62728",
    "langgraph-subgraph": "#ff7f0e",
    "langgraph-functional": "#9467bd",
    "asyncio-reference": "#2ca02c",
    BOUND: "#000000",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _suffix(app: dict[str, Any]) -> str:
    return " (timing emulation)" if app.get("timing_emulation") else ""


def _level(mode: str, level: float) -> str:
    return f"concurrency {int(level)}" if mode == "closed" else f"{level:g} inputs/s"


def write_all(results: dict[str, Any], out: Path) -> list[Path]:
    """Every plot of every app into ``out``; returns the files written."""
    written = []
    mode = results["settings"]["load"]
    for name, app in results["apps"].items():
        written.append(latency_cdf(name, app, mode, out / f"latency_cdf_{name}.png"))
        written.append(throughput(name, app, mode, out / f"throughput_{name}.png"))
        written.append(timeline(name, app, out / f"timeline_{name}.png"))
    return written


def latency_cdf(name: str, app: dict[str, Any], mode: str, path: Path) -> Path:
    """Write the latency CDFs of ``app`` to ``path``: a panel per load level, a curve per system.

    The first panel also shows the unloaded critical path's CDF, dashed. Returns ``path``.
    """
    plt = _pyplot()
    levels = sorted({r["level"] for r in app["runs"]})
    fig, axes = plt.subplots(
        1, max(len(levels), 1), figsize=(4.2 * max(len(levels), 1), 3.6), squeeze=False, sharey=True
    )
    bounds = [q["bound_s"] for q in app.get("bound", {}).get("queries", []) if "bound_s" in q]
    for panel, (ax, level) in enumerate(zip(axes[0], levels)):
        for system in app["systems"]:
            xs = [
                s["latency_s"]
                for r in app["runs"]
                if r["system"] == system and r["level"] == level
                for s in r["samples"]
                if s["latency_s"] is not None and s["error"] is None and s.get("in_window", 1)
            ]
            if xs:
                x, y = cdf(xs)
                ax.step(
                    [x[0], *x], [0.0, *y], where="post", label=system, color=_COLORS.get(system)
                )
        if bounds and panel == 0:
            x, y = cdf(bounds)
            ax.step(
                [x[0], *x],
                [0.0, *y],
                where="post",
                label="critical path (unloaded)",
                color=_COLORS[BOUND],
                linestyle="--",
            )
        ax.set_title(_level(mode, level), fontsize=10)
        ax.set_xlabel("latency per input (s)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of inputs")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{name}: latency CDF{_suffix(app)}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(name: str, app: dict[str, Any], mode: str, path: Path) -> Path:
    """Write the throughput of ``app`` against load level to ``path``, with 95% intervals.

    Returns ``path``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    rows = [r for r in app["summary"] if r["system"] != BOUND and r["throughput"] is not None]
    for system in app["systems"]:
        mine = sorted((r for r in rows if r["system"] == system), key=lambda r: r["level"])
        if not mine:
            continue
        x = [r["level"] for r in mine]
        y = [r["throughput"] for r in mine]
        ci = [r["throughput_ci"] or [None, None] for r in mine]
        low = [max(0.0, r["throughput"] - (c[0] or r["throughput"])) for r, c in zip(mine, ci)]
        high = [max(0.0, (c[1] or r["throughput"]) - r["throughput"]) for r, c in zip(mine, ci)]
        ax.errorbar(
            x, y, yerr=[low, high], marker="o", capsize=3, label=system, color=_COLORS.get(system)
        )
    levels = sorted({r["level"] for r in rows})
    if mode == "closed" and len(levels) > 1 and levels[0] > 0:
        ax.set_xscale("log", base=2)
    ax.set_xticks(levels)
    ax.set_xticklabels([f"{int(v)}" if mode == "closed" else f"{v:g}" for v in levels])
    ax.set_xlabel(
        "concurrent inputs (closed loop)"
        if mode == "closed"
        else "offered load (inputs/s, Poisson)"
    )
    ax.set_ylabel("throughput (inputs/s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{name}: throughput{_suffix(app)}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timeline(name: str, app: dict[str, Any], path: Path) -> Path:
    """One row per operator call of one input, per system; a shared time axis."""
    plt = _pyplot()
    shown = [(s, t) for s, t in app.get("timelines", {}).items() if t["calls"]]
    panels = max(len(shown), 1)
    heights = [max(len(t["calls"]), 1) for _, t in shown] or [1]
    fig, axes = plt.subplots(
        panels,
        1,
        figsize=(9, 1.2 + 0.22 * sum(heights) + 0.5 * panels),
        squeeze=False,
        sharex=True,
        gridspec_kw={"height_ratios": heights},
    )
    steps = sorted({c["step"] for _, t in shown for c in t["calls"]})
    cmap = plt.get_cmap("tab10")
    colors = {step: cmap(i % 10) for i, step in enumerate(steps)}
    for ax, (system, line) in zip(axes[:, 0], shown):
        calls = line["calls"]
        for row, call in enumerate(calls):
            width = max(call["end"] - call["start"], 1e-4)
            ax.barh(
                row,
                width,
                left=call["start"],
                height=0.7,
                color=colors[call["step"]],
                edgecolor="black",
                linewidth=0.3,
            )
        ax.set_yticks(range(len(calls)))
        ax.set_yticklabels(
            [f"{c['step']}" + (f" x{c['items']}" if c["items"] > 1 else "") for c in calls],
            fontsize=7,
        )
        ax.invert_yaxis()
        latency = line.get("latency_s")
        done = line.get("done_s", latency)
        if done is not None:
            ax.axvline(done, color="black", linestyle=":", linewidth=1)
        ax.set_title(
            f"{system}: {len(calls)} operator calls, input done at "
            f"{latency if latency is None else f'{latency:.3f}'} s",
            fontsize=9,
            loc="left",
        )
        ax.grid(axis="x", alpha=0.3)
    if not shown:
        axes[0][0].text(0.5, 0.5, "no timeline recorded", ha="center", va="center")
    axes[-1][0].set_xlabel("seconds since the run started (the input was submitted then)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[s]) for s in steps]
    if handles:
        fig.legend(
            handles, steps, fontsize=7, loc="lower center", ncol=min(len(steps), 6), frameon=False
        )
    fig.suptitle(f"{name}: one input, every operator call{_suffix(app)}", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
