"""How each system reaches the LLM, and what the LLM endpoint saw in each run.

**Who enforces the one cap.** Every system is held to the same client-side cap on
concurrent LLM calls (``llm_cap``, by default 16 per replica of the deployment), in one of
two ways:

* **One semaphore** of ``llm_cap`` permits in the recording wrapper
  (:mod:`alto.bench.record`), a FIFO queue shared by all of the system's LLM calls, in front
  of one client on the balancer's URL: the LangGraph versions and the asyncio reference, as
  users deploy them. Their calls carry no lineage, so there is nothing to order them by.
* **A client of its own** (:class:`ClientPlan`, :func:`client_plan`), whose dispatcher holds
  the cap: at most ``llm_cap // targets`` calls in flight per target URL, the waiting calls
  in its ``order``, each sent to the replica its ``route`` picks. Alto has one, and so has
  every control that holds a client (:mod:`alto.bench.controls`); no semaphore stands in
  front of it (a FIFO there would hide the dispatcher's order).

So with 4 replicas and the default cap, a client-routed system has 16 calls in flight per
replica, and a semaphore-held one 64 in all, placed by the balancer.

**Alto's endpoint** (``--alto-endpoint``): ``replicas`` gives Alto's client the replica
URLs of the deployment (the emulator's ``/r/{i}/v1``, or the llama.cpp servers' own URLs
behind the balancer proxy): it routes its calls itself and the balancer never sees them;
``balancer`` gives it the balancer's URL (``/v1``), the same endpoint as the semaphore-held
systems, so its dispatcher sees one target, allowed the whole cap. The default is
``replicas`` on a deployment with several replicas and ``balancer`` on one server.

**Per run** the bench records, for every system, the servers' own counters per replica
(requests, prompt tokens looked up in the prefix cache, tokens found there: the same
source for every system: the emulator's ``/stats``, or what each llama.cpp server logged),
and the client side: for a client-holding system its dispatcher's counters (differences
over the run), its limit per replica, the longest its queue grew and the most calls in
flight per replica (from its timeline samples); for the others the semaphore's longest
queue and most calls in flight (from the recorded calls).

Each client is opened once per app: its learned limits and lineage maps carry from run to
run (the unmeasured warm-up run comes first), as a long-running client's would, and its
counters are read as differences over each run. A recorded LLM call of a client-holding
system (:class:`~alto.bench.record.Call`) spans its wait for the dispatcher too: its
``queued_s`` is 0, the wait being inside the client.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

from alto.errors import UsageError

if TYPE_CHECKING:
    from alto.operators.llm.dispatch import Limit, Order, Route

ALTO_ENDPOINTS = ("replicas", "balancer")


def client_default(name: str) -> Any:
    """The default of ``OpenAIClient``'s keyword ``name`` (``order``, ``route``, ``max_inflight``).

    The bench's defaults are the client's, whatever they become.
    """
    from alto.operators.llm.openai import OpenAIClient

    return inspect.signature(OpenAIClient.__init__).parameters[name].default


@dataclass(frozen=True, slots=True)
class ClientPlan:
    """The LLM client a system holds: where it sends calls, and the dispatcher's knobs.

    Attributes:
        endpoint: ``"replicas"`` or ``"balancer"`` (see the module docstring).
        targets: the base URLs given to the client.
        max_inflight: per replica: an int, ``"auto"`` (learned, at most ``ceiling``), or
            ``"server"`` (what each server says it serves at once: llama-server's slots,
            kept only where the bench knows that is at most ``ceiling``).
        ceiling: the most calls in flight per replica: ``llm_cap // len(targets)``.
        order / route: the dispatcher's policies.
        send_priority: whether requests carry the dispatcher's ``priority`` (only to a server
            that honours it: the emulator started with priority scheduling).
    """

    endpoint: str
    targets: tuple[str, ...]
    max_inflight: int | str
    ceiling: int
    order: str
    route: str
    send_priority: bool

    def as_dict(self) -> dict[str, Any]:
        """The plan as a dict for JSON, with ``total_limit`` (``ceiling`` times the targets)."""
        out = asdict(self)
        out["targets"] = list(self.targets)
        out["total_limit"] = self.ceiling * len(self.targets)
        return out

    def describe(self) -> str:
        """How this client enforces the cap, in words for the report."""
        n = len(self.targets)
        where = (
            f"the {n} replica URLs directly (the balancer never sees its calls)"
            if self.endpoint == "replicas"
            else "the balancer's URL, like the semaphore-held systems"
        )
        each = "per replica" if n > 1 else "on it"
        if isinstance(self.max_inflight, int):
            limit = f"{self.max_inflight} in flight {each}"
        elif self.max_inflight == "server":
            limit = f"the server's own slot count {each} (at most {self.ceiling})"
        else:
            limit = f"a learned limit {each} of at most {self.ceiling}"
        return (
            f"its client's dispatcher over {where}: {limit}, at most "
            f"{self.ceiling * n} in all; order `{self.order}`, route `{self.route}`"
            + (", `priority` sent" if self.send_priority else ", no `priority` sent")
        )


def replica_urls(base_url: str, replicas: int) -> list[str]:
    """The emulator's replica base URLs (``…/r/{i}/v1``) beside its balancer ``…/v1``."""
    root = base_url.rstrip("/").removesuffix("/v1")
    return [f"{root}/r/{i}/v1" for i in range(replicas)]


def client_plan(
    *,
    base_url: str,
    replicas: Sequence[str],
    cap: int,
    endpoint: str | None,
    max_inflight: str | None,
    order: str | None,
    route: str | None,
    send_priority: bool,
    server_limit: int | None = None,
) -> ClientPlan:
    """A client for a deployment whose replicas' base URLs are ``replicas``.

    The replicas are behind the balancer at ``base_url``; the client stays under ``cap``.

    ``None`` for a knob means the client's own default; ``endpoint`` None means
    ``replicas`` when there are several, else ``balancer``. ``max_inflight`` None is the
    client's default per replica held to ``cap // targets``, except on the balancer's URL
    in front of several replicas, where the one target stands for all of them and gets the
    whole cap (as the semaphore-held systems do); a default that is neither a number nor
    ``"auto"`` (a limit the servers report, which the cap would not bound) is
    ``cap // targets``. An int ``max_inflight`` above
    ``cap // targets`` would give the system more concurrency than the others: a ValueError.

    ``server_limit``: what every replica says it serves at once, where the bench started
    the servers and knows it (llama.cpp's ``llama-server``: its slots). Where it is at most
    ``cap // targets`` and the targets are the servers themselves (not a balancer in front
    of several), the client's default ``"server"`` is kept: the client asks each server
    (``/props``) as it would anywhere, and the cap still holds.
    """
    if endpoint is None:
        endpoint = "replicas" if len(replicas) > 1 else "balancer"
    if endpoint not in ALTO_ENDPOINTS:
        msg = f"endpoint must be one of {', '.join(ALTO_ENDPOINTS)}, got {endpoint!r}"
        raise UsageError(msg)
    targets = list(replicas) if endpoint == "replicas" else [base_url]
    ceiling = cap // len(targets)
    if ceiling < 1:
        msg = (
            f"a cap of {cap} LLM calls cannot give each of {len(targets)} replicas one: "
            "raise --llm-concurrency"
        )
        raise UsageError(msg)
    asked: Any = client_default("max_inflight") if max_inflight is None else max_inflight
    on_servers = endpoint == "replicas" or len(replicas) == 1
    reported = server_limit is not None and server_limit <= ceiling and on_servers
    keep_server = max_inflight is None and asked == "server" and reported
    if keep_server:
        pass  # the servers' own limit, known to hold the cap
    elif max_inflight is None and not isinstance(asked, int) and asked != "auto":
        # a limit the servers report (``"server"``) could pass the shared cap: its share instead
        asked = ceiling
    elif max_inflight is None and isinstance(asked, int):
        # the client's default, held to the shared cap; one URL for several replicas: all of it
        asked = ceiling if endpoint == "balancer" and len(replicas) > 1 else min(asked, ceiling)
    if asked is None or asked == "none":
        msg = "an unlimited dispatcher would not hold the shared cap: give a number"
        raise UsageError(msg)
    if not keep_server and not isinstance(asked, int) and str(asked) != "auto":
        try:
            asked = int(asked)
        except ValueError:
            msg = f"max_inflight must be a number or auto, got {asked!r}"
            raise UsageError(msg) from None
    if isinstance(asked, int):
        if asked < 1:
            msg = f"max_inflight must be at least 1, got {asked}"
            raise UsageError(msg)
        if asked > ceiling:
            msg = (
                f"max_inflight {asked} per replica x {len(targets)} target(s) is more than the "
                f"shared cap of {cap}: at most {ceiling}"
            )
            raise UsageError(msg)
    return ClientPlan(
        endpoint=endpoint,
        targets=tuple(targets),
        max_inflight=asked,
        ceiling=ceiling,
        order=order or client_default("order"),
        route=route or client_default("route"),
        send_priority=send_priority,
    )


def open_client(plan: ClientPlan, model: str, **options: Any) -> Any:
    """An ``OpenAIClient`` as ``plan`` says; ``options`` go to it unchanged.

    Its ``max_concurrency`` is the shared cap (at least ``plan.ceiling`` per target), so
    under ``"auto"`` the learned limit is bounded by ``plan.ceiling``.
    """
    from alto.operators.llm.openai import OpenAIClient

    targets: Any = list(plan.targets) if len(plan.targets) > 1 else plan.targets[0]
    return OpenAIClient(
        targets,
        model,
        max_inflight=cast("Limit", plan.max_inflight),
        order=cast("Order", plan.order),
        route=cast("Route", plan.route),
        send_priority=plan.send_priority,
        **{"max_concurrency": plan.ceiling * len(plan.targets), **options},
    )


# -- per run: the client's view -----------------------------------------------------------


class DispatchWatch:
    """A system's client's dispatcher over one run.

    Counters as differences, and from its timeline samples the longest queue and the most
    calls in flight per replica.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.dispatcher = client.dispatcher
        self.dispatcher.record(True)
        self._before: Any = None

    def start(self) -> None:
        """Begin a run: drop the samples so far and take the counters as they are now."""
        del self.dispatcher.samples[:]
        self._before = self.client.dispatch_stats()

    def finish(self) -> dict[str, Any]:
        """End the run: its figures from the counters' differences and the samples recorded."""
        after = self.client.dispatch_stats()
        samples = list(self.dispatcher.samples)
        del self.dispatcher.samples[:]
        return dispatch_figures(self._before, after, samples)

    def samples_since(self, perf_t0: float) -> list[list[Any]]:
        """The samples recorded since :meth:`start`, ``[t, replica, in flight, queued]``.

        ``t`` is in seconds from ``perf_t0`` (a ``time.perf_counter()`` reading).
        """
        from alto.operators.llm.observe import relative_samples

        return [
            [round(t, 6), *rest] for t, *rest in relative_samples(self.dispatcher.samples, perf_t0)
        ]


def dispatch_figures(before: Any, after: Any, samples: Sequence[Any]) -> dict[str, Any]:
    """What a client's dispatcher did between two ``dispatch_stats()`` snapshots."""
    peaks: dict[int, int] = {}
    max_queued = 0
    for _, replica, inflight, queued in samples:
        max_queued = max(max_queued, int(queued))
        if replica is not None and replica >= 0:
            peaks[replica] = max(peaks.get(replica, 0), int(inflight))
    if not samples:  # no timeline: the whole life's longest queue is what there is
        max_queued = after.max_queued
    was = {r.target: r for r in before.replicas} if before is not None else {}
    replicas = []
    for i, r in enumerate(after.replicas):
        b = was.get(r.target)
        prompt = r.prompt_tokens - (b.prompt_tokens if b else 0)
        cached = r.cached_tokens - (b.cached_tokens if b else 0)
        replicas.append(
            {
                "target": r.target,
                "calls": r.calls - (b.calls if b else 0),
                "failures": r.failures - (b.failures if b else 0),
                "prompt_tokens": prompt,
                "cached_tokens": cached,
                "cached_share": round(cached / prompt, 4) if prompt else None,
                "limit": r.limit,
                "max_in_flight": peaks.get(i, 0),
                "healthy": r.healthy,
            }
        )
    limits = [r["limit"] for r in replicas]
    return {
        "client": "dispatcher",
        "order": after.order,
        "route": after.route,
        "limit": None if any(x is None for x in limits) else sum(limits),
        "max_queued": max_queued,
        "calls": sum(r["calls"] for r in replicas),
        "replicas": replicas,
    }


def semaphore_figures(calls: Sequence[Any], cap: int | None) -> dict[str, Any]:
    """The shared semaphore over one run, from the recorded LLM calls.

    Each call waited from ``start - queued_s`` to ``start`` and held a permit from ``start``
    to ``end``.
    """
    llm = [c for c in calls if c.operator == "llm"]
    waits = [(c.start - c.queued_s, c.start) for c in llm if c.queued_s > 0]
    held = [(c.start, c.end) for c in llm]
    return {
        "client": "semaphore" if cap else "none",
        "limit": cap,
        "max_queued": most_at_once(waits),
        "max_in_flight": most_at_once(held),
        "calls": len(llm),
        "replicas": [],
    }


def most_at_once(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals ``[start, end)`` that overlap at one instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, step in edges:  # at a tie an end (-1) sorts before a start (+1)
        now += step
        most = max(most, now)
    return most


# -- per run: the emulator's view -----------------------------------------------------------


def replica_deltas(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per replica, the emulator's counters over one run (``/stats``' ``per_replica``)."""
    out = []
    for b, a in zip(before, after, strict=True):
        prompt = a["prefix_cache"]["queried_tokens"] - b["prefix_cache"]["queried_tokens"]
        cached = a["prefix_cache"]["hit_tokens"] - b["prefix_cache"]["hit_tokens"]
        out.append(
            {
                "replica": a["replica"],
                "requests": a["requests"] - b["requests"],
                "prompt_tokens": prompt,
                "cached_tokens": cached,
                "cached_share": round(cached / prompt, 4) if prompt else None,
            }
        )
    return out


# -- for the report ---------------------------------------------------------------------------


def endpoint_rows(app: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (level, system), pooled over repeats: the client's kind, limit and longest queue.

    Also, per replica, the calls and cached-token share the emulator counted (and for a
    client's dispatcher its limit, most in flight, failures and health at the end).
    """
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for run in app.get("runs", []):
        if run.get("endpoint") is None:
            continue
        groups.setdefault((run["level"], run["system"]), []).append(run)
    order = {s: i for i, s in enumerate(app.get("systems", []))}
    rows = []
    for (level, system), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))
    ):
        last = runs[-1]["endpoint"]
        emulated: list[list[dict[str, Any]]] = [r.get("emulator_replicas") or [] for r in runs]
        per_replica: list[dict[str, Any]] = []
        if all(emulated):
            for i in range(len(emulated[0])):
                requests = sum(e[i]["requests"] for e in emulated)
                prompt = sum(e[i]["prompt_tokens"] for e in emulated)
                cached = sum(e[i]["cached_tokens"] for e in emulated)
                per_replica.append(
                    {"requests": requests, "cached_share": cached / prompt if prompt else None}
                )
        client = last["replicas"]
        rows.append(
            {
                "level": level,
                "system": system,
                "client": last["client"],
                "limit": last["limit"],
                "max_queued": max(r["endpoint"]["max_queued"] for r in runs),
                "calls": sum(r["endpoint"]["calls"] for r in runs),
                "emulator_replicas": per_replica,
                "client_limits": [r["limit"] for r in client],
                "client_max_in_flight": [
                    max(run["endpoint"]["replicas"][i]["max_in_flight"] for run in runs)
                    for i in range(len(client))
                ],
                "max_in_flight": max(r["endpoint"].get("max_in_flight", 0) for r in runs),
                "client_failures": sum(
                    x["failures"] for run in runs for x in run["endpoint"]["replicas"]
                ),
                "unhealthy": [x["target"] for x in client if not x["healthy"]],
            }
        )
    return rows
