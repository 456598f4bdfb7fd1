"""The invoker's one retry helper, alone: every kind of call (value, split, batch) uses it."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import alto
from alto.runtime.invoke import STOPPED, ArgumentError, BatchShapeError, Failure, Invoker
from alto.runtime.metrics import RunStats
from alto.runtime.run import RunState

pytestmark = pytest.mark.anyio


class Flaky(Exception):
    pass


class Other(Exception):
    pass


def invoker_for(stage: alto.Stage) -> tuple[Invoker, RunState]:
    @alto.flow
    def f(x: Any):
        return stage(x)

    run = RunState(f.plan, lambda result: None, RunStats())
    node = f.plan.nodes[0]
    return Invoker(node, run, run.stats.stages[node.name]), run


@alto.stage(retries=2, retry_on=Flaky, retry_backoff=0.001)
async def two_retries(x: int) -> int:
    return x


class Tries:
    """A call that fails with ``errors`` in turn, then returns its argument."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self, args: Any) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return args


async def test_a_retry_that_succeeds_returns_its_result():
    invoker, _ = invoker_for(two_retries)
    again = Tries()
    assert await invoker.retry(Flaky("first"), again, 7, root=0) == 7
    assert again.calls == 1 and invoker.stats.retries == 1


async def test_retries_are_bounded_and_the_last_error_is_kept():
    invoker, _ = invoker_for(two_retries)
    last = Flaky("third")
    again = Tries(Flaky("second"), last)
    outcome = await invoker.retry(Flaky("first"), again, 7, root=0)
    assert outcome == Failure(last, 3)  # the first try and two retries
    assert again.calls == 2 and invoker.stats.retries == 2


@pytest.mark.parametrize(
    "error", [Other("not in retry_on"), ArgumentError("bad input"), BatchShapeError("2 for 3")]
)
async def test_errors_that_are_not_retried(error):
    invoker, _ = invoker_for(two_retries)
    again = Tries()
    assert await invoker.retry(error, again, 7, root=0) == Failure(error, 1)
    assert again.calls == 0 and invoker.stats.retries == 0


async def test_a_retry_that_fails_otherwise_stops_there():
    invoker, _ = invoker_for(two_retries)
    other = Other("then this")
    again = Tries(other)
    assert await invoker.retry(Flaky("first"), again, 7, root=0) == Failure(other, 2)


async def test_no_retry_once_it_is_not_allowed():
    invoker, _ = invoker_for(two_retries)
    again = Tries()
    outcome = await invoker.retry(Flaky("first"), again, 7, root=0, allowed=lambda: False)
    assert outcome == Failure(outcome.error, 1) and again.calls == 0


async def test_a_root_that_gets_its_outcome_during_the_backoff_stops_the_retries():
    @alto.stage(retries=3, retry_backoff=5.0)
    async def slow_backoff(x: int) -> int:
        return x

    invoker, run = invoker_for(slow_backoff)
    run.start(0)
    again = Tries()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def finish_soon() -> None:
                await anyio.sleep(0.01)
                run.cancel(0)

            tg.start_soon(finish_soon)
            outcome = await invoker.retry(Flaky("first"), again, 7, root=0)
    assert outcome is STOPPED and again.calls == 0


async def test_a_root_that_already_has_its_outcome_is_not_retried():
    invoker, run = invoker_for(two_retries)
    run.start(0)
    run.cancel(0)
    again = Tries()
    assert await invoker.retry(Flaky("first"), again, 7, root=0) is STOPPED
    assert again.calls == 0


async def test_a_batch_retries_without_a_root():
    invoker, _ = invoker_for(two_retries)
    again = Tries(Flaky("second"))
    assert await invoker.retry(Flaky("first"), again, [1, 2]) == [1, 2]
    assert again.calls == 2
