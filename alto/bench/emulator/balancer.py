"""The emulator's balancer: which replica answers a request sent to ``/v1``.

Three policies, each the way a real deployment routes:

* ``round-robin``: replicas in turn, as a Kubernetes Service spreads connections.
* ``least-loaded``: the replica with the fewest requests in flight (ties: the lowest index).
* ``prefix-aware``: SGLang router's cache-aware policy, as ``sglang-router`` / ``python -m
  sglang_router.launch_router`` runs it for users. Read from sgl-project/sglang:
  ``sgl-router/src/policies/cache_aware.rs`` (commit 026f853b), ``sgl-router/src/policies/
  tree.rs`` (commit 4d40eec0), ``sgl-router/src/main.rs`` (commit 0129b029) and
  ``sgl-router/py_src/sglang_router/router_args.py`` (commit 083d6013).

  The router keeps an approximate radix tree of request text per replica (what was routed
  there, so what its prefix cache probably holds; SGLang keeps one tree whose nodes carry the
  replicas that passed through them, which matches the same prefixes). Load is requests in
  flight. When ``max - min > balance_abs_threshold`` *and* ``max > balance_rel_threshold *
  min`` the load is imbalanced and the request goes to the least-loaded replica (ties: the
  lowest index, as Rust's ``min_by_key``). Otherwise it goes to the replica whose tree holds
  the longest prefix of the request's text when that prefix is more than ``cache_threshold``
  of the text (``prefix_match`` also marks that path as just used), and else to the replica
  whose tree holds the fewest characters (``get_smallest_tenant``). Either way the text is
  inserted into the chosen replica's tree. Insertion never evicts: a background pass every
  ``eviction_interval_secs`` removes least recently used leaves from each tree until it holds
  at most ``max_tree_size`` characters (``evict_tenant_by_size``), sparing nothing.

  Ties: among replicas with the same longest match, and among equally small trees, SGLang
  takes the first in a ``DashMap``'s iteration order. The tree's per-replica character
  counts are one map, so its order is one fixed permutation of the replicas for the
  process's life: here the lowest index first. The tenants of a matched node are a map per
  node, each with a hasher seeded anew, so the pick differs from node to node: here the
  replica with the smallest CRC-32 of the matched prefix and its index, fixed for a prefix,
  spread evenly across prefixes, and the same every run.
  Recency is a counter of tree operations rather than SGLang's millisecond wall clock (the
  same order, without ties inside a millisecond).

Defaults are the ones ``sglang-router`` and ``launch_router`` give users (``main.rs`` clap
defaults, ``RouterArgs``): ``cache_threshold`` 0.3, ``balance_abs_threshold`` 64,
``balance_rel_threshold`` 1.5, ``eviction_interval_secs`` 120 and ``max_tree_size`` 2^26
characters; not ``CacheAwareConfig::default`` (0.5, 32, 1.1, 30 s, 10,000 characters in
``src/policies/mod.rs``), which only code that builds the policy itself gets.

Every decision is counted per replica by kind (:attr:`Balancer.decisions`): ``cache_match``,
``imbalance`` and ``smallest_tree`` for the prefix-aware policy, ``round_robin`` or
``least_loaded`` for the others.
"""

from __future__ import annotations

import heapq
import itertools
import zlib
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from alto.errors import UsageError

Policy = Literal["round-robin", "least-loaded", "prefix-aware"]
POLICIES: tuple[Policy, ...] = ("round-robin", "least-loaded", "prefix-aware")

CACHE_THRESHOLD = 0.3
BALANCE_ABS_THRESHOLD = 64
BALANCE_REL_THRESHOLD = 1.5
EVICTION_INTERVAL_S = 120.0
MAX_TREE_SIZE = 2**26

DECISION_KINDS: dict[Policy, tuple[str, ...]] = {
    "round-robin": ("round_robin",),
    "least-loaded": ("least_loaded",),
    "prefix-aware": ("cache_match", "imbalance", "smallest_tree"),
}
"""The kinds of decision each policy counts, per replica."""


class _Node:
    __slots__ = ("children", "label", "parent", "used")

    def __init__(self, label: str, parent: _Node | None) -> None:
        self.label = label
        self.parent = parent
        self.children: dict[str, _Node] = {}
        self.used = 0


class RadixTree:
    """An approximate radix tree over characters: what text one replica has seen.

    Laws: after ``insert(t)``, ``match(t) == len(t)``; inserting never removes anything;
    ``size`` is the number of characters stored (edge labels); after ``evict(m)``,
    ``size <= m``, and what was removed were leaves used less recently than everything left
    (a node's recency is the last insert or touching match through it).
    """

    def __init__(self) -> None:
        self.root = _Node("", None)
        self.size = 0
        self._clock = itertools.count(1)

    def match(self, text: str, *, touch: bool = False) -> int:
        """Characters of the longest prefix of ``text`` in the tree.

        With ``touch``, the nodes on that path (a partly matched last one included) become
        the most recently used, as SGLang's ``prefix_match`` does for the replica it
        returns.
        """
        node, i = self.root, 0
        path = [node]
        while i < len(text):
            child = node.children.get(text[i])
            if child is None:
                break
            common = _common(child.label, text, i)
            i += common
            path.append(child)
            if common < len(child.label):
                break
            node = child
        if touch and i:
            now = next(self._clock)
            for visited in path:
                visited.used = now
        return i

    def insert(self, text: str) -> None:
        """Add ``text``, marking its path as just used; nothing is evicted here."""
        now = next(self._clock)
        node, i = self.root, 0
        node.used = now
        while i < len(text):
            child = node.children.get(text[i])
            if child is None:
                leaf = _Node(text[i:], node)
                leaf.used = now
                node.children[text[i]] = leaf
                self.size += len(leaf.label)
                return
            common = _common(child.label, text, i)
            if common < len(child.label):  # split the edge
                middle = _Node(child.label[:common], node)
                middle.used = child.used
                node.children[text[i]] = middle
                child.label = child.label[common:]
                child.parent = middle
                middle.children[child.label[0]] = child
                child = middle
            child.used = now
            node = child
            i += common

    def evict(self, max_size: int) -> int:
        """Remove least recently used leaves until at most ``max_size`` characters remain.

        A parent left without children becomes a leaf. Returns the characters removed.
        """
        if self.size <= max_size:
            return 0
        order = itertools.count()
        heap = [(n.used, next(order), n) for n in self._nodes() if not n.children]
        heap = [entry for entry in heap if entry[2] is not self.root]
        heapq.heapify(heap)
        removed = 0
        while self.size > max_size and heap:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.label[0]]
            self.size -= len(leaf.label)
            removed += len(leaf.label)
            if parent is not self.root and not parent.children:
                heapq.heappush(heap, (parent.used, next(order), parent))
        return removed

    def _nodes(self) -> list[_Node]:
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(node.children.values())
        return out


def _common(label: str, text: str, start: int) -> int:
    n = 0
    limit = min(len(label), len(text) - start)
    while n < limit and label[n] == text[start + n]:
        n += 1
    return n


@dataclass(eq=False, repr=False)
class Balancer:
    """Chooses a replica for each request sent to the balancer.

    Args:
        policy: ``"round-robin"``, ``"least-loaded"`` or ``"prefix-aware"``.
        replicas: how many replicas there are.
        cache_threshold, balance_abs_threshold, balance_rel_threshold, max_tree_size:
            the prefix-aware policy's settings (the defaults ``sglang-router`` gives users).
        eviction_interval_s: seconds between the prefix-aware policy's eviction passes; the
            server that owns the balancer calls :meth:`evict` on that period (0: never).

    Example:
        >>> b = Balancer("round-robin", 3)
        >>> [b.choose("any text", [0, 0, 0]) for _ in range(4)]
        [0, 1, 2, 0]
        >>> b.decisions[0]
        {'round_robin': 2}
    """

    policy: Policy
    replicas: int
    _: KW_ONLY
    cache_threshold: float = CACHE_THRESHOLD
    balance_abs_threshold: int = BALANCE_ABS_THRESHOLD
    balance_rel_threshold: float = BALANCE_REL_THRESHOLD
    max_tree_size: int = MAX_TREE_SIZE
    eviction_interval_s: float = EVICTION_INTERVAL_S
    trees: list[RadixTree] = field(init=False)
    decisions: list[dict[str, int]] = field(init=False)
    eviction_passes: int = field(init=False, default=0)
    evicted_chars: int = field(init=False, default=0)
    _next: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            known = ", ".join(POLICIES)
            msg = f"balancer policy must be one of {known}; got {self.policy!r}"
            raise UsageError(msg)
        if self.replicas < 1:
            msg = f"replicas must be at least 1, got {self.replicas}"
            raise UsageError(msg)
        if self.eviction_interval_s < 0:
            msg = f"eviction_interval_s must be >= 0, got {self.eviction_interval_s}"
            raise UsageError(msg)
        self.trees = [RadixTree() for _ in range(self.replicas)]
        kinds = DECISION_KINDS[self.policy]
        self.decisions = [dict.fromkeys(kinds, 0) for _ in range(self.replicas)]

    def reset(self) -> None:
        """Forget every prefix the cache-aware policy has seen (its trees start empty).

        The decision counters keep counting.
        """
        self.trees = [RadixTree() for _ in range(self.replicas)]

    def settings(self) -> dict[str, Any]:
        """The policy and its settings, for ``/stats``."""
        out: dict[str, Any] = {"policy": self.policy}
        if self.policy == "prefix-aware":
            out |= {
                "cache_threshold": self.cache_threshold,
                "balance_abs_threshold": self.balance_abs_threshold,
                "balance_rel_threshold": self.balance_rel_threshold,
                "eviction_interval_s": self.eviction_interval_s,
                "max_tree_size": self.max_tree_size,
            }
        return out

    def choose(self, text: str, loads: Sequence[int]) -> int:
        """The replica for a request with prompt ``text``, given each replica's load."""
        if self.policy == "round-robin":
            chosen = self._next % self.replicas
            self._next += 1
            return self._count("round_robin", chosen)
        if self.policy == "least-loaded":
            return self._count("least_loaded", _least(loads))
        high, low = max(loads), min(loads)
        if high - low > self.balance_abs_threshold and high > self.balance_rel_threshold * low:
            chosen, kind = _least(loads), "imbalance"
        else:
            matches = [tree.match(text) for tree in self.trees]
            longest = max(matches)
            tied = [i for i in range(self.replicas) if matches[i] == longest]
            best = tied[0] if len(tied) == 1 else _first_tenant(text[:longest], tied)
            self.trees[best].match(text, touch=True)
            rate = longest / len(text) if text else 0.0
            if rate > self.cache_threshold:
                chosen, kind = best, "cache_match"
            else:
                chosen = min(range(self.replicas), key=lambda i: (self.trees[i].size, i))
                kind = "smallest_tree"
        self.trees[chosen].insert(text)
        return self._count(kind, chosen)

    def evict(self) -> int:
        """The background pass SGLang runs every ``eviction_interval_secs``.

        Every tree is trimmed to ``max_tree_size`` characters, least recently used leaves
        first. Returns the characters removed (0 for the policies without trees).
        """
        self.eviction_passes += 1
        removed = sum(tree.evict(self.max_tree_size) for tree in self.trees)
        self.evicted_chars += removed
        return removed

    def _count(self, kind: str, chosen: int) -> int:
        self.decisions[chosen][kind] += 1
        return chosen


def _first_tenant(prefix: str, tied: Sequence[int]) -> int:
    """Which of ``tied`` SGLang's ``prefix_match`` returns.

    ``tied`` are the replicas whose trees all hold ``prefix``. SGLang returns the first key
    of the matched node's ``DashMap``, whose hasher every node seeds anew, so the pick is
    arbitrary across nodes but fixed for one node. Here: the smallest CRC-32 of the prefix
    and the replica's index, the same pick for the same prefix every run, spread evenly over
    replicas across prefixes.
    """
    seed = zlib.crc32(prefix.encode())
    return min(tied, key=lambda i: (zlib.crc32(i.to_bytes(4, "little"), seed), i))


def _least(loads: Sequence[int]) -> int:
    return min(range(len(loads)), key=lambda i: (loads[i], i))
