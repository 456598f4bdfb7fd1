"""Faults with a real model server: ``python -m llama_cpp.server`` (SmolLM2-135M) on loopback.

One server for the module serves the healthy roots; a second, short-lived one is killed in
the middle of a stream. Healthy roots are compared with direct calls to the same server
(greedy decoding is deterministic). Timeouts and deadlines here are the configured faults:
a counting prompt makes the model write until ``max_tokens`` (hundreds of tokens, seconds on
one CPU thread), far longer than the limits, while short answers take a small fraction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import anyio
import psutil
import pytest
from faultkit import (
    RETRYABLE,
    LlamaServer,
    assert_released,
    client,
    fault,
    refused_url,
    snapshot,
)

import alto
from alto import DeadlineExceeded, Gather, Split, StageError
from alto.operators.llm import LLMConnectionError, OpenAIClient

pytestmark = [pytest.mark.server, pytest.mark.models, pytest.mark.anyio]

HANG = 120
COUNT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # the model keeps counting until max_tokens
LONG = 990  # tokens: all the context has room for; many seconds on one CPU thread
SHORT = [f"{i}, {i + 1}, {i + 2}," for i in range(4)]


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServer]:
    pytest.importorskip("llama_cpp.server")
    from alto.operators.llm import default_model_path

    server = LlamaServer(default_model_path())
    yield server
    server.stop()


@pytest.fixture
def scratch(llama: LlamaServer) -> Iterator[LlamaServer]:
    """A server of its own, for a test that leaves it busy: llama.cpp's server finishes a
    non-streamed answer even after its client has given up; stopping the server ends it."""
    from alto.operators.llm import default_model_path

    server = LlamaServer(default_model_path())
    yield server
    server.kill()  # it is still generating: a polite stop would wait for that
    server.stop()


async def direct(llm: OpenAIClient, prompts: list[str], max_tokens: int) -> list[str]:
    """The server's answers, asked one by one outside any flow (the reference)."""
    with anyio.fail_after(HANG):
        return [await llm.complete(p, max_tokens=max_tokens) for p in prompts]


def completing(route: Any, **options: Any) -> alto.Flow:
    """(prompt, max_tokens) -> the completion's words (split) -> gathered back."""

    @alto.stage(replicas=options.pop("replicas", 4), **options)
    async def complete(prompt: str, max_tokens: int) -> str:
        return await route(prompt).complete(prompt, max_tokens=max_tokens)

    @alto.stage
    async def words(text: str) -> Split[str]:
        for w in text.split(" "):
            yield w

    @alto.stage
    async def joined(ws: Gather[str]) -> str:
        return " ".join(ws)

    @alto.flow
    def f(prompt: str, max_tokens: int):
        return joined(words(complete(prompt, max_tokens)))

    return f


async def outcomes(flow: alto.Flow, inputs: list[Any], **options: Any) -> list[Any]:
    with anyio.fail_after(HANG):
        try:
            return await flow.run(inputs, **options)
        except alto.PipelineError as err:
            return err.results


@fault("connection refused, beside a real llama.cpp server", where="llama_cpp.server + a "
       "closed port", observed="StageError(attempts=2 with stage retries) whose cause is "
       "LLMConnectionError naming the dead URL", roots="only roots sent to the dead URL; the "
       "others equal direct calls to the real server")
async def test_real_server_answers_beside_a_dead_one(llama: LlamaServer) -> None:
    dead = refused_url()
    async with client(llama.url, timeout=60) as good, client(dead, max_retries=1) as bad:
        expected = await direct(good, SHORT, 6)
        flow = completing(lambda p: bad if p.startswith("1,") else good, retries=1,
                          retry_on=RETRYABLE, retry_backoff=0.001)
        out = await outcomes(flow, [(p, 6) for p in SHORT])
    for i, text in enumerate(expected):
        if i != 1:
            assert out[i] == text
    err = out[1]
    assert isinstance(err, StageError) and err.attempts == 2 and err.index == 1
    assert isinstance(err.cause, LLMConnectionError) and err.cause.attempts == 2
    assert err.cause.url == f"{dead}/completions"


@fault("the llama.cpp server process is killed (SIGKILL) in the middle of a stream",
       where="llama_cpp.server, killed", observed="every root on it: StageError whose cause "
       "is LLMConnectionError naming the server's URL: 'the stream broke off' for the root "
       "that was streaming, a cut or refused connection for the one still waiting",
       roots="only roots on the killed server; a root on the other server is correct")
async def test_server_killed_mid_stream(llama: LlamaServer) -> None:
    from alto.operators.llm import default_model_path

    doomed = LlamaServer(default_model_path())  # a second request waits for the first
    seen: list[str] = []
    try:
        async with client(llama.url) as good, client(doomed.url, timeout=60) as bad:
            (expected,) = await direct(good, SHORT[:1], 6)

            @alto.stage(replicas=3)
            async def tokens(prompt: str, where: str) -> Split[str]:
                if where == "good":
                    yield await good.complete(prompt, max_tokens=6)
                    return
                messages = [{"role": "user", "content": prompt}]
                async with aclosing(bad.stream(messages, max_tokens=600)) as pieces:
                    async for piece in pieces:
                        yield piece

            @alto.stage
            async def record(piece: str) -> str:
                seen.append(piece)
                return piece

            @alto.stage
            async def text(pieces: Gather[str]) -> str:
                return "".join(pieces)

            @alto.flow
            def f(prompt: str, where: str):
                return text(record(tokens(prompt, where)))

            async def kill_once_streaming() -> None:
                while len(seen) < 3:
                    await anyio.sleep(0.01)
                await anyio.to_thread.run_sync(doomed.kill)

            inputs = [(COUNT, "doomed"), (COUNT, "doomed"), (SHORT[0], "good")]
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_once_streaming)
                out = await outcomes(f, inputs)
    finally:
        doomed.stop()
    assert out[2] == expected
    for err in out[:2]:
        assert isinstance(err, StageError) and err.stage == "tokens"
        assert isinstance(err.cause, LLMConnectionError) and doomed.url in str(err.cause)
    details = sorted(e.cause.detail for e in out[:2])
    assert any("stream broke off" in d for d in details)
    assert doomed.process.pid not in {p.pid for p in psutil.Process().children()}


@fault("a generation far longer than the stage timeout, with stage retries",
       where="llama_cpp.server", observed="each attempt is cut at the stage timeout; "
       "StageError(attempts=2, cause StageTimeout)",
       roots="only the long root; short roots equal direct calls")
async def test_stage_timeout_on_a_real_server(scratch: LlamaServer) -> None:
    async with client(scratch.url, timeout=60) as llm:
        expected = await direct(llm, SHORT, 6)

        flow = completing(lambda p: llm, replicas=1, timeout=2.0, retries=1,
                          retry_on=TimeoutError, retry_backoff=0.001)
        # the short roots go first: one replica serves them in order, before the long one
        out = await outcomes(flow, [(p, 6) for p in SHORT] + [(COUNT, LONG)])
    assert out[:4] == expected
    err = out[4]
    assert isinstance(err, StageError) and err.attempts == 2
    assert type(err.cause) is alto.StageTimeout and err.cause.stage == err.stage


@fault("a generation far longer than the per-root deadline", where="llama_cpp.server",
       observed="DeadlineExceeded for the long root; its request is closed",
       roots="only the long root; short roots equal direct calls")
async def test_deadline_on_a_real_server(scratch: LlamaServer) -> None:
    async with client(scratch.url, timeout=60) as llm:
        expected = await direct(llm, SHORT, 6)
        flow = completing(lambda p: llm, replicas=1)
        # one root at a time: each short root's deadline counts from its own start
        out = await outcomes(flow, [(p, 6) for p in SHORT] + [(COUNT, LONG)], deadline=4.0,
                             concurrency=1)
    assert out[:4] == expected
    assert isinstance(out[4], DeadlineExceeded) and out[4].index == 4


@fault("cancelling run() while a real server streams", where="llama_cpp.server",
       observed="no task, thread or process of the run is left (the server process itself "
       "stays); the server answers the next call", roots="all (the whole run is cancelled)")
async def test_cancelling_run_against_a_real_server(llama: LlamaServer) -> None:
    seen: list[str] = []
    async with client(llama.url, timeout=60) as llm:
        (expected,) = await direct(llm, SHORT[:1], 6)  # also warms the connection pool

        @alto.stage(replicas=2)
        async def tokens(prompt: str) -> Split[str]:
            messages = [{"role": "user", "content": prompt}]
            async with aclosing(llm.stream(messages, max_tokens=600)) as pieces:
                async for piece in pieces:
                    seen.append(piece)
                    yield piece

        @alto.stage
        async def count(pieces: Gather[str]) -> int:
            return len(pieces)

        @alto.flow
        def f(prompt: str):
            return count(tokens(prompt))

        before = snapshot()
        with anyio.fail_after(HANG):
            async with anyio.create_task_group() as tg:
                tg.start_soon(f.run, [COUNT, COUNT])
                while len(seen) < 3:
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
            await assert_released(before)
            assert await llm.complete(SHORT[0], max_tokens=6) == expected
    assert llama.process.poll() is None


@fault("llama.cpp's server (default settings) cuts a running stream short when another request "
       "arrives", where="llama_cpp.server with interrupt_requests on",
       observed="the cut stream ends with [DONE] but no finish_reason: StageError whose cause "
       "is LLMProtocolError saying the answer was cut short (not a silently truncated answer)",
       roots="only the interrupted root; the newer request's root gets the whole answer")
async def test_interrupted_stream_is_an_error(llama: LlamaServer) -> None:
    from alto.operators.llm import LLMProtocolError, default_model_path

    interrupting = LlamaServer(default_model_path(), interrupt_requests=True)
    seen: list[str] = []
    try:
        async with client(interrupting.url, timeout=60) as llm:

            @alto.stage(replicas=2)
            async def answer(i: int) -> str:
                if i == 1:
                    while len(seen) < 2:  # root 0 is streaming
                        await anyio.sleep(0.01)
                messages = [{"role": "user", "content": COUNT}]
                pieces = []
                async with aclosing(llm.stream(messages, max_tokens=300 if i == 0 else 12)) as it:
                    async for piece in it:
                        seen.append(piece)
                        pieces.append(piece)
                return "".join(pieces)

            @alto.flow
            def f(i: int):
                return answer(i)

            out = await outcomes(f, [0, 1])
            with anyio.fail_after(HANG):
                whole = await llm.chat([{"role": "user", "content": COUNT}], max_tokens=12)
    finally:
        interrupting.stop()
    assert out[1] == whole
    err = out[0]
    assert isinstance(err, StageError) and isinstance(err.cause, LLMProtocolError)
    assert "cut the answer short" in str(err) and interrupting.url in str(err)
