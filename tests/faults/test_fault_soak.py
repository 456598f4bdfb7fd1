"""Soak: 2,000 roots through three levels, with injected failures, random delays and
cancellations, compared root by root with a plain-Python reference.

    (root, sections) -> sections (split) -> items (split, root broadcast)
        -> work (item joined with its section, root broadcast; fails 1% of items)
        -> square (same items) -> combine (join of work and square)
        -> section_total (gather per section, joined with the section; fails 1%)
        -> label (per section) -> section_pair (join at level 1)
        -> root_total (gather per root, root broadcast)

``items`` fails for 1% of sections after yielding part of its children. Whether a fragment
fails, sleeps, and how many children a parent has are all decided by a seeded hash of the
fragment's position, so the reference knows every root's answer and every failure that can
hit it. About 2% of the roots are cancelled with ``ResultStream.cancel`` while the run goes.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import anyio
import pytest
from faultkit import assert_released, fault, snapshot

import alto
from alto import Gather, InputCancelled, Split, StageError

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SEED = 20_240_611
ROOTS = 2_000
FAIL = 0.01


def chance(*key: Any) -> float:
    """A number in [0, 1) fixed by the seed and ``key`` (stable across runs and processes)."""
    digest = hashlib.blake2b(repr((SEED, *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def n_items(root: int, section: int) -> int:
    return int(chance("items", root, section) * 7)  # 0-6: empty sections too


class Injected(RuntimeError):
    """A failure the test injected; ``key`` says where."""

    def __init__(self, key: tuple[Any, ...]) -> None:
        super().__init__(f"injected failure at {key}")
        self.key = key


# where failures are injected: (stage, root, section[, item])
def fails_items(root: int, section: int) -> bool:
    return chance("fail-items", root, section) < FAIL


def fails_work(root: int, section: int, item: int) -> bool:
    return chance("fail-work", root, section, item) < FAIL


def fails_total(root: int, section: int) -> bool:
    return chance("fail-total", root, section) < FAIL


async def jitter(*key: Any) -> None:
    r = chance("delay", *key)
    if r < 0.03:
        await anyio.sleep(r / 10)  # up to 3 ms
    elif r < 0.3:
        await anyio.lowlevel.checkpoint()


@alto.stage(replicas=2)
async def sections(root: int, count: int) -> Split[int]:
    for s in range(count):
        await jitter("sections", root, s)
        yield s


@alto.stage(replicas=2)
async def items(section: int, root: int) -> Split[int]:
    n = n_items(root, section)
    for k in range(n):
        if k == n // 2 and fails_items(root, section):
            raise Injected(("items", root, section))
        yield k
    if n == 0 and fails_items(root, section):
        raise Injected(("items", root, section))


@alto.stage(replicas=4)
async def work(item: int, section: int, root: int) -> int:
    await jitter("work", root, section, item)
    if fails_work(root, section, item):
        raise Injected(("work", root, section, item))
    return root * 100 + section * 10 + item


@alto.stage(replicas=2)
async def square(item: int) -> int:
    return item * item


@alto.stage
async def combine(value: int, sq: int) -> int:
    return value + sq


@alto.stage(replicas=2)
async def section_total(values: Gather[int], section: int, root: int) -> int:
    if fails_total(root, section):
        raise Injected(("section_total", root, section))
    return sum(values) + section


@alto.stage
async def label(section: int) -> str:
    return f"s{section}"


@alto.stage
async def section_pair(total: int, name: str) -> tuple[str, int]:
    return name, total


@alto.stage(replicas=2)
async def root_total(pairs: Gather[tuple[str, int]], root: int) -> dict[str, Any]:
    return {"root": root, "sections": dict(pairs), "total": sum(t for _, t in pairs)}


@alto.flow
def soak(root: int, count: int):
    s = sections(root, count)
    i = items(s, root)
    per_item = combine(work(i, s, root), square(i))
    return root_total(section_pair(section_total(per_item, s, root), label(s)), root)


def count_of(root: int) -> int:
    return 1 + int(chance("sections", root) * 6)  # 1-6 sections


def reference(root: int) -> tuple[dict[str, Any] | None, set[tuple[Any, ...]]]:
    """The root's output in plain Python, or None and the failures that can hit it."""
    failures: set[tuple[Any, ...]] = set()
    per_section = {}
    for s in range(count_of(root)):
        n = n_items(root, s)
        if fails_items(root, s):
            failures.add(("items", root, s))
        made = n // 2 if fails_items(root, s) and n else n
        values = []
        for k in range(made):
            if fails_work(root, s, k):
                failures.add(("work", root, s, k))
            values.append(root * 100 + s * 10 + k + k * k)
        if fails_total(root, s):
            failures.add(("section_total", root, s))
        per_section[f"s{s}"] = sum(values) + s
    if failures:
        return None, failures
    return {"root": root, "sections": per_section, "total": sum(per_section.values())}, set()


@fault("2,000 roots, three levels, 1% injected failures, random delays, ~2% cancelled "
       "mid-run", where="stages only (seeded)",
       observed="every root gets exactly one outcome: the reference value, a StageError for "
       "one of its injected failures (stage, index, ancestry), or InputCancelled; nothing is "
       "left running", roots="exactly the roots with an injected failure or a cancel")
async def test_soak_every_root_gets_exactly_one_right_outcome() -> None:
    rng = random.Random(SEED)
    inputs = [(r, count_of(r)) for r in range(ROOTS)]
    to_cancel = rng.sample(range(ROOTS), ROOTS // 50)
    waves = {50: to_cancel[:10], 400: to_cancel[10:20], 900: to_cancel[20:30],
             1500: to_cancel[30:]}
    cancelled: set[int] = set()
    seen: dict[int, list[alto.Result[Any]]] = {}
    before = snapshot()
    with anyio.fail_after(120):
        async with soak.stream(inputs) as results:
            async for result in results:
                seen.setdefault(result.index, []).append(result)
                for index in waves.pop(len(seen), []):
                    if results.cancel(index):
                        cancelled.add(index)
        await assert_released(before)

    assert sorted(seen) == list(range(ROOTS)) and all(len(v) == 1 for v in seen.values())
    failed = ok = 0
    for root, (result,) in seen.items():
        expected, failures = reference(root)
        if root in cancelled:
            assert isinstance(result.error, InputCancelled) and result.error.index == root
        elif expected is not None:
            assert result.value == expected, root
            ok += 1
        else:
            err = result.error
            assert isinstance(err, StageError) and err.index == root, (root, err)
            assert isinstance(err.cause, Injected) and err.cause.key in failures, (root, err)
            stage, _, section, *item = err.cause.key
            assert err.stage == stage and err.ancestry[:3] == (root, "sections", section)
            tail = ("items", item[0]) if item else ()
            assert err.ancestry == (root, "sections", section, *tail)
            failed += 1
    # the seed gives a real mix: some cancels took effect, failures and successes abound
    assert len(cancelled) >= 10 and failed >= 100 and ok >= 1_300
