"""Property tests: split -> map -> gather at any depth equals a plain-Python reference.

For depth 1-3, replicas 1-8, random delays (so random completion orders) and
empty splits, the flow's output equals the reference, and every leaf is
mapped exactly once: no fragment lost or duplicated. Hypothesis explores the
local runtime; a few fixed cases check every backend the same way.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Awaitable, Callable

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import alto
from alto import Gather, Split


def nested(depth: int) -> st.SearchStrategy[Any]:
    leaf = st.integers(-1000, 1000)
    strategy: st.SearchStrategy[Any] = leaf
    for _ in range(depth):
        strategy = st.lists(strategy, max_size=5)
    return strategy


@st.composite
def cases(draw: st.DrawFn) -> tuple[int, int, int, list[Any], bool]:
    depth = draw(st.integers(1, 3))
    replicas = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    inputs = draw(st.lists(nested(depth), min_size=1, max_size=6))
    with_join = draw(st.booleans())
    return depth, replicas, seed, inputs, with_join


def leaves(value: Any) -> list[int]:
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)]
    return [value]


def reference(value: Any, offset: int, with_join: bool) -> Any:
    if isinstance(value, list):
        return [reference(v, offset, with_join) for v in value]
    mapped = value * 2 + 1
    return (mapped, value + offset) if with_join else mapped


def build_flow(
    depth: int, replicas: int, seed: int, with_join: bool, seen: Callable[[int], Awaitable[Any]]
) -> alto.Flow:
    """The flow under test; ``seen`` is awaited with every leaf the map stage receives."""
    rng = random.Random(seed)

    async def jitter() -> None:
        r = rng.random()
        if r < 0.3:
            await anyio.sleep(r * 0.002)
        elif r < 0.6:
            await anyio.lowlevel.checkpoint()

    splits = []
    gathers = []
    for level in range(depth):

        async def split(xs: list[Any]) -> Split[Any]:
            for x in xs:
                await jitter()
                yield x

        async def gather(xs: Gather[Any]) -> list[Any]:
            await jitter()
            return list(xs)

        splits.append(alto.stage(name=f"split{level}", replicas=replicas)(split))
        gathers.append(alto.stage(name=f"gather{level}", replicas=replicas)(gather))

    @alto.stage(replicas=replicas)
    async def mapped(x: int) -> int:
        await seen(x)
        await jitter()
        return x * 2 + 1

    @alto.stage(replicas=replicas)
    async def pair(m: int, x: int, offset: int) -> tuple[int, int]:
        await jitter()
        return (m, x + offset)

    @alto.flow
    def f(value: list[Any], offset: int):
        h = value
        for s in splits:
            h = s(h)
        out = pair(mapped(h), h, offset) if with_join else mapped(h)
        for g in reversed(gathers):
            out = g(out)
        return out

    return f


def recorder(seen: list[int]) -> Callable[[int], Awaitable[None]]:
    async def record(x: int) -> None:
        seen.append(x)

    return record


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_split_map_gather_equals_reference(case):
    depth, replicas, seed, inputs, with_join = case
    seen: list[int] = []
    f = build_flow(depth, replicas, seed, with_join, recorder(seen))
    args = [(value, i * 10) for i, value in enumerate(inputs)]
    out = anyio.run(f.run, args)
    assert out == [reference(v, i * 10, with_join) for i, v in enumerate(inputs)]
    assert Counter(seen) == Counter(x for v in inputs for x in leaves(v))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, 9), max_size=8), min_size=1, max_size=20),
       st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_identity_round_trip_with_stream(inputs, replicas, seed):
    seen: list[int] = []
    f = build_flow(1, replicas, seed, False, recorder(seen))

    async def collect() -> dict[int, Any]:
        return {r.index: r.unwrap() async for r in f.stream([(v, 0) for v in inputs])}

    out = anyio.run(collect)
    assert out == {i: [x * 2 + 1 for x in v] for i, v in enumerate(inputs)}


FIXED = [  # depth, replicas, seed, inputs, with_join
    (1, 3, 1, [[1, 2, 3], [], [4, -5], [6] * 5], False),
    (2, 2, 2, [[[1, 2], []], [[3], [4, 5, 6]], []], True),
    (3, 2, 3, [[[[1], [2, 3]], []], [[[4, 5, 6]], [[]]], [[[7]]]], True),
]


@pytest.mark.anyio
@pytest.mark.parametrize("case", FIXED, ids=["depth1", "depth2-join", "depth3-join"])
async def test_fixed_cases_equal_reference(backend, shared, case):
    depth, replicas, seed, inputs, with_join = case

    async def record(x: int) -> None:
        await shared.append("seen", x)

    f = build_flow(depth, replicas, seed, with_join, record)
    out = await f.run([(value, i * 10) for i, value in enumerate(inputs)], backend=backend)
    assert out == [reference(v, i * 10, with_join) for i, v in enumerate(inputs)]
    seen = await shared.get("seen", [])
    assert Counter(seen) == Counter(x for v in inputs for x in leaves(v))
