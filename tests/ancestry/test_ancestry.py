"""The laws of ancestry values (see alto/ancestry/ancestry.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import alto.ancestry
from alto.ancestry import (
    INDEX,
    PARENT,
    ROOT,
    child,
    child_index,
    child_of,
    format_ancestry,
    hops,
    index,
    is_prefix,
    key_length,
    level,
    parent,
    parent_key,
    prefix,
    prefix_key,
    root,
    root_of,
)

splits = st.sampled_from(["claims", "queries", "sections", "chunks"])
hop_lists = st.lists(st.tuples(splits, st.integers(0, 10_000)), max_size=6)


def build(r: int, path: list[tuple[str, int]]) -> tuple:
    a = root(r)
    for s, i in path:
        a = child(a, s, i)
    return a


@given(st.integers(0, 10**6), hop_lists, splits, st.integers(0, 10**6))
def test_child_then_parent_is_identity(r, path, s, i):
    a = build(r, path)
    assert child_of(a)((s, i)) == child(a, s, i)
    assert parent(child(a, s, i)) == parent_key(child(a, s, i)) == a
    assert level(child(a, s, i)) == level(a) + 1
    assert index(child(a, s, i)) == child_index(child(a, s, i)) == i
    assert root_of(child(a, s, i)) == root_of(a) == r
    c = child(a, s, i)
    assert (c[ROOT], c[PARENT], c[INDEX]) == (root_of(c), parent_key(c), child_index(c))
    assert hops(child(a, s, i)) == hops(a) + ((s, i),)


@given(st.integers(0, 10**6), hop_lists)
def test_prefixes(r, path):
    a = build(r, path)
    assert level(a) == len(path)
    assert len(a) == key_length(level(a))
    assert root_of(a) == r
    assert prefix(a, level(a)) == a
    assert prefix(a, 0) == root(r)
    for k in range(level(a) + 1):
        assert is_prefix(prefix(a, k), a)
        assert level(prefix(a, k)) == k
        assert prefix_key(k)(a) == prefix(a, k)
    assert hops(a) == tuple(path)


@given(st.integers(0, 50), hop_lists, st.integers(0, 50), hop_lists)
def test_equal_and_hash_exactly_when_root_and_hops_equal(r1, p1, r2, p2):
    a, b = build(r1, p1), build(r2, p2)
    assert (a == b) == (r1 == r2 and p1 == p2)
    if a == b:
        assert hash(a) == hash(b)


def test_siblings_and_cousins_are_not_prefixes():
    a = child(root(0), "claims", 1)
    assert not is_prefix(child(root(0), "claims", 2), a)
    assert not is_prefix(root(1), a)
    assert not is_prefix(child(a, "q", 0), a)


def test_root_has_no_parent_or_index():
    with pytest.raises(ValueError, match="no parent"):
        parent(root(3))
    with pytest.raises(ValueError, match="no child index"):
        index(root(3))
    with pytest.raises(ValueError, match="outside"):
        prefix(root(3), 1)


def test_format():
    a = child(child(root(3), "claims", 2), "queries", 0)
    assert format_ancestry(a) == "root 3 > claims[2] > queries[0]"


def test_a_root_is_level_0_and_its_own_root():
    assert level(root(7)) == 0 and root_of(root(7)) == 7 and key_length(0) == 1


def test_the_laws_cover_every_ancestry_operation():
    """Every function of ``alto.ancestry`` the runtime may call is under a law above."""
    from alto.ancestry import ancestry

    operations = {
        name for name in alto.ancestry.__all__
        if callable(getattr(ancestry, name)) and name not in {"Ancestry", "Hop"}
    }
    lawful = {
        "child", "child_index", "child_of", "format_ancestry", "hops", "index", "is_prefix",
        "key_length", "level", "parent", "parent_key", "prefix", "prefix_key", "root", "root_of",
    }
    assert operations == lawful
