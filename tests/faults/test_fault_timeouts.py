"""Stage timeouts, stage retries and per-root deadlines against LLM servers that stall.

The stage options are the user's tools: ``timeout`` bounds one call, ``retries`` with
``retry_on`` repeats calls that failed for a reason worth repeating, and the run's
``deadline`` bounds a whole root. Each failure must be a :class:`StageError` (or
:class:`DeadlineExceeded`) on the right root, with the right number of attempts, and the
abandoned HTTP requests must really be closed (the server sees them go).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from faultkit import RETRYABLE, Reply, Request, answer_for, client, fault, scripted

import alto
from alto import DeadlineExceeded, Gather, Split, StageError
from alto.operators.llm import LLMServerError, OpenAIClient

pytestmark = pytest.mark.anyio

HANG = 30


async def stalls_on_stuck(req: Request, reply: Reply, n: int) -> None:
    if "stuck" in req.prompt:
        await reply.sse_head()
        await reply.delta("partial")
        await reply.stall()
    else:
        await reply.answer(req, answer_for(req.prompt))


def asking(llm: OpenAIClient, **options: Any) -> alto.Flow:
    """text -> sentences (split) -> one streamed LLM answer each -> gathered."""

    @alto.stage
    async def sentences(text: str) -> Split[str]:
        for s in text.split(". "):
            yield s

    @alto.stage(replicas=8, **options)
    async def ask(sentence: str) -> str:
        pieces = llm.stream([{"role": "user", "content": sentence}], max_tokens=32)
        return "".join([p async for p in pieces])

    @alto.stage
    async def joined(answers: Gather[str]) -> str:
        return " | ".join(answers)

    @alto.flow
    def f(text: str):
        return joined(ask(sentences(text)))

    return f


def expected(text: str) -> str:
    return " | ".join(answer_for(s) for s in text.split(". "))


INPUTS = ["one a. one b", "two a. two stuck b. two c", "three a", "four stuck", "five a. five b"]
STUCK = {1, 3}


async def outcomes_of(flow: alto.Flow, **options: Any) -> list[Any]:
    with anyio.fail_after(HANG):
        try:
            return await flow.run(INPUTS, **options)
        except alto.PipelineError as err:
            return err.results


@fault("stalled stream under a stage timeout, with stage retries", where="scripted server",
       observed="each attempt is cut at the stage timeout; after retries+1 attempts: StageError "
       "(attempts=2, cause StageTimeout) with the ancestry of the stalled fragment; every "
       "abandoned request is closed at the server",
       roots="only roots with a stalled fragment; the rest complete with correct outputs")
async def test_stage_timeout_and_retries_on_a_stalled_stream() -> None:
    async with scripted(stalls_on_stuck) as server, client(server.url, timeout=60) as llm:
        flow = asking(llm, timeout=1.0, retries=1, retry_on=(*RETRYABLE, TimeoutError),
                      retry_backoff=0.001)
        stats = alto.RunStats()
        out = await outcomes_of(flow, stats=stats)
        assert server.wait_until(lambda: server.abandoned == 4 and server.open == 0)
    for i, text in enumerate(INPUTS):
        if i not in STUCK:
            assert out[i] == expected(text)
    assert [out[1].ancestry, out[3].ancestry] == [(1, "sentences", 1), (3, "sentences", 0)]
    for i in STUCK:
        err = out[i]
        assert isinstance(err, StageError) and err.stage == "ask" and err.attempts == 2
        assert type(err.cause) is alto.StageTimeout and "after 2 attempts" in str(err)
    assert stats.stages["ask"].retries == 2 and stats.stages["ask"].errors == 2


@fault("stalled stream, no timeouts, per-root deadline", where="scripted server",
       observed="DeadlineExceeded(index, deadline) for the root; its stalled HTTP request is "
       "closed (the server sees it abandoned)",
       roots="only roots with a stalled fragment; the rest complete with correct outputs")
async def test_deadline_stops_stalled_llm_calls() -> None:
    async with scripted(stalls_on_stuck) as server, client(server.url, timeout=60) as llm:
        out = await outcomes_of(asking(llm), deadline=2.0)
        assert server.wait_until(lambda: server.abandoned == 2 and server.open == 0)
    for i, text in enumerate(INPUTS):
        if i not in STUCK:
            assert out[i] == expected(text)
    for i in STUCK:
        assert isinstance(out[i], DeadlineExceeded) and out[i].index == i
        assert out[i].deadline == 2.0


@fault("HTTP 503, then a stall on the retry, with the deadline passing during the backoff",
       where="scripted server",
       observed="DeadlineExceeded; the retry is not started once the root has its outcome "
       "(one request reaches the server), so the run ends at the deadline",
       roots="only the root past its deadline; the rest complete with correct outputs")
async def test_no_retry_after_the_root_has_its_outcome() -> None:
    async def handler(req: Request, reply: Reply, n: int) -> None:
        if "stuck" in req.prompt:
            if n == 0:
                await reply.json(503, {"error": "overloaded"})
            else:
                await reply.sse_head()
                await reply.stall()
        else:
            await reply.answer(req, answer_for(req.prompt))

    async with scripted(handler) as server, client(server.url, max_retries=0) as llm:
        # the backoff (5 s or more) outlasts the deadline; the retry would stall for good
        flow = asking(llm, retries=3, retry_on=RETRYABLE, retry_backoff=10.0)
        out = await outcomes_of(flow, deadline=2.0)
        assert len(server.with_text("stuck")) == 2  # the first attempt of each stuck fragment
        assert server.wait_until(lambda: server.open == 0)
    for i in STUCK:
        assert isinstance(out[i], DeadlineExceeded)
    assert out[0] == expected(INPUTS[0])


@fault("HTTP 500 on every request, stage retries exhausted", where="scripted server",
       observed="StageError(attempts=retries+1) whose cause is the last LLMServerError "
       "(status 500, url); the client's own retries count inside each attempt",
       roots="only roots with a failing fragment; the rest complete with correct outputs")
async def test_stage_retries_exhausted_report_attempts() -> None:
    async def handler(req: Request, reply: Reply, n: int) -> None:
        if "stuck" in req.prompt:
            await reply.json(500, {"error": "broken"})
        else:
            await reply.answer(req, answer_for(req.prompt))

    async with scripted(handler) as server, client(server.url, max_retries=1) as llm:
        flow = asking(llm, retries=2, retry_on=RETRYABLE, retry_backoff=0.001)
        out = await outcomes_of(flow)
        assert len(server.with_text("stuck")) == 2 * 3 * 2  # fragments x attempts x requests
    for i in STUCK:
        err = out[i]
        assert isinstance(err, StageError) and err.attempts == 3
        assert isinstance(err.cause, LLMServerError) and err.cause.status == 500
        assert err.cause.attempts == 2 and "after 3 attempts" in str(err)
    assert out[4] == expected(INPUTS[4])
