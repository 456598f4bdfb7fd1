"""Flows against the serving-timing emulator with its faults switched on.

Two emulators run on loopback: a healthy one and one that injects a fault. Each flow sends
some roots to each, so a run shows that the faulty server's roots get the fault (retried
away, or a clear error) and the healthy server's roots get exactly the answers the emulator
gives without faults (its text is deterministic in the prompt and seed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import anyio
import pytest
from faultkit import RETRYABLE, client, fault

import alto
from alto import Gather, Split, StageError
from alto.bench.emulator import EmulatorConfig, EmulatorServer, FaultConfig
from alto.operators.llm import (
    LLMConnectionError,
    LLMError,
    LLMProtocolError,
    LLMServerError,
    LLMTimeoutError,
    OpenAIClient,
)

pytestmark = pytest.mark.anyio

HANG = 60
FAST = {"time_scale": 0.05, "answer_sentences": 2}
CONTEXT = (
    "Rivers carry water to the sea. Mountains shape the weather of a region. Forests store "
    "carbon in wood and soil. Deserts get little rain each year. Lakes freeze in cold winters."
)


@pytest.fixture(scope="module")
def healthy() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(**FAST)) as server:
        yield server


def question(i: int) -> str:
    topic = ["rivers", "mountains", "forests", "deserts", "lakes"][i % 5]
    return f"{CONTEXT} Question {i}: what about {topic}?"


def routed_flow(good: OpenAIClient, bad: OpenAIClient, **options: Any) -> alto.Flow:
    """Even roots ask the faulty server, odd roots the healthy one; answers are split into
    sentences, measured, and gathered."""

    @alto.stage(replicas=8, **options)
    async def ask(i: int) -> str:
        llm = bad if i % 2 == 0 else good
        messages = [{"role": "user", "content": question(i)}]
        async with aclosing(llm.stream(messages, max_tokens=48)) as pieces:
            return "".join([p async for p in pieces])

    @alto.stage
    async def sentences(answer: str) -> Split[str]:
        for s in answer.split(". "):
            yield s

    @alto.stage
    async def size(sentence: str) -> int:
        return len(sentence)

    @alto.stage
    async def sizes(ns: Gather[int], i: int) -> tuple[int, list[int]]:
        return i, list(ns)

    @alto.flow
    def f(i: int):
        return sizes(size(sentences(ask(i))), i)

    return f


async def fault_free(llm: OpenAIClient, questions: dict[Any, str], max_tokens: int
                     ) -> dict[Any, str]:
    """The healthy emulator's answers, asked directly (concurrently), by key."""
    answers: dict[Any, str] = {}

    async def one(key: Any, text: str) -> None:
        answers[key] = await llm.chat([{"role": "user", "content": text}], max_tokens=max_tokens)

    async with anyio.create_task_group() as tg:
        for key, text in questions.items():
            tg.start_soon(one, key, text)
    return answers


async def run_routed(healthy: EmulatorServer, faults: FaultConfig, n: int = 12, *,
                     client_options: dict[str, Any] | None = None,
                     **options: Any) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """Outcomes of ``n`` roots, their fault-free results, and the faulty server's counters."""
    with EmulatorServer(EmulatorConfig(**FAST, faults=faults)) as faulty_server:
        async with client(healthy.base_url) as good, client(
            faulty_server.base_url, **(client_options or {})
        ) as bad:
            flow = routed_flow(good, bad, **options)
            with anyio.fail_after(HANG):
                try:
                    outcomes = await flow.run(range(n))
                except alto.PipelineError as err:
                    outcomes = err.results
                texts = await fault_free(good, {i: question(i) for i in range(n)}, 48)
        references = [(i, [len(s) for s in texts[i].split(". ")]) for i in range(n)]
        return outcomes, references, {**faulty_server.stats(), "url": faulty_server.base_url}


def check_odd_roots(outcomes: list[Any], references: list[Any]) -> None:
    for i in range(1, len(outcomes), 2):
        assert outcomes[i] == references[i], f"root {i} on the healthy server"


@fault("the first requests fail (HTTP 429 x 5), then the server recovers",
       where="emulator: fail_first=5, fail_status=429",
       observed="the client retries with backoff; every root gets the fault-free answer",
       roots="none fail")
async def test_first_requests_rate_limited_are_retried(healthy: EmulatorServer) -> None:
    out, ref, stats = await run_routed(healthy, FaultConfig(fail_first=5, fail_status=429))
    assert out == ref
    assert stats["faults"] == {"fail": 5} and stats["requests"] == 6 + 5


@fault("HTTP 429 on every request (rate limit never lifts)",
       where="emulator: rate_limit_rate=1, Retry-After 0.01 s",
       observed="client retries honour Retry-After, then StageError whose cause is "
       "LLMServerError(status 429, attempts=max_retries+1)",
       roots="only roots on that server; the rest get the fault-free answer")
async def test_rate_limit_that_never_lifts(healthy: EmulatorServer) -> None:
    faults = FaultConfig(rate_limit_rate=1.0, retry_after_s=0.01)
    out, ref, stats = await run_routed(healthy, faults, client_options={"max_retries": 2})
    check_odd_roots(out, ref)
    for i in range(0, 12, 2):
        cause = out[i].cause
        assert isinstance(cause, LLMServerError) and cause.status == 429 and cause.attempts == 3
        assert cause.url == f"{stats['url']}/chat/completions"
    assert stats["faults"] == {"rate_limit": 18}


KINDS = {
    "error": (FaultConfig(error_rate=1.0), LLMServerError, "answered HTTP 500"),
    "stall": (FaultConfig(stall_rate=1.0, stall_after_tokens=2, stall_s=60.0), LLMTimeoutError,
              "did not answer within"),
    "drop": (FaultConfig(drop_rate=1.0, break_after_tokens=2), LLMConnectionError,
             "stream broke off"),
    "malformed": (FaultConfig(malformed_rate=1.0, break_after_tokens=2), LLMProtocolError,
                  "malformed server-sent event"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@fault("emulator faults at rate 1: HTTP 500 / stall after 2 tokens / dropped connection / "
       "malformed event", where="emulator: error_rate, stall_rate, drop_rate, malformed_rate",
       observed="StageError whose cause is LLMServerError(500) / LLMTimeoutError / "
       "LLMConnectionError / LLMProtocolError, naming the server's URL; stage retries "
       "(retry_on=LLM errors) counted in attempts",
       roots="only roots on the faulty server; the rest get the fault-free answer")
async def test_faulty_server_fails_only_its_roots(healthy: EmulatorServer, kind: str) -> None:
    faults, error, text = KINDS[kind]
    out, ref, stats = await run_routed(
        healthy, faults, client_options={"timeout": 1.0, "max_retries": 1},
        retries=1, retry_on=RETRYABLE, retry_backoff=0.001,
    )
    check_odd_roots(out, ref)
    retried = kind != "malformed"  # garbage is not worth asking again
    for i in range(0, 12, 2):
        err = out[i]
        assert isinstance(err, StageError) and err.stage == "ask" and err.index == i
        assert isinstance(err.cause, error) and text in str(err)
        assert stats["url"] in str(err.cause) and err.attempts == (2 if retried else 1)
    assert sum(stats["faults"].values()) == stats["requests"]


@fault("random faults (429, 500, drops, malformed events; seeded) over 72 fragments, "
       "with stage retries and dead letters", where="emulator: mixed rates, seed 7",
       observed="every fault is accounted for: injected faults = stage retries + dead "
       "letters; surviving fragments equal the fault-free answers",
       roots="none fail; each gather gets its surviving fragments")
async def test_random_faults_are_all_accounted_for(healthy: EmulatorServer) -> None:
    faults = FaultConfig(rate_limit_rate=0.08, error_rate=0.08, drop_rate=0.06,
                         malformed_rate=0.1, break_after_tokens=1, seed=7)
    with EmulatorServer(EmulatorConfig(**FAST, faults=faults)) as faulty_server:
        async with client(healthy.base_url) as good, client(
            faulty_server.base_url, max_retries=0
        ) as bad:

            @alto.stage
            async def topics(n: int) -> Split[int]:
                for j in range(n):
                    yield j

            @alto.stage(replicas=8, retries=2, retry_on=RETRYABLE, retry_backoff=0.001)
            async def ask(j: int, root: int) -> str:
                messages = [{"role": "user", "content": question(root * 100 + j)}]
                async with aclosing(bad.stream(messages, max_tokens=24)) as pieces:
                    return "".join([p async for p in pieces])

            @alto.stage
            async def answers(texts: Gather[str]) -> list[str]:
                return list(texts)

            @alto.flow
            def f(root: int, n: int):
                return answers(ask(topics(n), root))

            letters: list[StageError] = []
            stats = alto.RunStats()
            inputs = [(r, 6) for r in range(12)]
            with anyio.fail_after(HANG):
                out = await f.run(inputs, dead_letters=letters, stats=stats)
                asked = {(r, j): question(r * 100 + j) for r, n in inputs for j in range(n)}
                reference = await fault_free(good, asked, 24)
        served = faulty_server.stats()
    lost = {(e.index, e.inputs["j"]) for e in letters}
    for r, n in inputs:
        assert out[r] == [reference[r, j] for j in range(n) if (r, j) not in lost]
    injected = sum(served["faults"].values())
    assert injected > 0 and served["requests"] == 72 + stats.stages["ask"].retries
    assert injected == stats.stages["ask"].retries + len(letters)
    assert letters and all(isinstance(e.cause, LLMError) for e in letters)
    assert stats.stages["ask"].retries > 0
