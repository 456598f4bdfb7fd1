"""Nested ancestry: where a fragment came from.

An ancestry is a plain tuple, chosen because it sits on the hot path of every
fragment: ``(root, split_1, i_1, split_2, i_2, ...)``. ``root`` is the index of
the root input; each following pair is one *hop*, the name of a split stage
and the child index it gave the fragment. A root input has the ancestry
``(root,)`` and depth 0; a fragment ``k`` splits deep has depth ``k``.

Laws (tested in ``tests/ancestry/test_ancestry.py``):

* ``parent(child(a, s, i)) == a``
* ``depth(child(a, s, i)) == depth(a) + 1`` and ``depth(root(r)) == 0``
* ``index(child(a, s, i)) == i``
* ``prefix(a, depth(a)) == a`` and ``prefix(a, 0) == root(root_of(a))``
* ``is_prefix(prefix(a, k), a)`` for every ``0 <= k <= depth(a)``
* ``hops(child(a, s, i)) == hops(a) + ((s, i),)``
* ancestries are hashable and equal exactly when their roots and hops are.

Joins key fragments on equal ancestry, broadcasts on an ancestry prefix and
gathers on the parent, so these few tuple operations are all the runtime
needs.
"""

from __future__ import annotations

from typing import TypeAlias

Ancestry: TypeAlias = tuple  # (root, split, index, split, index, ...)
Hop: TypeAlias = tuple[str, int]


def root(index: int) -> Ancestry:
    """The ancestry of root input ``index``."""
    return (index,)


def child(a: Ancestry, split: str, index: int) -> Ancestry:
    """The ancestry of child ``index`` that split stage ``split`` made of ``a``."""
    return a + (split, index)


def parent(a: Ancestry) -> Ancestry:
    """The ancestry one level up. A root has no parent."""
    if len(a) < 3:
        raise ValueError(f"root ancestry {a!r} has no parent")
    return a[:-2]


def depth(a: Ancestry) -> int:
    """How many splits deep the fragment is (0 for a root input)."""
    return len(a) >> 1


def root_of(a: Ancestry) -> int:
    """The index of the root input the fragment descends from."""
    return a[0]


def index(a: Ancestry) -> int:
    """The fragment's child index within its parent."""
    if len(a) < 3:
        raise ValueError(f"root ancestry {a!r} has no child index")
    return a[-1]


def prefix(a: Ancestry, level: int) -> Ancestry:
    """The ancestor of ``a`` at depth ``level`` (``a`` itself at its own depth)."""
    if not 0 <= level <= depth(a):
        raise ValueError(f"level {level} is outside 0..{depth(a)} for ancestry {a!r}")
    return a[: 1 + 2 * level]


def is_prefix(p: Ancestry, a: Ancestry) -> bool:
    """Whether ``p`` is ``a`` or one of its ancestors."""
    return len(p) <= len(a) and a[: len(p)] == p


def hops(a: Ancestry) -> tuple[Hop, ...]:
    """The ``(split stage, child index)`` hops from the root to ``a``."""
    return tuple(zip(a[1::2], a[2::2]))


def format_ancestry(a: Ancestry) -> str:
    """A readable form, e.g. ``root 3 > claims[2] > queries[0]``."""
    parts = [f"root {a[0]}"]
    parts += [f"{s}[{i}]" for s, i in zip(a[1::2], a[2::2])]
    return " > ".join(parts)
