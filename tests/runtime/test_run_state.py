"""The run context alone: outcomes of roots, failures, watched calls, deadlines, lineage."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

import alto
from alto import DeadlineExceeded, InputCancelled, InputError, StageError
from alto.ancestry import root
from alto.runtime.metrics import RunStats
from alto.runtime.records import DROPPED
from alto.runtime.run import RunState


@alto.stage
async def one(x: int) -> int:
    return x


@alto.stage
async def other(x: int) -> int:
    return -x


@alto.flow
def single(x: int):
    return one(x)


@alto.flow
def double(x: int):
    return one(x), other(x)


def state(flow: alto.Flow = single, **options: Any) -> tuple[RunState, list[alto.Result]]:
    results: list[alto.Result] = []
    return RunState(flow.plan, results.append, RunStats(), **options), results


def test_an_output_gives_its_root_an_outcome_once():
    run, results = state()
    assert run.start(0)
    run.output(root(0), 5, 0)
    run.output(root(0), 6, 0)  # the root has its outcome: ignored
    assert [(r.index, r.value, r.error) for r in results] == [(0, 5, None)]
    assert 0 in run.settled and run.in_flight == 0


def test_several_outputs_make_a_tuple_in_output_order():
    run, results = state(double)
    run.start(0)
    run.output(root(0), -1, 1)
    assert results == []
    run.output(root(0), 1, 0)
    assert results[0].value == (1, -1)


def test_a_failure_fails_its_root_without_dead_letters():
    run, results = state()
    run.start(0)
    error = StageError("one", root(0), ValueError("bad"))
    assert run.fail(error) is False  # no tombstone: the root has its outcome
    assert results[0].error is error and run.stats.stages["one"].errors == 1


def test_with_dead_letters_a_failure_becomes_a_tombstone():
    letters: list[Any] = []
    run, results = state(dead_letters=letters)
    run.start(0)
    error = StageError("one", root(0), ValueError("bad"))
    assert run.fail(error) is True
    assert letters == [error] and results == []
    run.output(root(0), DROPPED, 0)  # the tombstone reaches the sink: the root fails with it
    assert results[0].error is error


@pytest.mark.anyio
async def test_a_watched_call_is_cancelled_when_its_root_gets_an_outcome():
    run, _ = state()
    run.start(0)
    run.start(1)
    with anyio.CancelScope() as scope, anyio.CancelScope() as bystander:
        run.watch(0, scope)
        run.watch(1, bystander)
        run.unwatch(1, bystander)
        run.finish(0, 1, None)
        assert scope.cancel_called and not bystander.cancel_called
        await anyio.sleep(0)
    assert run.calls == {}


def test_cancelling_before_and_after_an_input_enters():
    run, results = state()
    assert run.cancel(1) is True  # not entered yet: cancelled when it does
    assert run.start(1) is False
    run.start(0)
    assert run.cancel(0) is True
    assert run.cancel(0) is False  # it has its outcome already
    assert [type(r.error) for r in sorted(results, key=lambda r: r.index)] == [
        InputCancelled, InputCancelled
    ]


def test_expire_fails_inputs_older_than_the_deadline_in_admission_order():
    from collections import deque

    run, results = state()
    run.admitted = deque()
    run.start(0)
    run.start(1)
    run.stats.root_start[0] -= 10  # entered ten seconds ago
    run.expire(5.0)
    assert [(r.index, type(r.error)) for r in results] == [(0, DeadlineExceeded)]
    assert 1 not in run.settled


def test_a_rejected_input_fails_alone():
    run, results = state()
    run.reject(InputError(2, "no"))
    assert results[0].index == 2 and isinstance(results[0].error, InputError)
    assert run.in_flight == 0


def test_a_call_site_reports_the_run_and_the_roots_submission_times():
    run, _ = state()
    before = time.monotonic()
    run.start(0)
    after = time.monotonic()
    info = run.site("one").info((root(0),))
    assert info.run == run.id and info.stage == "one"
    assert info.roots == (0,) and before <= info.submitted[0] <= after
    assert state()[0].id != run.id
