"""The invoker alone: timeouts name their stage, a failing batch is bisected to its culprits.

These drive :class:`~alto.runtime.invoke.Invoker` directly (the helper every backend runs
calls through), so the number and shape of the calls a bisection makes are exact.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import alto
from alto import StageError, StageTimeout
from alto.runtime.invoke import Invoker
from alto.runtime.metrics import RunStats
from alto.runtime.records import DROPPED
from alto.runtime.run import RunState

pytestmark = pytest.mark.anyio


class Box:
    """An outbox that keeps everything it is given."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.sent: list[Any] = []

    def due(self, elapsed: float) -> bool:
        return False

    async def flush(self) -> None:
        self.sent.extend(self.records)
        self.records = []

    def all(self) -> list[Any]:
        return self.sent + self.records


def invoker_for(
    stage: alto.Stage, dead_letters: list[Any] | None = None, outcomes: list[Any] | None = None
) -> Invoker:
    """An invoker of ``stage`` in a one-stage flow; root outcomes go to ``outcomes``."""

    @alto.flow
    def f(x: Any):
        return stage(x)

    sink = outcomes if outcomes is not None else []
    run = RunState(f.plan, sink.append, RunStats(), dead_letters=dead_letters)
    node = f.plan.nodes[0]
    return Invoker(node, run, run.stats.stages[node.name])


def batch_of(values: list[str]) -> list[tuple[tuple, Any]]:
    """One fragment per root: root ``i`` carries ``values[i]``."""
    return [((i,), v) for i, v in enumerate(values)]


async def test_one_culprit_fails_alone_and_the_rest_deliver():
    calls: list[list[str]] = []

    @alto.stage(batch=8)
    async def shout(words: list[str]) -> list[str]:
        calls.append(list(words))
        if "bad" in words:
            msg = "cannot take 'bad'"
            raise ValueError(msg)
        return [w.upper() for w in words]

    outcomes: list[alto.Result[Any]] = []
    invoker = invoker_for(shout, outcomes=outcomes)
    words = ["a", "b", "c", "d", "e", "bad", "g", "h"]
    box = Box()
    await invoker.batch(batch_of(words), box)

    assert sorted(box.all()) == sorted(((i,), w.upper()) for i, w in enumerate(words) if w != "bad")
    (failed,) = outcomes  # only the culprit's root has an outcome yet: a failure
    error = failed.error
    assert isinstance(error, StageError)
    assert (error.stage, error.ancestry, error.index) == ("shout", (5,), 5)
    assert error.bisected == 8 and error.attempts == 1 and error.inputs == {"words": "bad"}
    assert isinstance(error.cause, ValueError)
    assert "bisecting a batch of 8" in str(error) and "cannot take 'bad'" in str(error)
    assert "(root 5)" in str(error)
    # 8, then its halves; the failing half in halves, down to the culprit alone (halves
    # that succeed are not split further)
    assert calls[0] == words and calls[1:] == [
        ["a", "b", "c", "d"], ["e", "bad", "g", "h"], ["e", "bad"], ["e"], ["bad"], ["g", "h"]
    ]
    stats = invoker.stats
    assert stats.bisections == 6 and stats.calls == 7 and stats.fragments_out == 7
    assert stats.errors == 1


async def test_retries_apply_to_every_call_of_a_bisection():
    calls: list[list[str]] = []

    @alto.stage(batch=4, retries=1, retry_on=ConnectionError, retry_backoff=0.0)
    async def fetch(keys: list[str]) -> list[str]:
        calls.append(list(keys))
        if "down" in keys:
            msg = "server down"
            raise ConnectionError(msg)
        return keys

    letters: list[StageError] = []
    invoker = invoker_for(fetch, dead_letters=letters)
    box = Box()
    await invoker.batch(batch_of(["x", "down", "y", "z"]), box)

    # each call that holds the culprit is tried twice: the batch, its half, the culprit alone
    assert calls == [
        ["x", "down", "y", "z"], ["x", "down", "y", "z"], ["x", "down"], ["x", "down"],
        ["x"], ["down"], ["down"], ["y", "z"],
    ]
    (error,) = letters
    assert error.ancestry == (1,) and error.attempts == 2 and error.bisected == 4
    assert "after 2 attempts" in str(error)
    assert invoker.stats.retries == 3 and invoker.stats.bisections == 4
    assert sorted(box.all()) == [((0,), "x"), ((1,), DROPPED), ((2,), "y"), ((3,), "z")]


async def test_every_fragment_failing_is_reported_once_each():
    @alto.stage(batch=4)
    async def never(items: list[int]) -> list[int]:
        msg = "broken model"
        raise RuntimeError(msg)

    letters: list[StageError] = []
    invoker = invoker_for(never, dead_letters=letters)
    box = Box()
    await invoker.batch(batch_of([10, 11, 12, 13]), box)

    assert sorted(e.ancestry for e in letters) == [(0,), (1,), (2,), (3,)]
    assert all(e.bisected == 4 and isinstance(e.cause, RuntimeError) for e in letters)
    assert sorted(e.inputs["items"] for e in letters) == [10, 11, 12, 13]
    assert sorted(box.all()) == [((i,), DROPPED) for i in range(4)]
    assert invoker.stats.bisections == 6 and invoker.stats.calls == 7


async def test_a_batch_of_one_is_not_bisected():
    @alto.stage(batch=4)
    async def never(items: list[int]) -> list[int]:
        msg = "broken"
        raise RuntimeError(msg)

    letters: list[StageError] = []
    invoker = invoker_for(never, dead_letters=letters)
    await invoker.batch(batch_of([1]), Box())
    (error,) = letters
    assert error.bisected is None and "bisect" not in str(error)
    assert invoker.stats.bisections == 0


async def test_bisection_skips_roots_that_got_their_outcome_meanwhile():
    calls: list[list[str]] = []

    @alto.stage(batch=4)
    async def shout(words: list[str]) -> list[str]:
        calls.append(list(words))
        if "bad" in words:
            invoker.run.settled.add(3)  # root 3 fails elsewhere while this batch runs
            msg = "bad"
            raise ValueError(msg)
        return [w.upper() for w in words]

    invoker = invoker_for(shout)
    await invoker.batch(batch_of(["bad", "b", "c", "d"]), Box())
    assert calls == [["bad", "b", "c", "d"], ["bad", "b"], ["bad"], ["b"], ["c"]]


async def test_timeout_says_which_stage_and_how_long():
    @alto.stage(timeout=0.01)
    async def stuck(x: str) -> str:
        await anyio.sleep(10)
        return x

    letters: list[StageError] = []
    invoker = invoker_for(stuck, dead_letters=letters)
    invoker.ema = 0.0  # the unguarded path
    await invoker.value((0,), "x", Box())
    invoker.ema = 1.0  # the guarded path (slow stages)
    await invoker.value((1,), "y", Box())
    for error in letters:
        assert isinstance(error.cause, StageTimeout) and isinstance(error.cause, TimeoutError)
        assert (error.cause.stage, error.cause.timeout) == ("stuck", 0.01)
        assert "stage 'stuck' timed out after 0.01 s" in str(error)
    assert len(letters) == 2


async def test_a_timeout_error_raised_by_the_stage_itself_is_not_a_stage_timeout():
    @alto.stage(timeout=5)
    async def own(x: str) -> str:
        msg = "the service said so"
        raise TimeoutError(msg)

    letters: list[StageError] = []
    invoker = invoker_for(own, dead_letters=letters)
    await invoker.value((0,), "x", Box())
    (error,) = letters
    assert type(error.cause) is TimeoutError and "the service said so" in str(error)
