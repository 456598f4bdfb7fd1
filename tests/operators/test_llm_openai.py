"""OpenAIClient against small fake HTTP servers: retries, errors, SSE parsing, secrets, timeouts.

Each fake server runs in the test's own event loop on a free loopback port and speaks just
enough HTTP/1.1 (one request per connection) to script the answers.
"""

from __future__ import annotations

import json
import pickle
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import pydantic
import pytest
from faultkit import Request, read_request

from alto.operators.llm import (
    LLMConnectionError,
    LLMProtocolError,
    LLMServerError,
    LLMTimeoutError,
    OpenAIClient,
)


@dataclass
class Fake:
    """A scripted server: ``handler(request, index, send)`` writes the raw answer."""

    handler: Callable[[Request, int, Callable[[bytes], Awaitable[None]]], Awaitable[None]]
    requests: list[Request] = field(default_factory=list)


@asynccontextmanager
async def serve(fake: Fake) -> AsyncIterator[str]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def one(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            request = await read_request(stream)
            if request is None:
                return
            fake.requests.append(request)
            try:
                await fake.handler(request, len(fake.requests) - 1, stream.send)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, one)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            tg.cancel_scope.cancel()


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(raw)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {"Content-Type": "application/json"}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def chat_body(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


def delta(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode() + b"\n\n"


USER = [{"role": "user", "content": "hi"}]


def client(url: str, **kw: Any) -> OpenAIClient:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("api_key_env", None)
    return OpenAIClient(url, "test-model", **kw)


# -- plain calls and retries -----------------------------------------------------------------


@pytest.mark.anyio
async def test_chat_and_completion_requests() -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        if req.path == "/v1/completions":
            await send(answer(200, {"choices": [{"text": " Paris"}]}))
        else:
            await send(answer(200, chat_body("hello")))

    fake = Fake(handler)
    async with serve(fake) as url, client(url + "/v1/") as llm:
        assert await llm.chat(USER, max_tokens=7, stop="\n") == "hello"
        assert await llm.complete("The capital is", max_tokens=3) == " Paris"
    chat, completion = fake.requests[0].json(), fake.requests[1].json()
    assert fake.requests[0].path == "/v1/chat/completions"
    assert chat["model"] == "test-model" and chat["messages"] == USER
    assert chat["max_tokens"] == 7 and chat["stop"] == ["\n"] and chat["stream"] is False
    assert completion["prompt"] == "The capital is" and "stop" not in completion


@pytest.mark.anyio
async def test_429_then_success_is_retried() -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        if i == 0:
            await send(answer(429, {"error": "slow down"}, {"Retry-After": "0"}))
        elif i == 1:
            await send(answer(503, {"error": "busy"}))
        else:
            await send(answer(200, chat_body("finally")))

    fake = Fake(handler)
    async with serve(fake) as url, client(url, max_retries=3) as llm:
        assert await llm.chat(USER) == "finally"
    assert len(fake.requests) == 3


@pytest.mark.anyio
async def test_persistent_500_names_url_and_status() -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        await send(answer(500, {"error": "model crashed"}))

    fake = Fake(handler)
    async with serve(fake) as url, client(url, max_retries=2) as llm:
        with pytest.raises(LLMServerError) as info:
            await llm.chat(USER)
    err = info.value
    assert err.status == 500 and err.attempts == 3 and len(fake.requests) == 3
    assert err.url == f"{url}/v1/chat/completions"
    assert err.url in str(err) and "500" in str(err) and "model crashed" in str(err)


@pytest.mark.anyio
async def test_client_errors_are_not_retried() -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        await send(answer(404, {"error": "no such model"}))

    fake = Fake(handler)
    async with serve(fake) as url, client(url, max_retries=3) as llm:
        with pytest.raises(LLMServerError, match="404"):
            await llm.complete("x")
    assert len(fake.requests) == 1


HTML_404 = (
    b'<!DOCTYPE HTML>\n<html lang="en">\n    <head>\n        <meta charset="utf-8">\n'
    b"        <title>Error response</title>\n    </head>\n    <body>\n"
    b"        <h1>Error response</h1>\n        <p>Error code: 404</p>\n" + b"<p>x</p>\n" * 100
    + b"    </body>\n</html>\n"
)


@pytest.mark.anyio
async def test_an_html_error_page_is_named_in_one_line_not_quoted() -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        await send(answer(404, HTML_404, {"Content-Type": "text/html"}))

    fake = Fake(handler)
    async with serve(fake) as url, client(url) as llm:
        with pytest.raises(LLMServerError) as info:
            await llm.chat(USER)
    err = info.value
    assert str(err) == (
        f'LLM server at {url}/v1/chat/completions answered HTTP 404: an HTML page '
        '("Error response")'
    )
    assert err.body.startswith("<!DOCTYPE HTML>"), "the body itself is kept for callers"
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


def test_bodies_are_described_on_one_line() -> None:
    from alto.operators.llm.errors import describe_body

    assert describe_body("<html><body>hi</body></html>") == "an HTML page"
    assert describe_body("  <TITLE>\n Bad\n Gateway </TITLE>") == 'an HTML page ("Bad Gateway")'
    assert describe_body('{"error":\n   {"message": "no"}}') == '{"error": {"message": "no"}}'
    assert describe_body("x" * 1000, limit=20) == "x" * 20 + "..."
    assert describe_body("a < b\nc") == "a < b c"


@pytest.mark.anyio
async def test_cut_off_answer_is_retried_and_bad_json_is_a_protocol_error() -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        if i == 0:  # promises 100 bytes, sends 10, hangs up
            await send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"{" * 10)
        else:
            await send(answer(200, b"<html>not json</html>", {"Content-Type": "text/html"}))

    fake = Fake(handler)
    async with serve(fake) as url, client(url) as llm:
        with pytest.raises(LLMProtocolError, match="JSON"):
            await llm.chat(USER)
    assert len(fake.requests) == 2


@pytest.mark.anyio
async def test_refused_connection_fails_clearly_after_retries() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    async with client(url, max_retries=2) as llm:
        with pytest.raises(LLMConnectionError) as info:
            await llm.chat(USER)
    assert info.value.attempts == 3
    assert f"{url}/v1/chat/completions" in str(info.value) and "3 attempts" in str(info.value)


@pytest.mark.anyio
async def test_stalled_server_times_out() -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        if i == 1:  # streams one token, then stalls
            await send(SSE_HEAD + delta("one"))
        await anyio.sleep_forever()

    fake = Fake(handler)
    async with serve(fake) as url, client(url, timeout=0.3) as llm:
        with anyio.fail_after(10), pytest.raises(LLMTimeoutError) as info:
            await llm.chat(USER)
        assert info.value.phase == "read" and info.value.timeout == 0.3
        got: list[str] = []
        with anyio.fail_after(10), pytest.raises(LLMTimeoutError):
            async for piece in llm.stream(USER):
                got.append(piece)
        assert got == ["one"]
    assert len(fake.requests) == 2  # timeouts are not retried


# -- streaming ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_stream_yields_each_token_as_it_arrives() -> None:
    first_seen = anyio.Event()

    async def handler(req: Request, i: int, send: Any) -> None:
        await send(SSE_HEAD + delta("Hel"))
        await first_seen.wait()  # the rest is sent only once the client has the first token
        await send(delta("lo") + b"data: [DONE]\n\n")

    fake = Fake(handler)
    got: list[str] = []
    async with serve(fake) as url, client(url) as llm:
        with anyio.fail_after(10):
            async for piece in llm.stream(USER, max_tokens=5):
                got.append(piece)
                first_seen.set()
    assert got == ["Hel", "lo"]
    assert fake.requests[0].json()["stream"] is True


@pytest.mark.anyio
async def test_sse_comments_fields_and_empty_chunks_are_handled() -> None:
    events = (
        b": keep-alive\n\n"
        b"event: message\nid: 1\n"
        + b'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n'
        + delta("a")
        + b'data: {"choices": [{"delta": {"content": null}}]}\n\n'
        + b'data: {"choices": [], "usage": {"total_tokens": 3}}\n\n'
        + b'data: {"choices": [{"delta":\ndata:  {"content": "b"}}]}\n\n'  # two data lines
        + delta("c")
        + b"data: [DONE]"  # no final blank line
    )

    async def handler(req: Request, i: int, send: Any) -> None:
        await send(SSE_HEAD + events)

    async with serve(Fake(handler)) as url, client(url) as llm:
        assert [p async for p in llm.stream(USER)] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (delta("a") + b"data: {not json\n\n", "not JSON"),
        (delta("a") + b"this is not an SSE line\n\n", "malformed server-sent event line"),
        (delta("a") + delta("b"), r"ended without 'data: \[DONE\]'"),
    ],
)
@pytest.mark.anyio
async def test_malformed_sse_is_a_clear_error(body: bytes, match: str) -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        await send(SSE_HEAD + body)

    fake = Fake(handler)
    got: list[str] = []
    async with serve(fake) as url, client(url) as llm:
        with pytest.raises(LLMProtocolError, match=match) as info:
            async for piece in llm.stream(USER):
                got.append(piece)
    assert got[0] == "a" and info.value.url.endswith("/v1/chat/completions")
    assert len(fake.requests) == 1  # a stream that has started is not retried


@pytest.mark.anyio
async def test_stream_that_is_not_sse_is_a_clear_error() -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        await send(answer(200, chat_body("whole answer")))

    async with serve(Fake(handler)) as url, client(url) as llm:
        with pytest.raises(LLMProtocolError, match="text/event-stream"):
            async for _ in llm.stream(USER):
                pass


@pytest.mark.anyio
async def test_stream_retries_before_the_first_byte() -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        if i == 0:
            await send(answer(503, {"error": "warming up"}))
        else:
            await send(SSE_HEAD + delta("ok") + b"data: [DONE]\n\n")

    fake = Fake(handler)
    async with serve(fake) as url, client(url) as llm:
        assert [p async for p in llm.stream(USER)] == ["ok"]
    assert len(fake.requests) == 2


@pytest.mark.anyio
async def test_error_event_in_stream_is_a_server_error() -> None:
    error = {"error": {"message": "context too long", "code": 400}}

    async def handler(req: Request, i: int, send: Any) -> None:
        await send(SSE_HEAD + b"data: " + json.dumps(error).encode() + b"\n\n")

    async with serve(Fake(handler)) as url, client(url) as llm:
        with pytest.raises(LLMServerError, match="context too long") as info:
            async for _ in llm.stream(USER):
                pass
    assert info.value.status == 400


# -- API key -----------------------------------------------------------------------------------

SECRET = "sk-test-0123456789abcdef"


@pytest.mark.anyio
async def test_api_key_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALTO_TEST_LLM_KEY", SECRET)

    async def handler(req: Request, i: int, send: Any) -> None:
        if i == 0:
            await send(answer(200, chat_body("welcome")))
        else:  # a careless server that echoes the request headers into its error
            await send(answer(401, {"error": f"bad key {req.headers.get('authorization')}"}))

    fake = Fake(handler)
    async with serve(fake) as url:
        llm = client(url, api_key_env="ALTO_TEST_LLM_KEY")
        async with llm:
            assert await llm.chat(USER) == "welcome"
            with pytest.raises(LLMServerError) as info:
                await llm.chat(USER)
        assert fake.requests[0].headers["authorization"] == f"Bearer {SECRET}"
        err = info.value
        for shown in (repr(llm), str(llm.name), str(err), repr(err), err.body, repr(err.args)):
            assert SECRET not in shown
        assert "***" in err.body and "$ALTO_TEST_LLM_KEY set" in repr(llm)


@pytest.mark.anyio
async def test_no_key_no_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALTO_TEST_LLM_KEY", raising=False)

    async def handler(req: Request, i: int, send: Any) -> None:
        await send(answer(200, chat_body("ok")))

    fake = Fake(handler)
    async with serve(fake) as url, client(url, api_key_env="ALTO_TEST_LLM_KEY") as llm:
        await llm.chat(USER)
    assert "authorization" not in fake.requests[0].headers


# -- structured output -------------------------------------------------------------------------


class City(pydantic.BaseModel):
    name: str
    population: int


@pytest.mark.anyio
async def test_structured_falls_back_to_json_object_once() -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        fmt = req.json()["response_format"]
        if fmt["type"] == "json_schema":  # like llama.cpp's server: only json_object
            await send(answer(422, {"detail": "response_format.type: json_object or text"}))
        else:
            assert fmt["schema"]["title"] == "City"
            await send(answer(200, chat_body('{"name": "Oslo", "population": 700000}')))

    fake = Fake(handler)
    async with serve(fake) as url, client(url) as llm:
        first = await llm.structured([{"role": "user", "content": "Oslo"}], City)
        second = await llm.structured([{"role": "user", "content": "Oslo"}], City)
    assert first == second == City(name="Oslo", population=700000)
    kinds = [r.json()["response_format"]["type"] for r in fake.requests]
    assert kinds == ["json_schema", "json_object", "json_object"]
    schema = fake.requests[0].json()["response_format"]["json_schema"]
    assert schema["name"] == "City" and schema["schema"]["required"] == ["name", "population"]


@pytest.mark.anyio
async def test_structured_probe_still_retries_transient_failures() -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        if i == 0:  # the first (probing) request meets a busy server
            await send(answer(503, {"error": "busy"}))
        else:
            await send(answer(200, chat_body('{"name": "Rome", "population": 3}')))

    fake = Fake(handler)
    async with serve(fake) as url, client(url) as llm:
        assert await llm.structured(USER, City) == City(name="Rome", population=3)
    kinds = [r.json()["response_format"]["type"] for r in fake.requests]
    assert kinds == ["json_schema", "json_schema"]  # not mistaken for a refusal


@pytest.mark.anyio
async def test_structured_reasks_through_http() -> None:
    answers = ['{"name": "Oslo"}', '{"name": "Oslo", "population": 7}']

    async def handler(req: Request, i: int, send: Any) -> None:
        await send(answer(200, chat_body(answers[i])))

    fake = Fake(handler)
    async with serve(fake) as url, client(url, json_mode="json_schema") as llm:
        assert await llm.structured(USER, City) == City(name="Oslo", population=7)
    reask = fake.requests[1].json()["messages"][-1]["content"]
    assert "population" in reask and "Field required" in reask


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="http"):
        OpenAIClient("localhost:8000", "m")
    with pytest.raises(ValueError, match="json_mode"):
        OpenAIClient("http://x", "m", json_mode="xml")  # type: ignore[arg-type]
    llm = OpenAIClient("http://x:1/v1/", "m", max_concurrency=8, api_key_env=None)
    assert llm.base_url == "http://x:1/v1" and llm.max_concurrency == 8


def test_one_client_serves_several_event_loops() -> None:
    async def handler(req: Request, i: int, send: Any) -> None:
        await send(answer(200, chat_body(f"answer {i}")))

    llm = client("http://127.0.0.1:1")  # the port is set per run below

    async def run(expected: str) -> None:
        async with serve(Fake(handler)) as url:
            llm.base_url = url + "/v1"
            assert await llm.chat(USER) == expected
            assert await llm.chat(USER) == expected.replace("0", "1")

    for _ in range(3):  # alto.run and asyncio.run start a fresh loop each time
        anyio.run(run, "answer 0")
