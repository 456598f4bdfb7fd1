"""Nested ancestry: where a fragment came from.

An :data:`Ancestry` is a plain tuple, chosen because it sits on the hot path of
every fragment: ``(root, split_1, i_1, split_2, i_2, ...)``. ``root`` is the
index of the root input; each following pair is one *hop*, the name of a split
stage and the child index it gave the fragment. A root input has the ancestry
``(root,)`` and level 0; a fragment ``k`` splits deep is at level ``k``.

Every operation the runtime makes on an ancestry is one of the functions here
(it never slices the tuple itself). For the innermost loops, which run once
per fragment, the positions are named too (:data:`ROOT`, :data:`PARENT`,
:data:`INDEX`: ``a[ROOT]`` is ``root_of(a)`` without a call), and the getters
:func:`prefix_key` returns and the makers :func:`child_of` returns are C-level
callables (``operator.itemgetter``, ``functools.partial``).

Laws (tested in ``tests/ancestry/test_ancestry.py``):

* ``child_of(a)((s, i)) == child(a, s, i)``
* ``parent(child(a, s, i)) == parent_key(child(a, s, i)) == a``
* ``level(child(a, s, i)) == level(a) + 1`` and ``level(root(r)) == 0``
* ``index(child(a, s, i)) == child_index(child(a, s, i)) == i``
* ``root_of(child(a, s, i)) == root_of(a)`` and ``root_of(root(r)) == r``
* ``a[ROOT] == root_of(a)``, ``a[PARENT] == parent_key(a)``, ``a[INDEX] == child_index(a)``
* ``len(a) == key_length(level(a))``
* ``prefix(a, level(a)) == a`` and ``prefix(a, 0) == root(root_of(a))``
* ``prefix_key(k)(a) == prefix(a, k)`` for every ``0 <= k <= level(a)``
* ``is_prefix(prefix(a, k), a)`` for every ``0 <= k <= level(a)``
* ``hops(child(a, s, i)) == hops(a) + ((s, i),)``
* ancestries are hashable and equal exactly when their roots and hops are.

Joins key fragments on equal ancestry, broadcasts on an ancestry prefix and
gathers on the parent, so these few tuple operations are all the runtime
needs.
"""

from __future__ import annotations

from functools import partial
from operator import add, itemgetter
from typing import Any, Callable, Final, TypeAlias, cast

from alto._errors import UsageError

# (root, split, index, split, index, ...): the root's index, then (split name, child index)
# pairs, which a tuple type cannot spell more closely than ``int | str`` items
Ancestry: TypeAlias = tuple[int, *tuple[int | str, ...]]
Hop: TypeAlias = tuple[str, int]


def root(index: int) -> Ancestry:
    """The ancestry of root input ``index``."""
    return (index,)


def child(a: Ancestry, split: str, index: int) -> Ancestry:
    """The ancestry of child ``index`` that split stage ``split`` made of ``a``."""
    return a + (split, index)


def child_of(a: Ancestry) -> Callable[[Hop], Ancestry]:
    """A function of a hop ``(split, index)`` that gives that child of ``a``.

    What a split makes once per call and calls once per child (a ``functools.partial`` of
    ``operator.add``, so a call costs what the tuple concatenation costs).
    """
    return partial(add, a)


ROOT: Final = 0
"""Where an ancestry keeps its root's index: ``a[ROOT] == root_of(a)``."""

PARENT = slice(None, -2)
"""The part of an ancestry that is its parent's: ``a[PARENT] == parent_key(a)``."""

INDEX = -1
"""Where an ancestry keeps its child index: ``a[INDEX] == child_index(a)``."""

root_of: Callable[[Ancestry], int] = itemgetter(ROOT)
"""``root_of(a)``: the index of the root input the fragment descends from."""

parent_key: Callable[[Ancestry], Ancestry] = itemgetter(PARENT)
"""``parent_key(a)``: the ancestry one level up, the key a gather groups ``a`` under.
Unchecked (the hot-path form of :func:`parent`): ``a`` must not be a root."""

child_index: Callable[[Ancestry], int] = itemgetter(INDEX)
"""``child_index(a)``: the fragment's child index within its parent. Unchecked (the
hot-path form of :func:`index`): ``a`` must not be a root."""


def parent(a: Ancestry) -> Ancestry:
    """The ancestry one level up. A root has no parent."""
    if len(a) < 3:
        msg = f"root ancestry {a!r} has no parent"
        raise UsageError(msg)
    return parent_key(a)


def level(a: Ancestry) -> int:
    """How many splits deep the fragment is (0 for a root input)."""
    return len(a) >> 1


_level = level


def key_length(level: int) -> int:
    """The length of an ancestry at ``level``: how many items key a fragment there."""
    return 1 + 2 * level


def index(a: Ancestry) -> int:
    """The fragment's child index within its parent."""
    if len(a) < 3:
        msg = f"root ancestry {a!r} has no child index"
        raise UsageError(msg)
    return child_index(a)


def prefix(a: Ancestry, level: int) -> Ancestry:
    """The ancestor of ``a`` at level ``level`` (``a`` itself at its own level)."""
    if not 0 <= level <= _level(a):
        msg = f"level {level} is outside 0..{_level(a)} for ancestry {a!r}"
        raise UsageError(msg)
    # ``level >= 0`` holds here, so the slice keeps the root index: an ancestry again
    return cast(Ancestry, a[: key_length(level)])


def prefix_key(level: int) -> Callable[[Ancestry], Ancestry]:
    """A function of an ancestry (at ``level`` or deeper) that gives its ancestor at ``level``.

    What a broadcast from that level is keyed on. Unchecked.
    """
    return itemgetter(slice(0, key_length(level)))


def is_prefix(p: Ancestry, a: Ancestry) -> bool:
    """Whether ``p`` is ``a`` or one of its ancestors."""
    return len(p) <= len(a) and a[: len(p)] == p


def hops(a: Ancestry) -> tuple[Hop, ...]:
    """The ``(split stage, child index)`` hops from the root to ``a``."""
    items: tuple[Any, ...] = a  # split names at odd positions, child indexes at even ones
    return tuple(zip(items[1::2], items[2::2]))


def format_ancestry(a: Ancestry) -> str:
    """A readable form, e.g. ``root 3 > claims[2] > queries[0]``."""
    items: tuple[Any, ...] = a  # split names at odd positions, child indexes at even ones
    parts = [f"root {a[0]}"]
    parts += [f"{s}[{i}]" for s, i in zip(items[1::2], items[2::2])]
    return " > ".join(parts)
