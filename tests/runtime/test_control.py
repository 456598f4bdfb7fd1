"""Stopping work early: deadlines, cancelling one input, failed siblings; input checks."""

from __future__ import annotations

import anyio
import pydantic
import pytest

import alto
from alto import Gather, Split

pytestmark = pytest.mark.anyio

# The first three tests watch stage calls through counters in ``shared`` (the stages
# may run in other processes): calls running, stopped (cancelled) and finished.


def sleepy_flow(calls) -> alto.Flow:
    @alto.stage
    async def parts(n: int) -> Split[int]:
        for i in range(n):
            yield i

    @alto.stage(replicas=8)
    async def nap(i: int) -> int:
        await calls.add("running")
        try:
            await anyio.sleep(0.001 if i == 0 else 30)
            await calls.add("finished")
            return i
        except anyio.get_cancelled_exc_class():
            await calls.add("stopped")
            raise
        finally:
            await calls.add("running", -1)

    @alto.stage
    async def total(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def f(n: int):
        return total(nap(parts(n)))

    return f


async def test_deadline_fails_slow_inputs_and_stops_their_calls(backend, shared):
    calls = shared
    f = sleepy_flow(calls)
    # inputs 0 and 2 finish well within it (a few hops, slower through Ray's processes)
    deadline = 0.3 if backend == "local" else 2.0
    with anyio.fail_after(20):
        with pytest.raises(alto.PipelineError) as err:
            await f.run([1, 3, 1], backend=backend, deadline=deadline)
    e = err.value
    assert e.results[0] == 0 and e.results[2] == 0
    (failure,) = e.failures
    assert isinstance(failure, alto.DeadlineExceeded) and failure.index == 1
    assert f"deadline of {deadline:g} s" in str(failure)
    assert await calls.get("running") == 0 and await calls.get("stopped") == 2


async def test_cancel_one_input_of_a_stream(backend, shared):
    calls = shared
    f = sleepy_flow(calls)
    outcomes = {}
    with anyio.fail_after(20):
        async with f.stream([3, 1, 3, 1], backend=backend) as results:
            assert results.cancel(2)  # before it even started
            async for r in results:
                outcomes[r.index] = r
                if r.index == 1:
                    assert results.cancel(0)
                    assert not results.cancel(1)  # already has an outcome
                    results.cancel(2)
    assert outcomes[1].value == 0 and outcomes[3].value == 0
    assert isinstance(outcomes[0].error, alto.InputCancelled)
    assert isinstance(outcomes[2].error, alto.InputCancelled)
    assert await calls.get("running") == 0


async def test_failure_stops_the_slow_calls_of_the_same_input(backend, shared):
    calls = shared

    @alto.stage
    async def parts(n: int) -> Split[int]:
        for i in range(n):
            yield i

    @alto.stage(replicas=8)
    async def work(i: int) -> int:
        if i == 0:
            while await calls.get("running") < 3:  # fail once the other three are running
                await anyio.sleep(0.01)
            msg = "first fragment fails"
            raise ValueError(msg)
        await calls.add("running")
        try:
            await anyio.sleep(30)
            return i
        except anyio.get_cancelled_exc_class():
            await calls.add("stopped")
            raise
        finally:
            await calls.add("running", -1)

    @alto.stage
    async def total(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def f(n: int):
        return total(work(parts(n)))

    with anyio.fail_after(20):
        with pytest.raises(alto.PipelineError) as err:
            await f.run([4], backend=backend)
    assert err.value.failures[0].stage == "work"
    assert await calls.get("stopped") == 3 and await calls.get("running") == 0


class Claim(pydantic.BaseModel):
    text: str
    weight: float = 1.0


@alto.stage
async def weigh(claim: Claim) -> float:
    return claim.weight * len(claim.text)


@alto.stage
async def raw(item: dict) -> dict:
    return item


@alto.flow
def weighed(claim: Claim):
    return weigh(claim)


@alto.flow
def weighed_later(item: dict):
    return weigh(raw(item))


@alto.stage
async def pack(text: str, n: int) -> dict:
    return {"text": text, "weight": n}


@alto.flow
def typed(text: str, n: int = 1):
    return weigh(pack(text, n))


async def test_flow_inputs_are_checked_against_annotations(backend):
    with pytest.raises(alto.PipelineError) as err:
        await weighed.run([{"text": "ab", "weight": 2}, {"weight": 1}, Claim(text="abc"),
                           "not a claim"], backend=backend)
    e = err.value
    assert e.results[0] == 4.0 and e.results[2] == 3.0
    missing, wrong = e.failures
    assert isinstance(missing, alto.InputError) and missing.index == 1
    assert missing.parameter == "claim" and "text: Field required" in str(missing)
    assert wrong.index == 3 and "not a valid Claim" in str(wrong)

    with pytest.raises(alto.PipelineError) as err:
        await typed.run([("a", 2), (5, 1), ("b", "many")], backend=backend)
    assert err.value.results[0] == 2.0
    assert [f.parameter for f in err.value.failures] == ["text", "n"]
    assert "parameter 'text' expects str, got int 5" in str(err.value.failures[0])


async def test_stage_parameters_annotated_with_models_are_validated(backend):
    with pytest.raises(alto.PipelineError) as err:
        await weighed_later.run([{"text": "abcd"}, {"text": 3}], backend=backend)
    assert err.value.results[0] == 4.0
    (failure,) = err.value.failures
    assert failure.stage == "weigh" and failure.index == 1
    assert "parameter 'claim' of stage 'weigh' is not a valid Claim" in str(failure)
    assert "text: Input should be a valid string" in str(failure)
