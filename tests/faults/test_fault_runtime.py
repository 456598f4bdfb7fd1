"""The runtime under a stalled or failing call, without any server: what one root's trouble
must not do to the other roots, and what must stop once a root has its outcome."""

from __future__ import annotations

import anyio
import pytest
from faultkit import fault

import alto
from alto import Gather, Split

pytestmark = pytest.mark.anyio


@fault("a call that stalls while another root's records wait in the same worker",
       where="stage that sleeps for an hour",
       observed="nothing: records that passed through the worker (a split's close) are sent "
       "on before the slow call starts, so the other root completes",
       roots="only the stalled root waits; the root before it completes")
async def test_a_stalled_call_does_not_hold_back_another_roots_records() -> None:
    @alto.stage
    async def parts(text: str) -> Split[str]:
        yield text

    @alto.stage
    async def work(text: str) -> str:
        if text == "stall":
            await anyio.sleep(3600)
        return text.upper()

    @alto.stage
    async def joined(xs: Gather[str]) -> str:
        return "+".join(xs)

    @alto.flow
    def f(text: str):
        return joined(work(parts(text)))

    # "ok" reaches `work` alone; the close of its parent arrives together with "stall"
    with anyio.fail_after(10):
        async with f.stream(["ok", "stall"]) as results:
            first = await anext(results)
    assert first.index == 0 and first.value == "OK"


@fault("a failed call whose root passes its deadline during the retry backoff",
       where="stage that fails once, then would stall",
       observed="DeadlineExceeded at the deadline; the backoff is cut short and the call is "
       "not tried again for a root that already has its outcome",
       roots="only that root")
async def test_no_retry_once_the_root_has_its_outcome() -> None:
    calls: list[str] = []

    @alto.stage(replicas=2, retries=3, retry_backoff=5.0)
    async def flaky(x: str) -> str:
        calls.append(x)
        if x == "bad":
            if len(calls) > 1 and calls.count("bad") > 1:
                await anyio.sleep(3600)  # a retry would stall
            msg = "transient"
            raise ConnectionError(msg)
        return x

    @alto.flow
    def f(x: str):
        return flaky(x)

    with anyio.fail_after(10):
        with pytest.raises(alto.PipelineError) as err:
            await f.run(["bad", "good"], deadline=1.0)
    assert err.value.results[1] == "good"
    (failure,) = err.value.failures
    assert isinstance(failure, alto.DeadlineExceeded) and failure.index == 0
    assert calls.count("bad") == 1
