"""The recording operators: what each call records, root attribution, causal dependencies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import numpy as np
import pytest

from alto.bench.record import (
    FULL,
    Recorder,
    RecordingEmbedder,
    RecordingLLM,
    RecordingRetriever,
    current_root,
    recording_operators,
    tracking_dependencies,
)
from alto.operators.embedding import HashEmbedder
from alto.operators.llm.base import Request
from alto.testing import FakeLLM

pytestmark = pytest.mark.anyio


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class WordStream(FakeLLM):
    """Streams its reply the way the emulator does: each piece a word with its leading space."""

    async def _generate_stream(self, request: Request) -> AsyncGenerator[str, None]:
        for i in range(request.max_tokens):
            await asyncio.sleep(0)
            yield f" w{i}"


async def test_a_call_records_its_step_timing_and_tokens() -> None:
    recorder = Recorder()
    llm = RecordingLLM(FakeLLM({"hello": "one two three"}), recorder)

    async def greet() -> str:
        return await llm.chat(ask("hello there"))

    assert await greet() == "one two three"
    (call,) = recorder.calls
    assert (call.operator, call.method, call.step) == ("llm", "chat", "greet")
    assert call.tokens == 3 and call.prompt_chars == len("hello there")
    assert call.start <= call.end and call.error is None and call.root is None
    assert llm.max_concurrency == 8  # the inner LLM's, so Alto sizes its stages alike


async def test_structured_output_is_recorded_per_attempt_under_the_callers_name() -> None:
    import pydantic

    class Verdict(pydantic.BaseModel):
        supported: bool

    recorder = Recorder()
    llm = RecordingLLM(FakeLLM(), recorder)

    async def judge() -> Verdict:
        return await llm.structured(ask("is it so?"), Verdict)

    assert isinstance(await judge(), Verdict)
    (call,) = recorder.calls
    assert (call.method, call.step) == ("json", "judge")
    assert call.prompt_chars > len("is it so?")  # the schema instruction is part of the prompt


async def test_failures_are_recorded_and_raised() -> None:
    class Broken(FakeLLM):
        async def chat(self, messages: Any, **kwargs: Any) -> str:
            msg = "the server said no"
            raise ValueError(msg)

    recorder = Recorder()
    llm = RecordingLLM(Broken(), recorder)
    with pytest.raises(ValueError, match="said no"):
        await llm.chat(ask("x"))
    (call,) = recorder.calls
    assert call.error == "ValueError: the server said no"


async def test_a_stream_left_early_is_not_a_failure() -> None:
    recorder = Recorder()
    llm = RecordingLLM(WordStream(), recorder)
    async with aclosing(llm.stream(ask("go"), max_tokens=50)) as stream:
        async for piece in stream:
            if piece == " w4":
                break
    (call,) = recorder.calls
    assert call.method == "stream" and call.error is None
    assert call.tokens == 5


async def test_calls_carry_the_root_they_work_for() -> None:
    recorder = Recorder()
    llm = RecordingLLM(FakeLLM(delay=0.001), recorder)

    async def root(index: int) -> None:
        current_root.set(index)
        async with asyncio.TaskGroup() as group:  # spawned tasks inherit the root
            for i in range(3):
                group.create_task(llm.chat(ask(f"{index}-{i}")))

    await asyncio.gather(*(asyncio.create_task(root(i)) for i in range(4)))
    assert sorted(c.root for c in recorder.calls) == sorted([0, 1, 2, 3] * 3)
    await llm.chat(ask("outside"))
    assert recorder.calls[-1].root is None


async def test_slots_bound_the_calls_in_flight() -> None:
    recorder = Recorder()
    ops = recording_operators(_ops(FakeLLM(delay=0.005)), recorder, llm_slots=2)
    await asyncio.gather(*(ops.llm.chat(ask(str(i))) for i in range(7)))
    events = sorted([(c.start, 1) for c in recorder.calls] + [(c.end, -1) for c in recorder.calls])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2
    assert sum(c.queued_s > 0 for c in recorder.calls) >= 5


def _ops(llm: Any) -> Any:
    from examples.common import Operators

    return Operators(llm=llm, embedder=HashEmbedder())


async def test_embedder_and_retriever_proxies_record_and_pass_through() -> None:
    from alto.operators.retriever import Retriever

    recorder = Recorder()
    embedder = HashEmbedder()
    retriever = await Retriever.build(["alpha beta", "gamma delta", "beta gamma"], embedder)
    rec_embedder = RecordingEmbedder(embedder, recorder)
    rec_retriever = RecordingRetriever(retriever, recorder)
    assert rec_embedder.dim == embedder.dim and len(rec_retriever) == 3

    async def embed_step() -> Any:
        return await rec_embedder.embed(["alpha", "beta"])

    vectors = await embed_step()
    assert vectors.shape == (2, embedder.dim)
    hits = rec_retriever.search_vectors(np.asarray(vectors), 2)
    assert hits == retriever.search_vectors(vectors, 2)
    await rec_retriever.search(["beta"], 1)
    await rec_retriever.rerank("beta", hits[0], 1)
    methods = [(c.operator, c.method, c.items) for c in recorder.calls]
    assert methods == [
        ("embedder", "embed", 2),
        ("retriever", "search_vectors", 2),
        ("retriever", "search", 1),
        ("retriever", "rerank", 2),
    ]
    assert recorder.calls[0].step == "embed_step"
    assert [c.id for c in recorder.calls] == [0, 1, 2, 3]


# -- causal dependencies ------------------------------------------------------------------------


async def test_fan_out_and_gather_with_a_task_group() -> None:
    recorder = Recorder()
    llm = RecordingLLM(FakeLLM(delay=0.001), recorder)

    async def branch(name: str) -> str:
        first = await llm.chat(ask(name))
        return await llm.chat(ask(first + name))

    with tracking_dependencies() as result:
        await llm.chat(ask("plan"))
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(branch(n)) for n in ("left", "right")]
        joined = " ".join(t.result() for t in tasks)
        await llm.chat(ask(joined))
    calls = sorted(recorder.calls, key=lambda c: c.id)
    plan, last = calls[0], calls[-1]
    chains = calls[1:-1]
    assert plan.deps == ()
    firsts = [c for c in chains if c.deps == ((plan.id, FULL),)]
    assert len(firsts) == 2  # both branches start from the plan only, not from each other
    for first in firsts:
        (second,) = [c for c in chains if (first.id, FULL) in c.deps]
        assert dict(second.deps) == {plan.id: FULL, first.id: FULL}
    assert dict(last.deps) == {c.id: FULL for c in calls[:-1]}
    assert result.seen == {c.id: FULL for c in calls}


async def test_asyncio_gather_and_awaiting_a_task_hand_over_dependencies() -> None:
    recorder = Recorder()
    llm = RecordingLLM(FakeLLM(delay=0.001), recorder)
    with tracking_dependencies():
        a, b = await asyncio.gather(llm.chat(ask("a")), llm.chat(ask("b")))
        task = asyncio.create_task(llm.chat(ask("c")))
        unrelated = asyncio.create_task(llm.chat(ask("d")))
        c = await task
        await llm.chat(ask(a + b + c))
        await unrelated
    by_id = {c.id: c for c in recorder.calls}
    assert {dep for dep, _ in by_id[4].deps} == {0, 1, 2}  # not the task it has not read (3)
    # spawned after the gather was read: it could use a and b, so it waits for them too
    assert by_id[3].deps == ((0, FULL), (1, FULL))


async def test_a_task_spawned_mid_stream_depends_on_the_tokens_read_so_far() -> None:
    recorder = Recorder()
    llm = RecordingLLM(WordStream(), recorder)
    with tracking_dependencies() as result:
        async with asyncio.TaskGroup() as group:
            spawned = []
            async with aclosing(llm.stream(ask("go"), max_tokens=8)) as stream:
                async for piece in stream:
                    if piece in (" w2", " w5"):
                        spawned.append(group.create_task(llm.chat(ask(piece))))
        for task in spawned:
            task.result()
    stream_call = next(c for c in recorder.calls if c.method == "stream")
    chats = sorted((c for c in recorder.calls if c.method == "chat"), key=lambda c: c.id)
    assert [c.deps for c in chats] == [((stream_call.id, 3),), ((stream_call.id, 6),)]
    assert stream_call.tokens == 8
    assert result.seen[stream_call.id] == FULL


async def test_without_tracking_no_dependencies_are_recorded() -> None:
    recorder = Recorder()
    llm = RecordingLLM(FakeLLM(), recorder)
    await llm.chat(ask("a"))
    await llm.chat(ask("b"))
    assert all(c.deps == () for c in recorder.calls)
    assert asyncio.get_running_loop().get_task_factory() is None


async def test_tracking_restores_the_task_factory_after_an_error() -> None:
    loop = asyncio.get_running_loop()
    before = loop.get_task_factory()
    with pytest.raises(RuntimeError), tracking_dependencies():
        msg = "boom"
        raise RuntimeError(msg)
    assert loop.get_task_factory() is before
