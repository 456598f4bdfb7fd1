"""The rate search again, with a finer grid at each system's knee and more arrivals per trial.

``benchmarks/rate_search.py`` brackets each system's highest rate under the SLO on a grid of
steps of 1.25 and stops when the first failing rate is within 25% of the highest passing
one, with 60 measured arrivals per trial. One step of that grid is as wide as every gap the
set found between two systems, so near a knee its verdicts are ties or fragile one-step
differences. This runs the same searches with the bisection carried on until the bracket is
within ``--width`` (default 10%), 120 measured arrivals per trial, and Poisson schedules of
another seed than the set's (``--seed``, default 1), so that its verdicts replicate the
set's rather than repeat them:

1. each LLM app (factcheck, multihop, summarize) on ``ll4`` with every main system, and on
   factcheck also Alto without ``priority`` (``alto-no-priority``: the control whose rate
   the set found one step above Alto's);
2. ingest on ``single`` with every main system;
3. the best-against-best table (``python -m alto.bench.headline``).

What is cut, and why: the one-server and ``prefix4`` reports (on ``single`` the servers bound
every system alike, and the set's verdicts there are parity at rates below one input per
second on summarize, whose trials take minutes each), and the other controls (the set's
factcheck report has them all). ``timings.json`` gets each command's wall time and commit;
``--resume`` skips the reports already written.

Usage: python benchmarks/knee_search.py [--out docs/benchmarks/knee] [--apps ...]
       [--width 0.1] [--arrivals 120] [--seed 1] [--resume] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rate_search import ALTO, LANGGRAPH, LLM_APPS, REFERENCE, Log, bench, headline  # noqa: E402

MAIN = ",".join([ALTO, *LANGGRAPH, REFERENCE])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/knee"))
    p.add_argument("--apps", nargs="+", default=[*LLM_APPS, "ingest"])
    p.add_argument("--width", type=float, default=0.1, help="bisect to within this share")
    p.add_argument("--arrivals", type=int, default=120, help="measured arrivals per trial")
    p.add_argument("--seed", type=int, default=1, help="seed of the Poisson schedules")
    p.add_argument("--resume", action="store_true", help="skip reports already written")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    out: Path = args.out
    log = Log(out / "timings.json", dry=args.dry_run, resume=args.resume)
    search = [
        "--search-width", f"{args.width:g}", "--search-arrivals", str(args.arrivals),
        "--seed", str(args.seed),
    ]  # fmt: skip

    def report(app: str, deployment: str, systems: str) -> None:
        if args.resume and (out / app / deployment / "results.json").exists():
            print(f"= {app} on {deployment}: written already", flush=True)
            return
        log.run(bench(app, deployment, out, "--systems", systems, *search))

    for app in (a for a in LLM_APPS if a in args.apps):
        extra = ",alto-no-priority" if app == "factcheck" else ""
        report(app, "ll4", MAIN + extra)
    if "ingest" in args.apps:
        report("ingest", "single", MAIN)
    headline(log, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
