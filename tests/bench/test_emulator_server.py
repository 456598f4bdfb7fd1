"""The serving-timing emulator over HTTP: timing follows its model, text follows the prompt,
faults fire.

Timing checks are behaviour bounds, not benchmarks: the emulator sleeps until absolute
deadlines, so measured times are never below the model; upper bounds are generous.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Literal

import anyio
import httpx
import pydantic
import pytest

from alto.bench.emulator import (
    EMULATOR_MODEL,
    EmulatorConfig,
    EmulatorServer,
    FaultConfig,
    serve_emulator,
    serve_emulator_async,
)
from alto.operators.llm import (
    LLMConnectionError,
    LLMProtocolError,
    LLMServerError,
    LLMTimeoutError,
    OpenAIClient,
)

CONTEXT = (
    "The Eiffel Tower is a wrought-iron tower in Paris. It was completed in 1889 for the "
    "World's Fair. Gustave Eiffel's company designed and built the tower. The tower is 330 "
    "metres tall. Paris is the capital of France. Millions of people visit it every year."
)
QUESTION = [{"role": "user", "content": CONTEXT + " When was the Eiffel Tower completed?"}]

# slow enough that scheduling noise is small next to it, fast enough for a quick test
# (no prefix cache: each test's timing is the unloaded, uncached model's, in any order)
TIMING = EmulatorConfig(
    ttft_s=0.08, prefill_tokens_per_s=4000, tpot_s=0.02, output_tokens=12, prefix_caching=False
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(TIMING) as server:
        yield server


def _client(url: str, **kw: Any) -> OpenAIClient:
    kw.setdefault("api_key_env", None)
    kw.setdefault("backoff", 0.01)
    return OpenAIClient(url, "any-name", **kw)


async def _timed_stream(url: str, messages: list[dict[str, str]], **kw: Any) -> list[float]:
    """Seconds from sending the request to each streamed piece."""
    async with _client(url) as llm:
        start = time.perf_counter()
        return [time.perf_counter() - start async for _ in llm.stream(messages, **kw)]


# -- timing ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_ttft_and_token_times_follow_the_model(emulator: EmulatorServer) -> None:
    times = await _timed_stream(emulator.base_url, QUESTION, max_tokens=12)
    assert len(times) == 12
    prompt_tokens = round(len("\n".join(m["content"] for m in QUESTION)) / 4)
    ttft = TIMING.ttft(prompt_tokens, 1)
    assert times[0] >= ttft  # deadlines are absolute: never early
    assert times[0] < ttft * 2 + 0.5
    assert times[-1] >= ttft + 11 * TIMING.tpot(1)
    gap = (times[-1] - times[0]) / 11
    assert TIMING.tpot(1) * 0.5 <= gap < TIMING.tpot(1) * 3 + 0.05


@pytest.mark.anyio
async def test_ttft_grows_with_the_prompt(emulator: EmulatorServer) -> None:
    long = [{"role": "user", "content": CONTEXT * 30 + " When was it completed?"}]
    modeled_short = TIMING.ttft(len(CONTEXT) // 4, 1)
    modeled_long = TIMING.ttft(len(long[0]["content"]) // 4, 1)
    assert modeled_long > modeled_short + 0.3
    times = await _timed_stream(emulator.base_url, long, max_tokens=2)
    assert times[0] >= modeled_long


@pytest.mark.anyio
async def test_concurrent_sequences_slow_each_other_down() -> None:
    config = EmulatorConfig(
        ttft_s=0.02, tpot_s=0.01, batch_knee=1, batch_slowdown=0.5, output_tokens=20
    )
    body = {"model": "m", "messages": QUESTION, "max_tokens": 20, "stream": False}

    async def one(client: httpx.AsyncClient, url: str, out: list[dict[str, float]]) -> None:
        response = await client.post(f"{url}/chat/completions", json=body)
        out.append(response.json()["emulator"])

    async with serve_emulator_async(config) as url, httpx.AsyncClient(timeout=60) as client:
        alone: list[dict[str, float]] = []
        await one(client, url, alone)
        crowd: list[dict[str, float]] = []
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(one, client, url, crowd)
        elapsed = time.perf_counter() - start
        stats = (await client.get(url.removesuffix("/v1") + "/stats")).json()
    assert stats["peak_running"] == 6 and stats["completed"] == 7 and stats["running"] == 0
    slowest = max(c["modeled_decode_s"] for c in crowd)
    assert slowest > 2 * alone[0]["modeled_decode_s"]  # up to 3.5x slower per token with 6
    assert elapsed >= slowest


@pytest.mark.anyio
async def test_requests_beyond_max_num_seqs_queue() -> None:
    config = EmulatorConfig(ttft_s=0.05, tpot_s=0.01, max_num_seqs=1, output_tokens=3)
    body = {"model": "m", "prompt": "Hello there. How are you?", "max_tokens": 3}
    async with serve_emulator_async(config) as url, httpx.AsyncClient(timeout=60) as client:
        timings: list[dict[str, float]] = []

        async def one() -> None:
            response = await client.post(f"{url}/completions", json=body)
            timings.append(response.json()["emulator"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
        stats = (await client.get(url.removesuffix("/v1") + "/stats")).json()
    assert stats["peak_running"] == 1 and stats["completed"] == 2
    first, second = sorted(timings, key=lambda t: t["started_at_s"])
    assert second["started_at_s"] >= first["finished_at_s"]  # it waited for the first one


def test_config_is_validated() -> None:
    with pytest.raises(pydantic.ValidationError):
        EmulatorConfig(tpot_s=-1)
    with pytest.raises(pydantic.ValidationError):
        EmulatorConfig(not_a_field=1)  # type: ignore[call-arg]


# -- text --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_text_is_drawn_from_the_prompt_and_deterministic(emulator: EmulatorServer) -> None:
    other = [{"role": "user", "content": "Cats sleep a lot. Dogs bark at night. Why do dogs bark?"}]
    async with _client(emulator.base_url) as llm:
        first = await llm.chat(QUESTION, max_tokens=60)
        again = await llm.chat(QUESTION, max_tokens=60)
        different = await llm.chat(other, max_tokens=60)
        streamed = "".join([p async for p in llm.stream(QUESTION, max_tokens=60)])
    assert first == again == streamed
    assert first != different
    # ranked by words shared with the question ("eiffel", "tower", "completed")
    assert first.startswith("The Eiffel Tower is a wrought-iron tower in Paris.")
    assert different.startswith("Dogs bark at night.")
    for sentence in first.split(". "):
        assert sentence.rstrip(".") in CONTEXT


@pytest.mark.anyio
async def test_seed_changes_the_order_of_equally_good_sentences() -> None:
    messages = [{"role": "user", "content": "Alpha one. Beta two. Gamma three. Delta four. Hm?"}]
    answers = set()
    for seed in range(6):
        config = EmulatorConfig(seed=seed, ttft_s=0, tpot_s=0)
        async with serve_emulator_async(config) as url, _client(url) as llm:
            answers.add(await llm.chat(messages))
    assert len(answers) > 1


@pytest.mark.anyio
async def test_stop_max_tokens_and_completions(emulator: EmulatorServer) -> None:
    async with _client(emulator.base_url) as llm:
        assert "1889" not in await llm.chat(QUESTION, stop=["1889"])
        assert len((await llm.chat(QUESTION, max_tokens=3)).split()) == 3
        text = await llm.complete(CONTEXT + " The tower", max_tokens=5)
    assert len(text.split()) == 5 and text.split()[0] in CONTEXT


@pytest.mark.anyio
async def test_answers_say_they_are_emulated(emulator: EmulatorServer) -> None:
    body = {"model": "whatever", "messages": QUESTION, "max_tokens": 2}
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{emulator.base_url}/chat/completions", json=body)
        models = (await client.get(f"{emulator.base_url}/models")).json()
        bad = await client.post(f"{emulator.base_url}/chat/completions", json={**body, "n": 2})
    data = response.json()
    assert data["model"] == EMULATOR_MODEL and "not a model" in data["system_fingerprint"]
    assert response.headers["server"] == EMULATOR_MODEL
    assert (
        data["usage"]["completion_tokens"] == 2 and data["choices"][0]["finish_reason"] == "length"
    )
    assert (
        models["data"][0]["id"] == EMULATOR_MODEL and "not a model" in models["data"][0]["owned_by"]
    )
    assert bad.status_code == 400 and "n > 1" in bad.json()["error"]["message"]
    assert "timing emulation" in repr(emulator)


class Verdict(pydantic.BaseModel):
    label: Literal["supported", "refuted", "unknown"]
    confidence: float = pydantic.Field(ge=0, le=1)


class Report(pydantic.BaseModel):
    answer: str
    year: int
    claims: list[str] = pydantic.Field(min_length=2, max_length=4)
    verdict: Verdict
    note: str | None = None


@pytest.mark.anyio
async def test_structured_output_validates(emulator: EmulatorServer) -> None:
    async with _client(emulator.base_url) as llm:
        report = await llm.structured(QUESTION, Report, max_tokens=400)
    assert report.year == 1889  # the first number in the prompt
    assert all(c in CONTEXT for c in report.claims) and len(set(report.claims)) == len(
        report.claims
    )
    assert report.answer in CONTEXT


@pytest.mark.anyio
async def test_json_object_format_like_llama_cpp(emulator: EmulatorServer) -> None:
    schema = Verdict.model_json_schema()
    body = {
        "model": "m",
        "messages": QUESTION,
        "max_tokens": 100,
        "response_format": {"type": "json_object", "schema": schema},
    }
    async with httpx.AsyncClient() as client:
        data = (await client.post(f"{emulator.base_url}/chat/completions", json=body)).json()
    Verdict.model_validate_json(data["choices"][0]["message"]["content"])


# -- faults ------------------------------------------------------------------------------------


def _faulty(**faults: Any) -> EmulatorConfig:
    return EmulatorConfig(ttft_s=0.001, tpot_s=0.001, faults=FaultConfig(**faults))


@pytest.mark.anyio
async def test_first_failures_are_retried_away() -> None:
    async with EmulatorServer(_faulty(fail_first=2, fail_status=503)) as server:
        async with _client(server.base_url, max_retries=3) as llm:
            assert await llm.chat(QUESTION)
        assert server.stats()["faults"] == {"fail": 2}


@pytest.mark.anyio
async def test_persistent_rate_limit_and_errors_surface() -> None:
    for faults, status in (({"rate_limit_rate": 1.0}, 429), ({"error_rate": 1.0}, 500)):
        async with (
            serve_emulator_async(_faulty(**faults)) as url,
            _client(url, max_retries=1) as llm,
        ):
            with pytest.raises(LLMServerError) as info:
                await llm.chat(QUESTION)
        assert info.value.status == status and info.value.attempts == 2


@pytest.mark.anyio
async def test_stall_becomes_a_timeout() -> None:
    stalled = _faulty(stall_rate=1.0, stall_s=30)
    async with serve_emulator_async(stalled) as url, _client(url, timeout=0.3) as llm:
        with anyio.fail_after(20), pytest.raises(LLMTimeoutError):
            await llm.chat(QUESTION)
    midway = _faulty(stall_rate=1.0, stall_s=30, stall_after_tokens=2)
    async with serve_emulator_async(midway) as url, _client(url, timeout=0.3) as llm:
        got: list[str] = []
        with anyio.fail_after(20), pytest.raises(LLMTimeoutError):
            async for piece in llm.stream(QUESTION):
                got.append(piece)
    assert len(got) == 2


@pytest.mark.anyio
async def test_dropped_and_malformed_streams() -> None:
    dropping = _faulty(drop_rate=1.0, break_after_tokens=3)
    async with serve_emulator_async(dropping) as url, _client(url, max_retries=1) as llm:
        got: list[str] = []
        with pytest.raises(LLMConnectionError, match="broke off"):
            async for piece in llm.stream(QUESTION):
                got.append(piece)
        assert len(got) == 3
        with pytest.raises(LLMConnectionError) as info:  # cut JSON answers are retried
            await llm.chat(QUESTION)
        assert info.value.attempts == 2
    async with serve_emulator_async(_faulty(malformed_rate=1.0)) as url, _client(url) as llm:
        with pytest.raises(LLMProtocolError, match="not JSON"):
            async for _ in llm.stream(QUESTION):
                pass
        with pytest.raises(LLMProtocolError, match="JSON"):
            await llm.chat(QUESTION)


def test_fault_rates_are_reproducible() -> None:
    config = _faulty(error_rate=0.5, seed=3)
    outcomes = []
    for _ in range(2):
        with serve_emulator(config) as url:
            body = {"model": "m", "prompt": "Hi.", "max_tokens": 1}
            outcomes.append(
                [httpx.post(f"{url}/completions", json=body).status_code for _ in range(12)]
            )
    assert outcomes[0] == outcomes[1] and {200, 500} == set(outcomes[0])


def test_process_mode_and_cli() -> None:
    with EmulatorServer(EmulatorConfig(ttft_s=0, tpot_s=0), mode="process") as server:
        assert server.base_url.startswith("http://127.0.0.1:") and server.port > 0
        body = {"model": "m", "messages": QUESTION, "max_tokens": 4, "stream": True}
        with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body) as response:
            lines = [ln for ln in response.iter_lines() if ln]
        assert lines[-1] == "data: [DONE]" and len(lines) == 6  # 4 tokens, final chunk, DONE
        final = json.loads(lines[-2].removeprefix("data: "))
        assert final["choices"][0]["finish_reason"] == "length"
        assert server.stats()["completed"] == 1
    assert server.base_url == ""
