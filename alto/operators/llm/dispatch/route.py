"""Which replica serves a call: the route policies.

For a call made inside a stage, a policy names the replica the call should wait for
(:meth:`RoutePolicy.prefer`), or none, and then the call goes to the replica
:meth:`RoutePolicy.free` picks among those with room, or, when none has room, waits for
whichever frees first. With one replica there is nothing to choose, and no policy is asked.

* :class:`Lineage` (``"lineage"``): a call goes to the replica that last served its parent's,
  else its root's, calls (it holds their prefix in its cache) while that replica has room and
  no more than a quarter of its limit more calls in flight than the least loaded one (SGLang
  router's load-imbalance override, with a threshold fitted to replicas whose decode steps
  slow down with every call past their knee); otherwise, and for a root's first call, to the
  least loaded replica with room, ties going to the one that last got the same ``prefix``. A
  free replica now is worth more than a cache hit later: a hit saves a prompt's prefill, a
  wait costs a whole call.
* :class:`LeastLoaded` (``"least-loaded"``): the replica with room and the fewest calls in
  flight.
* :class:`RoundRobin` (``"round-robin"``): the healthy replicas in turn; a call waits for its
  replica.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from alto.ancestry.ancestry import Ancestry, parent_key
from alto.operators.llm.dispatch.knobs import ROUTES
from alto.operators.llm.dispatch.order import RootKey
from alto.operators.llm.dispatch.replica import Rotation, ServerReplica

# SGLang router's imbalance rule (sgl-router, py_src/sglang_router/launch_router.py,
# RouterArgs: balance_abs_threshold=32, balance_rel_threshold=1.0001; the Rust
# CacheAwareConfig::default later took 1.1) leaves cache affinity when loads (max, min) differ
# by more than 32 requests, on GPUs that batch hundreds. Here a replica's limit sits near its
# throughput knee, past which every call slows every decode step, so affinity is left at a
# difference of a quarter of the limit (AFFINITY_SLACK calls when there is no limit).
CACHE_THRESHOLD = 0.5  # SGLang router's: a prefix match must cover more than half the text
PREFIX_SPANS = (32, 64, 128, 256)  # characters of ``prefix`` hashed for the approximate map
AFFINITY_SLACK = 2


class RoutePolicy:
    """The base of the route policies; as it is, the least loaded replica with room.

    Subclass it for a route of your own and pass an instance as ``route=``; one instance
    serves one dispatcher. Replicas are given in the dispatcher's order; a
    :class:`~alto.operators.llm.dispatch.replica.ServerReplica` has ``index``, ``healthy``,
    ``inflight``, ``limit``, ``room()`` and ``load()``.
    """

    name = "route"

    def prefer(
        self, replicas: Sequence[ServerReplica], root: RootKey, ancestry: Ancestry, prefix: str
    ) -> ServerReplica | None:
        """The replica a stage call should wait for, or None (the first free one)."""
        return None

    def free(self, replicas: Sequence[ServerReplica], prefix: str) -> ServerReplica | None:
        """The replica with room for a call routed nowhere yet, or None (it waits)."""
        best: ServerReplica | None = None
        for rep in replicas:
            if rep.healthy and rep.room() and (best is None or rep.inflight < best.inflight):
                best = rep
        return best

    def remember(
        self, root: RootKey, ancestry: Ancestry, prefix: str, replica: ServerReplica
    ) -> None:
        """A call of ``root`` at ``ancestry`` with ``prefix`` was admitted to ``replica``."""

    def forget(self, root: RootKey) -> None:
        """``root`` has its outcome: drop what is kept of it."""


class LeastLoaded(RoutePolicy):
    """The least loaded replica with room."""

    name = "least-loaded"


class RoundRobin(RoutePolicy):
    """The healthy replicas in turn."""

    name = "round-robin"

    def __init__(self) -> None:
        self.rotation = Rotation()

    def prefer(
        self, replicas: Sequence[ServerReplica], root: RootKey, ancestry: Ancestry, prefix: str
    ) -> ServerReplica | None:
        """The next healthy replica in turn (the least recently failed when none is)."""
        return self.rotation(replicas)


class Lineage(RoutePolicy):
    """A call follows the replica that served its parent's or root's calls.

    It does while that replica has room and is not much busier than the least loaded one.
    ``remember``: roots (and 4x as many parents and prefixes) kept, least recently used
    forgotten first.
    """

    name = "lineage"

    def __init__(self, remember: int = 4096) -> None:
        self.remember_roots = remember
        self.root_at: OrderedDict[RootKey, int] = OrderedDict()
        self.parent_at: OrderedDict[tuple[str, Ancestry], int] = OrderedDict()
        self.prefix_at: OrderedDict[int, int] = OrderedDict()

    def prefer(
        self, replicas: Sequence[ServerReplica], root: RootKey, ancestry: Ancestry, prefix: str
    ) -> ServerReplica | None:
        """The replica that served the call's parent, else its root, when it is still a good pick.

        None for a root's first call, or when that replica is down or full, or busier than
        the least loaded healthy one by more than a quarter of its limit (``AFFINITY_SLACK``
        calls when it has none): then the least loaded replica takes the call.
        """
        chosen = -1
        if len(ancestry) >= 3:
            chosen = self.parent_at.get((root[0], parent_key(ancestry)), -1)
        if chosen < 0:
            chosen = self.root_at.get(root, -1)
        if chosen < 0:
            return None  # a root's first call: the least loaded replica spreads the roots
        rep = replicas[chosen]
        if not rep.healthy or not rep.room():
            return None  # a free replica now beats a cache hit later: whichever frees first
        low = min(r.inflight for r in replicas if r.healthy)
        if rep.inflight - low > (max(1, rep.limit // 4) if rep.limit else AFFINITY_SLACK):
            return None  # much busier than another: its decode steps are slower
        return rep

    def free(self, replicas: Sequence[ServerReplica], prefix: str) -> ServerReplica | None:
        """The least loaded replica with room.

        Of those as little loaded, the one that last got ``prefix``.
        """
        best = super().free(replicas, prefix)
        if best is not None and prefix:
            known = self.match(prefix)
            if known >= 0:
                rep = replicas[known]
                if rep.healthy and rep.room() and rep.inflight <= best.inflight:
                    return rep
        return best

    def remember(
        self, root: RootKey, ancestry: Ancestry, prefix: str, replica: ServerReplica
    ) -> None:
        """The replica that served the call now holds its root's, parent's and prefix's cache."""
        index = replica.index
        roots = self.root_at
        roots[root] = index
        roots.move_to_end(root)
        if len(roots) > self.remember_roots:
            roots.popitem(last=False)
        if len(ancestry) >= 3:
            parents = self.parent_at
            key = (root[0], parent_key(ancestry))
            parents[key] = index
            parents.move_to_end(key)
            if len(parents) > 4 * self.remember_roots:
                parents.popitem(last=False)
        if prefix:
            spans = self.prefix_at
            for n in PREFIX_SPANS:
                if n > len(prefix):
                    break
                h = hash(prefix[:n])
                spans[h] = index
                spans.move_to_end(h)
            h = hash(prefix)
            spans[h] = index
            spans.move_to_end(h)
            while len(spans) > 4 * self.remember_roots:
                spans.popitem(last=False)

    def match(self, prefix: str) -> int:
        """The replica that last got the longest known leading part of ``prefix``, or -1.

        That part must cover more than ``CACHE_THRESHOLD`` of ``prefix``; else -1.
        """
        spans = self.prefix_at
        found = spans.get(hash(prefix), -1)
        if found >= 0:
            return found
        for n in reversed(PREFIX_SPANS):
            if n < len(prefix) and n > CACHE_THRESHOLD * len(prefix):
                found = spans.get(hash(prefix[:n]), -1)
                if found >= 0:
                    return found
        return -1

    def forget(self, root: RootKey) -> None:
        """Drop which replica served ``root``: it has its outcome (parents and prefixes age out)."""
        self.root_at.pop(root, None)


def route_policy(route: str | RoutePolicy, *, remember: int) -> RoutePolicy:
    """The policy ``route`` names (a policy object is taken as it is)."""
    if isinstance(route, RoutePolicy):
        return route
    if route == "least-loaded":
        return LeastLoaded()
    if route == "round-robin":
        return RoundRobin()
    assert route == "lineage", f"not one of {ROUTES}: {route!r}"
    return Lineage(remember)
