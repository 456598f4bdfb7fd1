"""LLM server faults inside flows: each fault hits some roots; the others get their answers.

Every flow here asks an OpenAI-compatible server (a :class:`ScriptedServer` whose answer
depends on the question) and then splits the answer into words, tidies each, and gathers them
back with the question broadcast in. A question's wording picks its fault, so one run holds
healthy roots and faulty ones side by side, and the healthy ones are compared with a
plain-Python reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import anyio
import pydantic
import pytest
from faultkit import RETRYABLE, Reply, Request, answer_for, client, fault, refused_url, scripted

import alto
from alto import Gather, Split, StageError
from alto.operators.llm import (
    LLMConnectionError,
    LLMProtocolError,
    LLMServerError,
    LLMTimeoutError,
    OpenAIClient,
    StructuredOutputError,
)

pytestmark = pytest.mark.anyio

HANG = 30  # seconds; only reached if a fault hangs the run


def qa_flow(
    llm_for: Callable[[str], OpenAIClient], *, streaming: bool = False, **options: Any
) -> alto.Flow:
    """question -> LLM answer -> words (split) -> lower-cased -> gathered with the question."""

    @alto.stage(replicas=8, **options)
    async def ask(question: str) -> str:
        llm = llm_for(question)
        messages = [{"role": "user", "content": question}]
        if not streaming:
            return await llm.chat(messages, max_tokens=64)
        async with aclosing(llm.stream(messages, max_tokens=64)) as pieces:
            return "".join([p async for p in pieces])

    @alto.stage
    async def words(answer: str) -> Split[str]:
        for w in answer.split():
            yield w

    @alto.stage(replicas=2)
    async def tidy(word: str) -> str:
        return word.lower()

    @alto.stage
    async def summary(ws: Gather[str], question: str) -> str:
        return f"{len(question.split())}:{' '.join(ws)}"

    @alto.flow
    def qa(question: str):
        return summary(tidy(words(ask(question))), question)

    return qa


def reference(question: str) -> str:
    """What ``qa_flow`` gives a question the server answers healthily."""
    return f"{len(question.split())}:{answer_for(question).lower()}"


def questions(n: int, faulty: set[int], mark: str) -> list[str]:
    return [f"question {i} {mark if i in faulty else 'fine'} please" for i in range(n)]


async def run_all(flow: alto.Flow, inputs: list[str], **options: Any) -> list[Any]:
    """Every root's outcome: its value, or its error."""
    with anyio.fail_after(HANG):
        try:
            return await flow.run(inputs, **options)
        except alto.PipelineError as err:
            return err.results


def check_healthy(outcomes: list[Any], inputs: list[str], faulty: set[int]) -> None:
    for i, (q, out) in enumerate(zip(inputs, outcomes)):
        if i not in faulty:
            assert out == reference(q), f"root {i}: {out!r}"


async def healthy(req: Request, reply: Reply, n: int) -> None:
    await reply.answer(req, answer_for(req.prompt))


FAULTY = {1, 4, 7}


@fault("connection refused (nothing listens at the URL)", where="closed loopback port",
       observed="client retries the connection max_retries times, then StageError whose cause "
       "is LLMConnectionError naming the URL and the attempts; stage retries (retry_on) "
       "multiply them",
       roots="only roots sent to the dead URL; the rest complete with correct outputs")
async def test_connection_refused() -> None:
    dead = refused_url()
    async with scripted(healthy) as server:
        good, bad = client(server.url), client(dead, max_retries=2)
        flow = qa_flow(lambda q: bad if "down" in q else good, retries=1, retry_on=RETRYABLE)
        inputs = questions(10, FAULTY, "down")
        outcomes = await run_all(flow, inputs)
        await good.aclose()
        await bad.aclose()
    check_healthy(outcomes, inputs, FAULTY)
    for i in FAULTY:
        err = outcomes[i]
        assert isinstance(err, StageError) and err.stage == "ask" and err.index == i
        assert err.attempts == 2 and err.ancestry == (i,)
        cause = err.cause
        assert isinstance(cause, LLMConnectionError) and cause.attempts == 3
        assert cause.url == f"{dead}/chat/completions"
        assert dead in str(err) and "cannot reach the LLM server" in str(err)


@fault("HTTP 429 (rate limited) on the first request, then success",
       where="scripted server, Retry-After: 0",
       observed="the client retries; the answer is correct and no error is raised",
       roots="none fail; rate-limited roots took 2 requests")
async def test_rate_limited_then_success() -> None:
    async def handler(req: Request, reply: Reply, n: int) -> None:
        if "busy" in req.prompt and n == 0:
            await reply.json(429, {"error": "slow down"}, {"Retry-After": "0"})
        else:
            await healthy(req, reply, n)

    async with scripted(handler) as server, client(server.url) as llm:
        inputs = questions(10, FAULTY, "busy")
        stats = alto.RunStats()
        outcomes = await run_all(qa_flow(lambda q: llm), inputs, stats=stats)
        check_healthy(outcomes, inputs, set())  # every root, the rate-limited ones too
        for i in FAULTY:
            assert len(server.with_text(inputs[i])) == 2
        assert len(server.requests) == 10 + len(FAULTY)
    assert stats.stages["ask"].errors == 0 and stats.stages["ask"].retries == 0


@fault("HTTP 500 on every request (persistent)", where="scripted server",
       observed="client retries max_retries times, then StageError whose cause is "
       "LLMServerError with url, status 500, attempts and the body's start",
       roots="only the roots whose requests fail; the rest complete with correct outputs")
async def test_persistent_500() -> None:
    async def handler(req: Request, reply: Reply, n: int) -> None:
        if "broken" in req.prompt:
            await reply.json(500, {"error": {"message": "model crashed"}})
        else:
            await healthy(req, reply, n)

    async with scripted(handler) as server, client(server.url, max_retries=2) as llm:
        inputs = questions(10, FAULTY, "broken")
        outcomes = await run_all(qa_flow(lambda q: llm, streaming=True), inputs)
        for i in FAULTY:
            assert len(server.with_text(inputs[i])) == 3
    check_healthy(outcomes, inputs, FAULTY)
    for i in FAULTY:
        err = outcomes[i]
        assert isinstance(err, StageError) and err.index == i and err.attempts == 1
        cause = err.cause
        assert isinstance(cause, LLMServerError) and cause.status == 500 and cause.attempts == 3
        assert cause.url == f"{server.url}/chat/completions" and "model crashed" in cause.body
        assert "HTTP 500 after 3 attempts" in str(err) and server.url in str(err)


@fault("HTTP 503 twice, then success; client retries off", where="scripted server",
       observed="the stage's own retries (retries=2, retry_on=LLM errors) recover; "
       "RunStats counts the retries", roots="none fail")
async def test_stage_retries_recover_from_transient_errors() -> None:
    async def handler(req: Request, reply: Reply, n: int) -> None:
        if "flaky" in req.prompt and n < 2:
            await reply.json(503, {"error": "warming up"})
        else:
            await healthy(req, reply, n)

    async with scripted(handler) as server, client(server.url, max_retries=0) as llm:
        flow = qa_flow(lambda q: llm, retries=2, retry_on=RETRYABLE, retry_backoff=0.001)
        inputs = questions(10, FAULTY, "flaky")
        stats = alto.RunStats()
        outcomes = await run_all(flow, inputs, stats=stats)
    check_healthy(outcomes, inputs, set())
    assert stats.stages["ask"].retries == 2 * len(FAULTY) and stats.stages["ask"].errors == 0


@fault("server drops the connection mid-stream (TCP reset after 2 tokens)",
       where="scripted server",
       observed="StageError whose cause is LLMConnectionError 'the stream broke off'; a "
       "stream is not retried by the client after its first byte, the stage's retries "
       "(retry_on) try again: a drop on the first attempt only recovers",
       roots="only the roots whose stream broke; the rest complete with correct outputs")
async def test_dropped_mid_stream() -> None:
    async def handler(req: Request, reply: Reply, n: int) -> None:
        if "cut" in req.prompt or ("once" in req.prompt and n == 0):
            await reply.sse_head()
            await reply.delta("two")
            await reply.delta(" tokens")
            await reply.reset()
        else:
            await healthy(req, reply, n)

    async with scripted(handler) as server, client(server.url) as llm:
        flow = qa_flow(lambda q: llm, streaming=True, retries=2, retry_on=RETRYABLE,
                       retry_backoff=0.001)
        inputs = questions(10, FAULTY, "cut")
        inputs[2] = inputs[2].replace("fine", "once")
        outcomes = await run_all(flow, inputs)
        assert len(server.with_text(inputs[2])) == 2
    check_healthy(outcomes, inputs, FAULTY)  # root 2 too: its retry got the whole answer
    for i in FAULTY:
        err = outcomes[i]
        assert isinstance(err, StageError) and err.attempts == 3
        assert isinstance(err.cause, LLMConnectionError)
        assert "stream broke off" in str(err.cause) and server.url in str(err.cause)


@fault("stalled stream: headers and one token, then silence", where="scripted server",
       observed="client read timeout: StageError whose cause is LLMTimeoutError (url, timeout, "
       "phase 'read'); the server sees the request abandoned",
       roots="only the stalled roots; the rest complete with correct outputs")
async def test_stalled_stream_times_out() -> None:
    async def handler(req: Request, reply: Reply, n: int) -> None:
        if "stuck" in req.prompt:
            await reply.sse_head()
            await reply.delta("one")
            await reply.stall()
        else:
            await healthy(req, reply, n)

    async with scripted(handler) as server, client(server.url, timeout=1.0) as llm:
        inputs = questions(10, FAULTY, "stuck")
        outcomes = await run_all(qa_flow(lambda q: llm, streaming=True), inputs)
        assert server.wait_until(lambda: server.abandoned == len(FAULTY) and server.open == 0)
    check_healthy(outcomes, inputs, FAULTY)
    for i in FAULTY:
        cause = outcomes[i].cause
        assert isinstance(cause, LLMTimeoutError) and cause.phase == "read"
        assert cause.timeout == 1.0 and cause.url == f"{server.url}/chat/completions"
        assert "did not answer within 1 s" in str(outcomes[i])


@fault("malformed server-sent event (data that is not JSON)", where="scripted server",
       observed="StageError whose cause is LLMProtocolError quoting the bad line; not retried "
       "(protocol errors are not in retry_on)",
       roots="only the roots that got garbage; the rest complete with correct outputs")
async def test_malformed_sse() -> None:
    async def handler(req: Request, reply: Reply, n: int) -> None:
        if "garbled" in req.prompt:
            await reply.sse_head()
            await reply.delta("fine")
            await reply.raw(b'data: {"choices": [{"delta": {"content": \n\n')
        else:
            await healthy(req, reply, n)

    async with scripted(handler) as server, client(server.url) as llm:
        flow = qa_flow(lambda q: llm, streaming=True, retries=3, retry_on=RETRYABLE)
        inputs = questions(10, FAULTY, "garbled")
        outcomes = await run_all(flow, inputs)
        for i in FAULTY:
            assert len(server.with_text(inputs[i])) == 1
    check_healthy(outcomes, inputs, FAULTY)
    for i in FAULTY:
        err = outcomes[i]
        assert isinstance(err.cause, LLMProtocolError) and err.attempts == 1
        assert "malformed server-sent event" in str(err) and server.url in str(err)


class Verdict(pydantic.BaseModel):
    claim: str
    supported: bool


@fault("invalid JSON for a structured output (prose, then JSON of the wrong shape)",
       where="scripted server",
       observed="structured() re-asks `reasks` times with the validation error, then "
       "StageError whose cause is StructuredOutputError carrying the last raw answer and error",
       roots="only the roots whose answers never validate; the rest get validated models")
async def test_invalid_json_for_structured_output() -> None:
    async def handler(req: Request, reply: Reply, n: int) -> None:
        messages = req.json()["messages"]  # [system, user, (assistant, re-ask) per re-ask]
        claim = messages[1]["content"]
        if "nonsense" in claim:
            reasks = (len(messages) - 2) // 2
            await reply.chat(["Sure! Here is my verdict: yes.", '{"claim": 3}'][reasks % 2])
        else:
            await reply.chat(f'{{"claim": "{claim}", "supported": {str("true" in claim).lower()}}}')

    @alto.stage
    async def claims(text: str) -> Split[str]:
        for part in text.split(";"):
            yield part.strip()

    async with scripted(handler) as server, client(server.url, json_mode="json_object") as llm:

        @alto.stage(replicas=4)
        async def judge(claim: str) -> Verdict:
            return await llm.structured([{"role": "user", "content": claim}], Verdict, reasks=2)

        @alto.stage
        async def score(verdicts: Gather[Verdict]) -> float:
            return sum(v.supported for v in verdicts) / len(verdicts)

        @alto.flow
        def check(text: str):
            return score(judge(claims(text)))

        inputs = ["a true; b false", "c true; d nonsense", "e true", "f nonsense"]
        outcomes = await run_all(check, inputs)
        assert len(server.with_text("d nonsense")) == 3  # one answer and two re-asks
    assert outcomes[0] == 0.5 and outcomes[2] == 1.0
    for i in (1, 3):
        err = outcomes[i]
        assert isinstance(err, StageError) and err.stage == "judge" and err.index == i
        assert err.ancestry == (i, "claims", 1 if i == 1 else 0)
        cause = err.cause
        assert isinstance(cause, StructuredOutputError) and cause.attempts == 3
        assert cause.raw == "Sure! Here is my verdict: yes." and cause.schema == "Verdict"
        assert "no valid Verdict after 3 attempts" in str(err)


@fault("every fault at once, in one run of 40 roots", where="scripted server",
       observed="each faulty root fails with its own cause (connection, server, timeout, "
       "protocol); rate-limited and flaky roots recover",
       roots="exactly the roots with an unrecoverable fault; the rest complete correctly")
async def test_all_faults_in_one_run() -> None:
    async def handler(req: Request, reply: Reply, n: int) -> None:
        p = req.prompt
        if "busy" in p and n == 0:
            await reply.json(429, {"error": "slow down"}, {"Retry-After": "0"})
        elif "broken" in p:
            await reply.json(500, {"error": "model crashed"})
        elif "stuck" in p:
            await reply.sse_head()
            await reply.stall()
        elif "garbled" in p:
            await reply.sse_head()
            await reply.raw(b"event_without_colon\n\n")
        elif "cut" in p:
            await reply.sse_head()
            await reply.delta("x")
            await reply.reset()
        else:
            await healthy(req, reply, n)

    kinds = ["fine", "busy", "broken", "stuck", "garbled", "cut", "down", "fine"]
    inputs = [f"query {i} {kinds[i % len(kinds)]} now" for i in range(40)]
    dead = refused_url()
    async with scripted(handler) as server:
        good, bad = client(server.url, timeout=1.0, max_retries=1), client(dead, max_retries=1)
        flow = qa_flow(lambda q: bad if "down" in q else good, streaming=True)
        outcomes = await run_all(flow, inputs)
        await good.aclose()
        await bad.aclose()
        assert server.wait_until(lambda: server.open == 0)
    expected = {"broken": LLMServerError, "stuck": LLMTimeoutError, "garbled": LLMProtocolError,
                "cut": LLMConnectionError, "down": LLMConnectionError}
    for q, out in zip(inputs, outcomes):
        kind = q.split()[2]
        if kind in expected:
            assert isinstance(out, StageError) and isinstance(out.cause, expected[kind]), (q, out)
        else:
            assert out == reference(q)


@fault("a stream cut short with a clean 'data: [DONE]' before any finish_reason",
       where="scripted server (what llama.cpp's server does to a stream when another "
       "request arrives)",
       observed="StageError whose cause is LLMProtocolError saying the answer was cut short, "
       "instead of a silently truncated answer",
       roots="only the roots whose streams were cut; the rest complete with correct outputs")
async def test_stream_cut_short_with_done_is_an_error() -> None:
    async def handler(req: Request, reply: Reply, n: int) -> None:
        words = answer_for(req.prompt).split()
        cut = "interrupted" in req.prompt
        await reply.sse_head()
        for i, word in enumerate(words[:1] if cut else words):
            chunk = {"choices": [{"index": 0, "delta": {"content": f" {word}" if i else word},
                                  "finish_reason": None}]}
            await reply.raw(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if not cut:
            last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            await reply.raw(b"data: " + json.dumps(last).encode() + b"\n\n")
        await reply.raw(b"data: [DONE]\n\n")

    async with scripted(handler) as server, client(server.url) as llm:
        inputs = questions(10, FAULTY, "interrupted")
        outcomes = await run_all(qa_flow(lambda q: llm, streaming=True), inputs)
    check_healthy(outcomes, inputs, FAULTY)
    for i in FAULTY:
        err = outcomes[i]
        assert isinstance(err, StageError) and isinstance(err.cause, LLMProtocolError)
        assert "cut the answer short" in str(err) and server.url in str(err)
