"""The open-loop rate search: each system's highest Poisson rate whose p95 meets the SLO.

In the style of MLPerf Inference's server scenario (Reddi et al., "MLPerf Inference
Benchmark", ISCA 2020, arXiv:1911.02549: Poisson arrivals, a tail-latency bound that the run
must meet, the reported figure the highest rate that meets it) and of its LoadGen's early
stopping (``loadgen/early_stopping.cc`` in mlcommons/inference, ``MinPassingQueriesFinder``:
how many queries a run needs, given how many were over the latency bound, for the tail
percentile to hold at a stated confidence, by the binomial distribution). What is followed:

**The rule** (exact binomial, :func:`verdict`). A trial at one rate has ``n`` measured
arrivals (the first :attr:`SearchPlan.warmup` of each run discarded) of which ``k`` were over
the SLO or failed. The p95 meets the SLO when fewer than 5% of arrivals miss it. The trial

* **passes** when that holds at 95% confidence: ``P[Binom(n, 0.05) <= k] <= 0.05`` (were the
  miss probability 5% or more, seeing ``k`` or fewer misses would be that unlikely);
* **fails** when the miss probability is surely above 5%:
  ``P[Binom(n, 0.05) >= k] <= 0.05``;
* is **undecided** otherwise, and is extended by another round of arrivals at the same rate,
  up to :attr:`SearchPlan.rounds` rounds; still undecided then, it counts as a fail (and is
  recorded as ``undecided``), so a reported rate is one that passed.

With no miss a pass needs 59 arrivals (``0.95**59 = 0.0485``; 58 give 0.0510), which is
LoadGen's minimum for zero over-latency queries at the 95th percentile and 95% confidence;
see :func:`min_arrivals`. Each look at a growing sample is a test at 5%; with the defaults a
trial looks at most twice at the pass side (60 and 120 arrivals) and up to six times at the
fail side (after each run), so by a union bound a reported pass or fail is wrong with
probability at most 10% resp. 30% at the worst rate, and far less away from the threshold.
The search needs one wrong verdict to move; the bracket it reports (highest pass, first
fail) is the figure to read, not a point.

**Repeats, pooled per rate.** Each trial runs :attr:`SearchPlan.repeats` runs, one per
repeat, each its own Poisson realisation (its own seed; the same seeds for every system and
every rate, so systems and rates are compared on common random numbers), and the verdict
pools their measured arrivals. Three independent searches would each need 59 arrivals per
trial and so triple the cost past the machine's budget (below); pooling gives every verdict
the 59-arrival minimum from three realisations at the cost of one. The spread across
repeats is still reported: per repeat, the highest rate where its own arrivals' share of
misses was at most 5% (a point estimate, below its own first such miss), median and
min-max over repeats.

**Bracketing and bisection** (:class:`RateSearch`). From a start rate (half the deployment's
rate ceiling for an LLM app; a quarter of 1 / the unloaded p50 for one without LLM calls),
the search multiplies the rate by :attr:`SearchPlan.factor` while trials pass and divides it
while they fail, until it holds a pass below a fail; there is no upper limit, so a system
that holds its rate is searched past its capacity, never censored at a ceiling. Then it
bisects (geometrically) until the highest pass and the lowest fail are within
:attr:`SearchPlan.width` (relative) of each other. The reported rate is monotone: the
highest passing rate below the lowest failing one, with that first failing rate. The
default step is ``1 + width`` (1.25): the first bracket is then as tight as a bisection
would make it, so none is needed, and every rate tried lies on one grid (the start times
powers of 1.25) shared by every system, whose rates compare step for step. A failing trial
mostly stops after its first run (its misses decide it), so stepping down from a start above
a system's capacity is cheap; passing trials, which need every repeat, are what a search
pays for. A trial whose CPU was saturated (:func:`~alto.bench.machine.saturation`) is
redone once at the end, and the search goes on from the redo's verdict.

**Run length: steady state, not a burst** (:meth:`SearchPlan.run_size`). A run discards the
arrivals of its first SLO (the pipeline fills) and measures at least ``SLO / width`` seconds
of arrivals (offered ``1 + width`` times what it sustains, a system's backlog grows by
``width`` of its capacity per second, so the wait it adds passes the SLO within that span);
at low rates the counts :attr:`SearchPlan.warmup` and :attr:`SearchPlan.per_run` rule
instead. Runs of a fixed 24 arrivals were bursts at high rates: on ``rr4`` every system
"held" multihop at 5043/s, 24 arrivals in 5 ms draining inside its 3.2 s SLO.

**Budget** (the defaults, 2 cores; :func:`trial_seconds`). A run at rate ``r`` lasts its
arrivals over ``r``, then a drain of about half the SLO, plus 0.3 s of set-up; above
``warmup / SLO`` inputs/s that is about ``SLO + SLO / width + SLO / 2`` = 5.5 SLO, so a trial
of 3 runs about 16.5 SLO: factcheck (SLO about 1.4 s) 23 s, multihop and summarize (about 3 s)
50-55 s; a search takes 3-5 trials. Per system and 4-replica deployment that is about 9
minutes for the three LLM apps; the 5 systems on 4 deployments about 3 hours, the 7 controls
on one deployment one more. That does not fit 90 minutes on 2 cores: with fixed 24-arrival
runs the ``rr4`` report with the controls took 46 minutes, but measured bursts. Ways to fit,
each a trade: a wider bisection stop (``--search-width 0.5``: half the measured span, and a
bisection fewer), the controls on one app, fewer deployments per regeneration.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from alto.bench.errors import BenchRunError
from alto.bench.machine import saturation
from alto.errors import UsageError

if TYPE_CHECKING:
    from alto.bench.session import Session

MISS = Fraction(1, 20)
"""The share of arrivals allowed over the SLO: the p95 meets it when fewer than 5% miss."""
ALPHA = Fraction(1, 20)
"""1 - the confidence of a verdict (95%)."""
PASS, FAIL, UNDECIDED = "pass", "fail", "undecided"
RATE_ROUNDING = 2e-3
"""How far two rates' ratio may stray from a step through their rounding (:func:`_rate`
keeps 4 significant digits): a bracket one ``1 + width`` step wide counts as within width."""


@lru_cache(maxsize=4096)
def binom_cdf(k: int, n: int, p: Fraction = MISS) -> Fraction:
    """``P[Binom(n, p) <= k]``, exactly (rational arithmetic).

    Example:
        >>> float(binom_cdf(0, 59))  # 0.95 ** 59
        0.04849...
    """
    if k < 0:
        return Fraction(0)
    if k >= n:
        return Fraction(1)
    q = 1 - p
    return sum((math.comb(n, i) * p**i * q ** (n - i) for i in range(k + 1)), Fraction(0))


def binom_sf(k: int, n: int, p: Fraction = MISS) -> Fraction:
    """``P[Binom(n, p) >= k]``, exactly."""
    return 1 - binom_cdf(k - 1, n, p)


def verdict(n: int, k: int) -> str:
    """:data:`PASS`, :data:`FAIL` or :data:`UNDECIDED` for ``k`` misses in ``n`` arrivals.

    The rule is the module docstring's.

    Example:
        >>> verdict(59, 0), verdict(58, 0), verdict(20, 4), verdict(60, 2)
        ('pass', 'undecided', 'fail', 'undecided')
    """
    if not 0 <= k <= n:
        msg = f"need 0 <= k <= n, got n={n}, k={k}"
        raise UsageError(msg)
    if n and binom_cdf(k, n) <= ALPHA:
        return PASS
    if n and binom_sf(k, n) <= ALPHA:
        return FAIL
    return UNDECIDED


@lru_cache(maxsize=1024)
def pass_threshold(n: int) -> int:
    """The most misses with which ``n`` arrivals pass (-1: none pass)."""
    k = -1
    while k + 1 <= n and binom_cdf(k + 1, n) <= ALPHA:
        k += 1
    return k


@lru_cache(maxsize=1024)
def fail_threshold(n: int) -> int:
    """The fewest misses with which ``n`` arrivals fail (``n + 1``: none fail)."""
    k = 0
    while k <= n and binom_sf(k, n) > ALPHA:
        k += 1
    return k


def min_arrivals(misses: int = 0) -> int:
    """The fewest measured arrivals with which ``misses`` misses still pass (59 for none).

    Example:
        >>> min_arrivals(0), min_arrivals(1)
        (59, 93)
    """
    n = misses + 1
    while pass_threshold(n) < misses:
        n += 1
    return n


@dataclass(frozen=True)
class SearchPlan:
    """The search's settings (``alto bench --load open``'s ``--search-*`` options).

    Attributes:
        start: the first rate tried (inputs/s).
        repeats: runs per trial round, one per repeat (its own Poisson realisation).
        arrivals: measured arrivals per trial round, over all its runs (at least 59, so a
            round without a miss can pass).
        warmup: arrivals discarded at the start of every run.
        rounds: trial rounds at most (an undecided trial is extended by another).
        factor: the bracketing step (multiply or divide the rate by it).
        width: stop bisecting when the lowest fail / the highest pass <= 1 + width.
        max_trials: trials per search at most (then it stops, saying so).
        min_span_s: a run's measured arrivals span at least this many seconds (see
            :meth:`run_size`).
        floor: below this rate the search stops going down (no rate passes); default
            ``start / 16``: a system that fails a sixteenth of the start rate is told apart
            already, and a trial's length grows as the rate falls.
    """

    start: float
    repeats: int = 3
    arrivals: int = 60
    warmup: int = 4
    rounds: int = 2
    factor: float = 1.25
    width: float = 0.25
    max_trials: int = 16
    floor: float | None = None
    min_span_s: float = 3.0

    def __post_init__(self) -> None:
        if not self.start > 0 or (self.floor is not None and not self.floor > 0):
            msg = "the start rate and the floor must be positive"
            raise UsageError(msg)
        if self.repeats < 1 or self.rounds < 1 or self.warmup < 0 or self.max_trials < 1:
            msg = "repeats, rounds and max_trials must be >= 1, warmup >= 0"
            raise UsageError(msg)
        if self.arrivals < min_arrivals(0):
            msg = (
                f"arrivals per round must be at least {min_arrivals(0)}: with fewer, even "
                "a trial without a miss cannot pass at 95% confidence"
            )
            raise UsageError(msg)
        if not self.factor > 1 or not self.width > 0:
            msg = "factor must be > 1 and width > 0"
            raise UsageError(msg)

    @property
    def lowest(self) -> float:
        """The lowest rate the search tries (:attr:`floor`, else ``start / 16``)."""
        return self.floor if self.floor is not None else self.start / 16

    @property
    def per_run(self) -> int:
        """Measured arrivals per run at the least.

        ``arrivals`` split over the repeats, rounded up (:meth:`run_size` adds more at high
        rates).
        """
        return -(-self.arrivals // self.repeats)

    def run_size(self, rate: float, slo_s: float) -> tuple[int, int]:
        """(arrivals, warm-up arrivals) of one run at ``rate``: steady state, not a burst.

        A run's first ``slo_s`` seconds of arrivals are warm-up (the pipeline fills; a burst
        that drains inside the SLO says nothing of a sustained rate), and its measured
        arrivals span at least ``slo_s / width`` seconds: offered ``1 + width`` times what a
        system sustains, its backlog grows by ``width`` of its capacity per second, so the
        wait it adds passes the SLO within that span. The span is also at least
        :attr:`min_span_s` (3 s): with a short SLO (ingest's 50 ms) ``slo_s / width`` is a
        fifth of a second, and whether a run passed then said whether one of the machine's
        periodic stalls (a full garbage collection, a time slice lost to another process)
        fell inside it, not what rate the system sustains. Below those times the counts are
        :attr:`warmup` and :attr:`per_run`.

        Example:
            >>> SearchPlan(start=1.0).run_size(2.0, 1.0)  # low rate: the counts rule
            (24, 4)
            >>> SearchPlan(start=1.0).run_size(40.0, 1.0)  # 1 s warm-up, then 4 s measured
            (200, 40)
        """
        warmup = max(self.warmup, math.ceil(rate * slo_s))
        span = max(slo_s / self.width, self.min_span_s)
        measured = max(self.per_run, math.ceil(rate * span))
        return warmup + measured, warmup


class RateSearch:
    """Bracketing, then bisection, over one system's trials.

    No I/O: the runner asks :meth:`next_rate`, runs the trial and tells :meth:`record` its
    verdict.

    Example:
        >>> s = RateSearch(SearchPlan(start=4.0, factor=2.0, width=0.2))
        >>> while (rate := s.next_rate()) is not None:
        ...     s.record(rate, rate <= 10)  # a system that holds 10/s and no more
        >>> s.order, s.best, s.first_fail
        ([4.0, 8.0, 16.0, 11.31, 9.512], 9.512, 11.31)
    """

    def __init__(self, plan: SearchPlan) -> None:
        self.plan = plan
        self.verdicts: dict[float, bool] = {}  # rate -> passed (the latest verdict there)
        self.order: list[float] = []  # rates in the order tried (a redo appears again)
        self.stop_reason: str | None = None

    @property
    def passed(self) -> list[float]:
        """The passing rates tried, lowest first."""
        return sorted(r for r, ok in self.verdicts.items() if ok)

    @property
    def failed(self) -> list[float]:
        """The failing rates tried, lowest first."""
        return sorted(r for r, ok in self.verdicts.items() if not ok)

    @property
    def first_fail(self) -> float | None:
        """The lowest failing rate (None: none failed)."""
        failed = self.failed
        return failed[0] if failed else None

    @property
    def best(self) -> float | None:
        """The highest passing rate below the lowest failing one (None: none)."""
        top = self.first_fail
        ok = [r for r in self.passed if top is None or r < top]
        return ok[-1] if ok else None

    def record(self, rate: float, passed: bool) -> None:
        """The verdict of a trial at ``rate`` (a later one at the same rate replaces it)."""
        self.verdicts[rate] = passed
        self.order.append(rate)

    def next_rate(self) -> float | None:
        """The next rate to try, or None when the search is done (see :attr:`stop_reason`)."""
        plan = self.plan
        if len(self.order) >= plan.max_trials:
            self.stop_reason = f"stopped after {plan.max_trials} trials"
            return None
        if not self.verdicts:
            return plan.start
        best, top = self.best, self.first_fail
        if top is None:  # every trial passed: bracket upward, no ceiling
            return _rate(self.passed[-1] * plan.factor)
        if best is None:  # every trial failed: bracket downward
            low = top / plan.factor
            if low < plan.lowest * (1 - 1e-9):
                self.stop_reason = f"no rate down to {plan.lowest:g}/s passed"
                return None
            return _rate(low)
        if top / best <= (1 + plan.width) * (1 + RATE_ROUNDING):
            self.stop_reason = f"bracket within {plan.width:.0%}"
            return None
        middle = _rate(math.sqrt(best * top))
        if middle in self.verdicts:  # rounding met a tried rate: the bracket is as tight
            self.stop_reason = "bracket as tight as the rates' rounding"
            return None
        return middle

    def result(self) -> dict[str, Any]:
        """The search's outcome as a dict for ``results.json``."""
        return {
            "best_rate": self.best,
            "first_fail": self.first_fail,
            "passed": self.passed,
            "failed": self.failed,
            "trials": len(self.order),
            "stop_reason": self.stop_reason,
        }


def _rate(value: float) -> float:
    """Rates to 4 significant digits (readable, and the same in JSON as here)."""
    return float(f"{value:.4g}")


def misses(samples: list[dict[str, Any]], slo_s: float) -> tuple[int, int]:
    """``(n, k)`` of one run's samples (``results.json`` form).

    ``n``: the arrivals measured (in the window, so past warm-up); ``k``: those over the SLO
    or failed.
    """
    measured = [s for s in samples if s.get("in_window", True)]
    over = sum(
        1
        for s in measured
        if s["error"] is not None or s["latency_s"] is None or s["latency_s"] > slo_s
    )
    return len(measured), over


def per_repeat_estimates(trials: list[dict[str, Any]]) -> dict[int, float | None]:
    """Per repeat (its own runs only): the highest rate where its share of misses was at most 5%.

    It lies below the lowest rate where the share was more (a point estimate, no
    confidence).
    """
    seen: dict[int, dict[float, list[int]]] = {}
    for trial in trials:
        for run in trial["runs"]:
            cell = seen.setdefault(run["repeat"], {}).setdefault(trial["rate"], [0, 0])
            cell[0] += run["n"]
            cell[1] += run["k"]
    out: dict[int, float | None] = {}
    for repeat, by_rate in sorted(seen.items()):
        bad = [r for r, (n, k) in by_rate.items() if n and k > MISS * n]
        top = min(bad) if bad else math.inf
        good = [r for r, (n, k) in by_rate.items() if n and k <= MISS * n and r < top]
        out[repeat] = max(good) if good else None
    return out


def trial_seconds(rate: float, slo_s: float, plan: SearchPlan, *, setup_s: float = 0.3) -> float:
    """The expected wall time of one trial round at ``rate`` (the budget's arithmetic).

    Its runs' arrivals, each run's drain (about half the SLO) and set-up.
    """
    arrivals, _ = plan.run_size(rate, slo_s)
    return plan.repeats * (arrivals / rate + slo_s / 2 + setup_s)


# -- driving the searches -------------------------------------------------------------------


def served(run: dict[str, Any]) -> tuple[int, float]:
    """The throughput served in the steady window of ``run``.

    Returns (completions inside the run's window, the window's length); the window runs from
    the first measured arrival to the last arrival.
    """
    start, end = run.get("window_s") or [None, None]
    if start is None or end is None or not end > start:
        return 0, 0.0
    done = sum(
        1
        for s in run["samples"]
        if s["error"] is None
        and s["latency_s"] is not None
        and start <= s["submitted_s"] + s["latency_s"] <= end
    )
    return done, end - start


def seed_of(base: int, repeat: int, round_: int) -> int:
    """The Poisson seed of one run: per repeat and round, the same for every system and rate."""
    return base + repeat + 1000 * round_


async def run_searches(
    systems: list[str],
    plan: SearchPlan,
    slo_s: float,
    measure: Any,
    *,
    seed: int = 0,
    tick: Any = None,
    cpu_is_work: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every system's search, interleaved, then saturated trials redone once.

    Interleaved: one trial per system in turn, the order rotating. Returns the runs and
    ``{"trials", "systems"}``.

    ``measure(system, rate, repeat, seed, arrivals, warmup)`` runs one open-loop run and
    returns its ``results.json`` record (with ``cpu`` and ``emulator_lag``); ``tick(system,
    rate)`` is called before each run. ``cpu_is_work``: the bench process's CPU is the
    systems' own work (:func:`~alto.bench.machine.saturation`), not a reason to redo a trial.
    """
    searches = {s: RateSearch(plan) for s in systems}
    runs: list[dict[str, Any]] = []
    trials: list[dict[str, Any]] = []

    async def trial(system: str, rate: float, redo_of: int | None = None) -> dict[str, Any]:
        n = k = done = 0
        length = 0.0
        parts: list[dict[str, Any]] = []
        outcome = UNDECIDED
        for round_ in range(plan.rounds):
            for repeat in range(plan.repeats):
                if tick is not None:
                    tick(system, rate)
                s = seed_of(seed, repeat, round_)
                run = await measure(system, rate, repeat, s, *plan.run_size(rate, slo_s))
                run["trial"] = len(trials)
                runs.append(run)
                rn, rk = misses(run["samples"], slo_s)
                c, w = served(run)
                n, k, done, length = n + rn, k + rk, done + c, length + w
                parts.append(
                    {"run": len(runs) - 1, "repeat": repeat, "round": round_, "seed": s,
                     "n": rn, "k": rk, "cpu": run.get("cpu"), "lag": run.get("emulator_lag")}
                )  # fmt: skip
                outcome = verdict(n, k)
                if outcome == FAIL:
                    break
            if outcome != UNDECIDED:
                break
        why: list[str] = []
        for part in parts:
            found = saturation(part["cpu"] or {}, part["lag"], slo_s, cpu_is_work=cpu_is_work)
            why += [w for w in found if w not in why]
        passed = outcome == PASS  # undecided at the last round counts as a fail
        record: dict[str, Any] = {
            "index": len(trials),
            "system": system,
            "rate": rate,
            "n": n,
            "k": k,
            "verdict": outcome,
            "passed": passed,
            "served_throughput": round(done / length, 4) if length else None,
            "runs": parts,
            "saturated": why,
            "redo_of": redo_of,
        }
        trials.append(record)
        searches[system].record(rate, passed)
        return record

    turn = 0
    redone: set[int] = set()
    while True:
        busy = False
        order = systems[turn % len(systems) :] + systems[: turn % len(systems)]
        turn += 1
        for system in order:
            rate = searches[system].next_rate()
            if rate is not None:
                busy = True
                await trial(system, rate)
        if busy:
            continue
        pending = [t for t in trials if t["saturated"] and t["index"] not in redone]
        pending = [t for t in pending if t["redo_of"] is None]  # once: never a redo's redo
        if not pending:
            break
        for t in pending:
            redone.add(t["index"])
            await trial(t["system"], t["rate"], redo_of=t["index"])
    outcome = {
        "trials": trials,
        "systems": {s: summarize_search(searches[s], trials, s) for s in systems},
    }
    return runs, outcome


def summarize_search(
    search: RateSearch, trials: list[dict[str, Any]], system: str
) -> dict[str, Any]:
    """One system's search for ``results.json`` and the report.

    The highest passing rate, the first failing rate, the spread over repeats, the
    throughput served at the reported rate, and how many trials (saturated ones, redone
    ones) it took.
    """
    mine = [t for t in trials if t["system"] == system]
    best = search.best
    at_best = [t for t in mine if t["rate"] == best and t["passed"]]
    estimates = per_repeat_estimates(mine)
    values = sorted(v for v in estimates.values() if v is not None)
    return {
        **search.result(),
        "repeat_estimates": {str(r): v for r, v in estimates.items()},
        "repeat_median": _median(values),
        "repeat_min": values[0] if values else None,
        "repeat_max": values[-1] if values else None,
        "served_at_best": at_best[-1]["served_throughput"] if at_best else None,
        "saturated_trials": sum(1 for t in mine if t["saturated"]),
        "redone_trials": sum(1 for t in mine if t["redo_of"] is not None),
        "undecided_trials": sum(1 for t in mine if t["verdict"] == UNDECIDED),
    }


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def rate_interval(row: dict[str, Any]) -> tuple[float | None, float | None]:
    """A system's rate interval for comparisons.

    From the lower of its highest pass and its repeats' lowest estimate to the higher of its
    first fail and its repeats' highest (the capacity lies within it; two systems whose
    intervals overlap cannot be told apart).
    """
    lows = [v for v in (row.get("best_rate"), row.get("repeat_min")) if v is not None]
    highs = [v for v in (row.get("first_fail"), row.get("repeat_max")) if v is not None]
    return (min(lows) if lows else None, max(highs) if highs else None)


def rate_parity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two systems' rate intervals overlap (:func:`rate_interval`): parity.

    A missing bound is open (no first fail: no upper bound; no pass: a lower bound of 0).
    """
    a_low, a_high = rate_interval(a)
    b_low, b_high = rate_interval(b)
    a_low, b_low = a_low or 0.0, b_low or 0.0
    a_high = math.inf if a_high is None else a_high
    b_high = math.inf if b_high is None else b_high
    return a_low <= b_high and b_low <= a_high


async def search_session(
    session: Session, systems: list[str], sweep: dict[str, Any], progress: bool
) -> list[dict[str, Any]]:
    """``--load search`` for one app's runner session (``alto.bench.session.Session``).

    Every system's search, its runs through ``session.measure``. Returns the runs, and puts
    the trials and per-system outcome into ``sweep["search"]``.
    """
    from tqdm.auto import tqdm

    settings = session.settings
    if sweep["slo_s"] is None:
        msg = "the rate search needs an SLO: the bound pass timed no input"
        raise BenchRunError(msg)
    plan = settings.search_plan(sweep["levels"][0])
    # about 4 trials a search: two of all repeats, two stopped after one run
    bar = tqdm(
        total=len(systems) * 2 * (plan.repeats + 1),
        desc=session.app.NAME,
        unit="run",
        disable=not progress,
        file=sys.stderr,
    )

    def tick(system: str, rate: float) -> None:
        bar.set_postfix_str(f"{system} @ {rate:g}/s")
        if bar.n >= bar.total:
            bar.total = bar.n + 1
        bar.update()

    async def run(
        system: str, rate: float, repeat: int, seed: int, arrivals: int, warmup: int
    ) -> dict[str, Any]:
        position = systems.index(system)
        return await session.measure(
            system, rate, repeat, position, seed=seed, arrivals=arrivals, warmup=warmup
        )

    try:
        runs, outcome = await run_searches(
            systems,
            plan,
            sweep["slo_s"],
            run,
            seed=settings.seed,
            tick=tick,
            cpu_is_work=bool(sweep.get("cpu_is_work")),
        )
    finally:
        bar.close()
    sweep["search"] = {"plan": asdict(plan), **outcome}
    return runs
