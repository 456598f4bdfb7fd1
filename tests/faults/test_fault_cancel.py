"""Cancelling while LLM calls are in flight stops every worker and model call the run started.

Three ways to stop: cancel the task running ``run``, leave an ``async for`` over ``stream``
early, or cancel one input with ``ResultStream.cancel(index)``. Against an HTTP server that
streams tokens forever, the server must see each request closed; with the embedded llama.cpp
model, the generating thread must stop (within a short grace period: it checks its stop flag
between tokens) and the model must be free for the next call. In both cases the asyncio tasks,
threads and child processes after the run are those from before it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import anyio
import pytest
from faultkit import (
    Reply,
    Request,
    ScriptedServer,
    answer_for,
    assert_released,
    client,
    fault,
    scripted,
    snapshot,
)

import alto
from alto import Gather, GatherStream, InputCancelled, Split
from alto.operators.llm import OpenAIClient

pytestmark = pytest.mark.anyio

HANG = 60


async def endless(req: Request, reply: Reply, n: int) -> None:
    """Questions with "slow" stream a token every 50 ms, forever; others answer at once."""
    if "slow" in req.prompt:
        await reply.trickle(0.05)
    else:
        await reply.answer(req, answer_for(req.prompt))


def streaming_flow(llm: OpenAIClient, seen: list[str] | None = None) -> alto.Flow:
    """question -> its parts (split) -> each part's streamed answer -> gathered."""

    @alto.stage
    async def parts(question: str) -> Split[str]:
        for i, part in enumerate(question.split(",")):
            yield f"{part.strip()} {i}"

    @alto.stage(replicas=8)
    async def answer(part: str) -> str:
        messages = [{"role": "user", "content": part}]
        async with aclosing(llm.stream(messages, max_tokens=10_000)) as pieces:
            return "".join([p async for p in pieces])

    @alto.stage
    async def joined(answers: Gather[str]) -> str:
        return " | ".join(answers)

    @alto.flow
    def f(question: str):
        return joined(answer(parts(question)))

    return f


async def warm(llm: OpenAIClient) -> None:
    """One call first: pooled connections and resolver threads exist before the snapshot."""
    with anyio.fail_after(HANG):
        assert await llm.chat([{"role": "user", "content": "warm up"}]) == "UP WARM"


async def collect(results: alto.ResultStream, outcomes: dict[int, Any]) -> None:
    async for r in results:
        outcomes[r.index] = r


async def streams_open(server: ScriptedServer, n: int) -> None:
    while len([r for r in server.requests if "slow" in r.prompt]) < n:
        await anyio.sleep(0.01)


@fault("cancelling the task that awaits run() while LLM streams are in flight",
       where="scripted server streaming tokens forever",
       observed="run() is cancelled; every HTTP stream is closed (the server sees each one "
       "abandoned); no task, thread or child process is left",
       roots="all (the whole run is cancelled)")
async def test_cancelling_run_closes_every_llm_stream() -> None:
    async with scripted(endless) as server, client(server.url) as llm:
        await warm(llm)
        before = snapshot()
        flow = streaming_flow(llm)
        with anyio.fail_after(HANG):
            async with anyio.create_task_group() as tg:
                tg.start_soon(flow.run, ["slow a, slow b, slow c", "slow d, slow e"])
                await streams_open(server, 5)
                tg.cancel_scope.cancel()
            await assert_released(before)
            assert server.wait_until(lambda: server.open == 0)
        assert server.abandoned == 5


@fault("leaving an `async for` over stream() early while LLM streams are in flight",
       where="scripted server streaming tokens forever",
       observed="the loop ends; the rest of the run is cancelled and its HTTP streams closed; "
       "no task, thread or child process is left", roots="all but the roots already yielded")
async def test_leaving_stream_early_closes_the_other_llm_streams() -> None:
    async with scripted(endless) as server, client(server.url) as llm:
        await warm(llm)
        before = snapshot()
        flow = streaming_flow(llm)
        inputs = ["slow a, slow b", "quick one, quick two", "slow c"]
        with anyio.fail_after(HANG):
            async for _ in flow.stream(inputs):
                await streams_open(server, 3)
                break
            gc.collect()  # the abandoned stream's last reference is gone: it stops its run
            await assert_released(before)
            assert server.wait_until(lambda: server.open == 0)
        assert server.abandoned == 3


@fault("ResultStream.cancel(index) on a root whose LLM call streams forever",
       where="scripted server streaming tokens forever",
       observed="that root's outcome is InputCancelled and its HTTP stream is closed",
       roots="only the cancelled root; the others complete with correct outputs")
async def test_cancelling_one_root_closes_only_its_llm_stream() -> None:
    async with scripted(endless) as server, client(server.url) as llm:
        await warm(llm)
        before = snapshot()
        flow = streaming_flow(llm)
        inputs = ["fine a, fine b", "slow c, fine d", "fine e"]
        outcomes: dict[int, Any] = {}
        with anyio.fail_after(HANG):
            async with flow.stream(inputs) as results, anyio.create_task_group() as tg:
                tg.start_soon(collect, results, outcomes)  # the run starts with the loop
                await streams_open(server, 1)
                assert results.cancel(1)
            await assert_released(before)
            assert server.wait_until(lambda: server.open == 0)
        assert "slow c 0" in {r.prompt for r in server.gave_up} <= {"slow c 0", "fine d 1"}
    assert outcomes[0].value == f"{answer_for('fine a 0')} | {answer_for('fine b 1')}"
    assert outcomes[2].value == answer_for("fine e 0")
    assert isinstance(outcomes[1].error, InputCancelled) and outcomes[1].error.index == 1


# -- the embedded model ------------------------------------------------------------------------

COUNT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # a completion that never ends on its own


@pytest.fixture(scope="module")
def local_llm() -> Iterator[Any]:
    pytest.importorskip("llama_cpp")
    from alto.operators.llm import LocalLLM

    model = LocalLLM(n_ctx=1024, n_threads=1)
    yield model
    anyio.run(model.aclose)


async def warm_local(llm: Any) -> None:
    """One call first: the worker thread of the thread pool exists before the snapshot."""
    with anyio.fail_after(HANG):
        assert await llm.complete(COUNT, max_tokens=2)


async def still_works(llm: Any) -> None:
    """The model was handed back: a new call gets it and completes."""
    with anyio.fail_after(HANG):
        assert (await llm.complete(COUNT, max_tokens=3)).strip()


@pytest.mark.models
@fault("cancelling run() while the embedded model generates (and a second call waits for it)",
       where="LocalLLM (llama.cpp, SmolLM2)",
       observed="generation stops within a token or two; no thread, task or process is left; "
       "the model serves the next call", roots="all (the whole run is cancelled)")
async def test_cancelling_run_stops_local_generation(local_llm: Any) -> None:
    await warm_local(local_llm)
    started = anyio.Event()

    @alto.stage(replicas=2)
    async def generate(n: int) -> str:
        started.set()
        return await local_llm.complete(COUNT, max_tokens=n)

    @alto.flow
    def f(n: int):
        return generate(n)

    before = snapshot()
    with anyio.fail_after(HANG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(f.run, [600, 600])
            await started.wait()
            await anyio.sleep(0.3)  # generating by now (or still starting: both must stop)
            tg.cancel_scope.cancel()
        await assert_released(before, grace=10)
    await still_works(local_llm)
    await assert_released(before)


def local_words_flow(llm: Any, seen: list[str]) -> alto.Flow:
    """n -> the model's streamed tokens (split) -> recorded -> counted as they arrive."""

    @alto.stage(replicas=2)
    async def tokens(n: int) -> Split[str]:
        if n == 0:
            return
        async with aclosing(llm.stream([{"role": "user", "content": COUNT}],
                                       max_tokens=n)) as pieces:
            async for piece in pieces:
                yield piece

    @alto.stage
    async def record(token: str) -> str:
        seen.append(token)
        return token

    @alto.stage
    async def count(ts: GatherStream[str]) -> int:
        return len([t async for t in ts])

    @alto.flow
    def f(n: int):
        return count(record(tokens(n)))

    return f


@pytest.mark.models
@fault("leaving an `async for` over stream() while the embedded model streams tokens",
       where="LocalLLM.stream in a split stage",
       observed="the streaming thread stops; no thread, task or process is left; the model "
       "serves the next call", roots="all but the roots already yielded")
async def test_leaving_stream_early_stops_local_streaming(local_llm: Any) -> None:
    await warm_local(local_llm)
    seen: list[str] = []
    flow = local_words_flow(local_llm, seen)
    before = snapshot()
    with anyio.fail_after(HANG):
        async for result in flow.stream([600, 0]):
            assert result.index == 1 and result.value == 0
            while len(seen) < 3:  # the model is streaming
                await anyio.sleep(0.01)
            break
        del result
        gc.collect()
        await assert_released(before, grace=10)
    assert len(seen) < 600
    await still_works(local_llm)


@pytest.mark.models
@fault("ResultStream.cancel(index) on a root whose embedded-model stream is running, with "
       "another root waiting for the model", where="LocalLLM.stream in a split stage",
       observed="the cancelled root is InputCancelled and its generation stops; the waiting "
       "root then gets the model and completes", roots="only the cancelled root")
async def test_cancelling_one_root_frees_the_local_model(local_llm: Any) -> None:
    await warm_local(local_llm)
    seen: list[str] = []
    flow = local_words_flow(local_llm, seen)
    before = snapshot()
    outcomes: dict[int, Any] = {}
    with anyio.fail_after(HANG):
        async with flow.stream([600, 4]) as results, anyio.create_task_group() as tg:
            tg.start_soon(collect, results, outcomes)
            while len(seen) < 3:  # root 0 holds the only model instance and streams
                await anyio.sleep(0.01)
            assert results.cancel(0)
        await assert_released(before, grace=10)
    assert isinstance(outcomes[0].error, InputCancelled)
    assert outcomes[1].value == 4  # it waited for the model, which the cancel freed
