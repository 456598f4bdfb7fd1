"""The emulator's balancer: which replica answers a request sent to ``/v1``.

Three policies, each the way a real deployment routes:

* ``round-robin``: replicas in turn, as a Kubernetes Service spreads connections.
* ``least-loaded``: the replica with the fewest requests in flight (ties: the lowest index).
* ``prefix-aware``: SGLang router's cache-aware policy (sgl-router,
  ``src/policies/cache_aware.rs``). It keeps an approximate radix tree of request text per
  replica (what was routed there, so what its prefix cache probably holds). When the load is
  balanced it routes to the replica whose tree matches the longest prefix of the request's
  text if the match covers more than ``cache_threshold`` of the text, and otherwise to the
  replica with the smallest tree. When the load is imbalanced, ``max - min >
  balance_abs_threshold`` *and* ``max > balance_rel_threshold * min`` (load = requests in
  flight), it routes to the least-loaded replica. Either way the text is inserted into the
  chosen replica's tree.

Defaults are SGLang router's (``CacheAwareConfig::default`` in sgl-router
``src/policies/mod.rs``): ``cache_threshold`` 0.5, ``balance_abs_threshold`` 32,
``balance_rel_threshold`` 1.1, and eviction of least recently used leaves once a tree holds
more than ``max_tree_size`` 10,000 characters (SGLang checks every ``eviction_interval_secs``
30 s; here, after each insertion, so routing does not depend on wall time).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

Policy = Literal["round-robin", "least-loaded", "prefix-aware"]
POLICIES: tuple[Policy, ...] = ("round-robin", "least-loaded", "prefix-aware")

CACHE_THRESHOLD = 0.5
BALANCE_ABS_THRESHOLD = 32
BALANCE_REL_THRESHOLD = 1.1
MAX_TREE_SIZE = 10_000


class _Node:
    __slots__ = ("children", "label", "parent", "used")

    def __init__(self, label: str, parent: _Node | None) -> None:
        self.label = label
        self.parent = parent
        self.children: dict[str, _Node] = {}
        self.used = 0


class RadixTree:
    """An approximate radix tree over characters: what text one replica has seen.

    Laws: after ``insert(t)``, ``match(t) == len(t)``; ``size`` is the number of characters
    stored (edge labels), and ``evict(m)`` leaves ``size <= m`` unless the text inserted last
    is alone longer.
    """

    def __init__(self) -> None:
        self.root = _Node("", None)
        self.size = 0
        self._clock = itertools.count(1)
        self._last = 0

    def match(self, text: str) -> int:
        """Characters of the longest prefix of ``text`` in the tree."""
        node, i = self.root, 0
        while i < len(text):
            child = node.children.get(text[i])
            if child is None:
                break
            common = _common(child.label, text, i)
            i += common
            if common < len(child.label):
                break
            node = child
        return i

    def insert(self, text: str) -> None:
        """Add ``text`` (marking its path as just used)."""
        now = self._last = next(self._clock)
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
                node.children[text[i]] = middle
                child.label = child.label[common:]
                child.parent = middle
                middle.children[child.label[0]] = child
                child = middle
            child.used = now
            node = child
            i += common

    def evict(self, max_size: int) -> None:
        """Remove least recently used leaves until at most ``max_size`` characters remain,
        sparing the text inserted last (SGLang evicts every 30 s, never the request it is
        routing)."""
        while self.size > max_size:
            leaves = [
                n
                for n in self._nodes()
                if not n.children and n is not self.root and n.used != self._last
            ]
            if not leaves:
                return
            leaf = min(leaves, key=lambda n: n.used)
            assert leaf.parent is not None
            del leaf.parent.children[leaf.label[0]]
            self.size -= len(leaf.label)

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


class Balancer:
    """Chooses a replica for each request sent to the balancer.

    Args:
        policy: ``"round-robin"``, ``"least-loaded"`` or ``"prefix-aware"``.
        replicas: how many replicas there are.
        cache_threshold, balance_abs_threshold, balance_rel_threshold, max_tree_size: the
            prefix-aware policy's settings (SGLang router's defaults).

    Example:
        >>> b = Balancer("round-robin", 3)
        >>> [b.choose("any text", [0, 0, 0]) for _ in range(4)]
        [0, 1, 2, 0]
    """

    def __init__(
        self,
        policy: Policy,
        replicas: int,
        *,
        cache_threshold: float = CACHE_THRESHOLD,
        balance_abs_threshold: int = BALANCE_ABS_THRESHOLD,
        balance_rel_threshold: float = BALANCE_REL_THRESHOLD,
        max_tree_size: int = MAX_TREE_SIZE,
    ) -> None:
        if policy not in POLICIES:
            known = ", ".join(POLICIES)
            raise ValueError(f"balancer policy must be one of {known}; got {policy!r}")
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        self.policy = policy
        self.replicas = replicas
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self.max_tree_size = max_tree_size
        self.trees = [RadixTree() for _ in range(replicas)]
        self._next = 0
        self.decisions: dict[str, int] = {}

    def reset(self) -> None:
        """Forget every prefix the cache-aware policy has seen (its trees start empty)."""
        self.trees = [RadixTree() for _ in range(self.replicas)]

    def choose(self, text: str, loads: Sequence[int]) -> int:
        """The replica for a request with prompt ``text``, given each replica's load."""
        if self.policy == "round-robin":
            chosen = self._next % self.replicas
            self._next += 1
            return self._count("round-robin", chosen)
        if self.policy == "least-loaded":
            return self._count("least-loaded", _least(loads))
        high, low = max(loads), min(loads)
        imbalanced = (
            high - low > self.balance_abs_threshold and high > self.balance_rel_threshold * low
        )
        if imbalanced:
            chosen, why = _least(loads), "imbalanced: least-loaded"
        else:
            matches = [tree.match(text) for tree in self.trees]
            best = max(range(self.replicas), key=lambda i: (matches[i], -loads[i], -i))
            rate = matches[best] / len(text) if text else 0.0
            if rate > self.cache_threshold:
                chosen, why = best, "prefix match"
            else:
                chosen = min(range(self.replicas), key=lambda i: (self.trees[i].size, i))
                why = "smallest tree"
        tree = self.trees[chosen]
        tree.insert(text)
        tree.evict(self.max_tree_size)
        return self._count(why, chosen)

    def _count(self, why: str, chosen: int) -> int:
        self.decisions[why] = self.decisions.get(why, 0) + 1
        return chosen


def _least(loads: Sequence[int]) -> int:
    return min(range(len(loads)), key=lambda i: (loads[i], i))
