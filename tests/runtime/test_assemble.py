"""The assembler alone: records in, calls out, for gathers, joins and broadcasts.

A gather's group completes in any order of its children and its close, with no children
at all, with a count learned after every child, and with tombstones among its children.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import alto
from alto import Gather, Split
from alto.ancestry import child, root
from alto.runtime.assemble import Assembler
from alto.runtime.records import DROPPED, Close


@alto.stage
async def parts(n: int) -> Split[int]:
    for i in range(n):
        yield i


@alto.stage
async def total(xs: Gather[int]) -> int:
    return sum(xs)


@alto.stage
async def pair(a: int, b: int, c: str) -> str:
    return f"{a}{b}{c}"


@alto.stage
async def joined(xs: Gather[str]) -> str:
    return "".join(xs)


@alto.stage
async def double(x: int) -> int:
    return 2 * x


@alto.flow
def summed(n: int):
    return total(parts(n))


@alto.flow
def paired(n: int, c: str):
    p = parts(n)
    return joined(pair(p, double(p), c))


def gather_of(settled: set[int] | None = None) -> Assembler:
    return Assembler(summed.plan.node("total"), settled if settled is not None else set())


def kid(r: int, i: int, value: Any) -> tuple:
    return (child(root(r), "parts", i), value)


class Feed:
    """Feeds records one at a time, keeping what comes out."""

    def __init__(self, assembler: Assembler) -> None:
        self.assembler = assembler
        self.out: list[Any] = []
        self.ready: list[Any] = []

    def __call__(self, port: int, *records: Any) -> None:
        self.assembler.accept(port, list(records), self.out, self.ready)


@given(st.integers(0, 12).flatmap(lambda n: st.permutations(list(range(n)) + ["close"])))
def test_a_group_completes_whatever_the_order_of_its_children_and_close(order):
    n = len(order) - 1
    feed = Feed(gather_of())
    for item in order:
        assert feed.ready == []  # nothing fires before the last record
        feed(0, Close(root(0), n) if item == "close" else kid(0, item, item * 10))
    assert feed.ready == [(root(0), ([i * 10 for i in range(n)],))]
    assert feed.assembler.pending() == 0 and feed.out == []


def test_an_empty_split_gathers_an_empty_list():
    feed = Feed(gather_of())
    feed(0, Close(root(3), 0))
    assert feed.ready == [(root(3), ([],))]


def test_the_count_learned_after_every_child():
    feed = Feed(gather_of())
    feed(0, kid(0, 1, "b"), kid(0, 0, "a"))
    assert feed.ready == [] and feed.assembler.pending() == 1
    feed(0, Close(root(0), 2))
    assert feed.ready == [(root(0), (["a", "b"],))]


def test_groups_of_different_parents_interleave():
    feed = Feed(gather_of())
    feed(0, kid(0, 0, "a0"), kid(1, 0, "b0"), Close(root(1), 2), kid(0, 1, "a1"))
    feed(0, Close(root(0), 2))
    assert feed.ready == [(root(0), (["a0", "a1"],))]
    feed(0, kid(1, 1, "b1"))
    assert feed.ready[-1] == (root(1), (["b0", "b1"],))


def test_dropped_children_count_but_are_left_out():
    feed = Feed(gather_of())
    feed(0, kid(0, 0, "a"), kid(0, 1, DROPPED), kid(0, 2, "c"), Close(root(0), 3))
    assert feed.ready == [(root(0), (["a", "c"],))]


def test_a_parent_that_was_dropped_before_its_split_gathers_a_tombstone():
    feed = Feed(gather_of())
    feed(0, Close(root(0), 0, dropped=True))
    assert feed.ready == [] and feed.out == [(root(0), DROPPED)]


def test_records_of_a_root_with_an_outcome_are_ignored_and_its_state_dropped():
    settled: set[int] = set()
    feed = Feed(gather_of(settled))
    feed(0, kid(0, 0, "a"), kid(1, 0, "b"))
    assert feed.assembler.pending() == 2
    settled.add(0)
    feed.assembler.drop_root(0)
    assert feed.assembler.pending() == 1
    feed(0, kid(0, 1, "late"), Close(root(0), 2))
    assert feed.ready == [] and feed.out == []


def test_a_join_fires_when_both_sides_and_the_broadcast_are_there():
    node = paired.plan.node("pair")
    modes = [p.mode.name for p in node.ports]
    assert modes == ["SAME", "SAME", "BROADCAST"]
    feed = Feed(Assembler(node, set()))
    a = child(root(0), "parts", 1)
    feed(0, (a, 1))
    feed(1, (a, 2))
    assert feed.ready == []  # waits for the broadcast value of its root
    feed(2, (root(0), "!"))
    assert feed.ready == [(a, (1, 2, "!"))]
    b = child(root(0), "parts", 0)
    feed(1, (b, 0))
    feed(0, (b, 0))  # the broadcast value is known now: fires at once
    assert feed.ready[-1] == (b, (0, 0, "!"))


def test_a_tombstone_on_one_side_of_a_join_makes_a_tombstone():
    feed = Feed(Assembler(paired.plan.node("pair"), set()))
    a = child(root(0), "parts", 0)
    feed(2, (root(0), "!"))
    feed(0, (a, DROPPED))
    feed(1, (a, 5))
    assert feed.ready == [] and feed.out == [(a, DROPPED)]


@pytest.mark.parametrize("node_name", ["double"])
def test_a_single_input_stage_keeps_no_state(node_name):
    assembler = Assembler(paired.plan.node(node_name), set())
    assert assembler.simple
    feed = Feed(assembler)
    a = child(root(0), "parts", 0)
    feed(0, (a, 1), Close(root(0), 1))
    assert feed.ready == [(a, 1)] and feed.out == [Close(root(0), 1)]
