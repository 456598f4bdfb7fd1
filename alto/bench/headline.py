"""Best against best: each system at its own best deployment, from several rate-search reports.

One ``alto bench --load open`` report holds one deployment (``single``, ``rr4``, ``ll4``,
``prefix4``). A reader asking "which system serves more?" wants each system deployed as well
as it can be, so this module reads the reports of every deployment and, per app and system,
keeps the deployment whose rate search reported the highest rate under the SLO. Every other
system is then compared with Alto at Alto's own best deployment: the ratio of highest passing
rates, with the interval of :func:`alto.bench.summary.search_table` (each system's rate
interval from :func:`alto.bench.search.rate_interval`, low by high and high by low), and
**parity** wherever the two rate intervals overlap.

Only the five main systems take part: controls (:mod:`alto.bench.controls`) answer another
question (what an ingredient buys) and have their own table in each report.

Example:
    python -m alto.bench.headline docs/benchmarks/search/*/*/results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alto.bench.summary import versus_alto
from alto.bench.systems import ALTO, SYSTEMS
from alto.errors import UsageError


def load(paths: Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """``results.json`` files by deployment name, the apps of one deployment's files merged.

    There is one file per app and deployment, or one per deployment holding several apps.

    Raises:
        UsageError: a file names no deployment, or one app appears twice for one deployment.
    """
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
        deployment = results.get("settings", {}).get("deployment")
        if not deployment:
            msg = f"{path}: no settings.deployment; is it an alto bench results.json?"
            raise UsageError(msg)
        held = out.setdefault(deployment, {"settings": results["settings"], "apps": {}})
        for name, app in results.get("apps", {}).items():
            if name in held["apps"]:
                msg = (
                    f"{path}: a second report of app {name!r} on deployment {deployment!r}; "
                    "pass one results.json per app and deployment"
                )
                raise UsageError(msg)
            held["apps"][name] = app
    return out


def best_rows(reports: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per app, one row per main system at its best deployment, Alto's first.

    A row is the system's search outcome (``best_rate``, ``first_fail``, the repeats'
    spread) plus ``deployment``, ``interval`` and, for systems other than Alto, ``vs_alto``
    (ratio of highest passing rates), ``vs_alto_ci`` and ``vs_alto_parity``. A system whose
    search passed at no rate anywhere keeps the deployment where it failed last (highest
    first fail). Apps whose reports hold no rate search are left out.
    """
    per_app: dict[str, dict[str, dict[str, Any]]] = {}
    for deployment, results in reports.items():
        for name, app in results.get("apps", {}).items():
            search = (app.get("sweep") or {}).get("search")
            if not search:
                continue
            for system, outcome in search["systems"].items():
                if system not in SYSTEMS:
                    continue
                row = {"system": system, "deployment": deployment, **outcome}
                held = per_app.setdefault(name, {}).get(system)
                if held is None or _rank(row) > _rank(held):
                    per_app[name][system] = row
    tables: dict[str, list[dict[str, Any]]] = {}
    for name, rows in per_app.items():
        alto = rows.get(ALTO)
        tables[name] = [versus_alto(dict(rows[s]), alto) for s in SYSTEMS if s in rows]
    return tables


def _rank(row: dict[str, Any]) -> tuple[float, float]:
    return (row.get("best_rate") or 0.0, row.get("first_fail") or 0.0)


def render(tables: dict[str, list[dict[str, Any]]]) -> str:
    """The best-against-best table in Markdown."""
    lines = [
        "| app | system | best deployment | highest rate under the SLO /s [interval] "
        "| first failing rate /s | Alto / system |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in tables.items():
        for row in rows:
            low, high = row["interval"]
            lines.append(
                f"| {name} | {row['system']} | {row['deployment']} "
                f"| {_num(row.get('best_rate'))} [{_num(low)}, {_num(high)}] "
                f"| {_num(row.get('first_fail'))} | {_versus(row)} |"
            )
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"


def _versus(row: dict[str, Any]) -> str:
    if row["system"] == ALTO:
        return "–"
    ratio, ci = row.get("vs_alto"), row.get("vs_alto_ci") or [None, None]
    if ratio is None:
        return "no rate to compare"
    inverse = 1 / ratio  # Alto's rate over the system's: above 1, Alto serves more
    low = 1 / ci[1] if ci[1] else None
    high = 1 / ci[0] if ci[0] else None
    verdict = "parity" if row["vs_alto_parity"] else "Alto higher" if inverse > 1 else "Alto lower"
    return f"{inverse:.2f}x [{_num(low)}, {_num(high)}], {verdict}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m alto.bench.headline RESULTS.json ... [--out FILE]``."""
    p = argparse.ArgumentParser(prog="python -m alto.bench.headline", description=__doc__)
    p.add_argument("results", nargs="+", help="results.json of each deployment's report")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args(argv)
    try:
        text = render(best_rows(load(args.results)))
    except (OSError, ValueError) as exc:
        print(f"alto.bench.headline: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
