"""LocalLLM on the real SmolLM2-135M GGUF (llama.cpp, offline). One model load per module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import anyio
import anyio.lowlevel
import pydantic
import pytest

from alto.operators.llm import LocalLLM

pytestmark = pytest.mark.models

USER = [{"role": "user", "content": "Name three colours, one per line."}]


@pytest.fixture(scope="module")
def llm() -> Iterator[LocalLLM]:
    pytest.importorskip("llama_cpp")
    model = LocalLLM(instances=1, n_ctx=1024)
    yield model
    anyio.run(model.aclose)


@pytest.mark.anyio
async def test_chat_writes_text(llm: LocalLLM) -> None:
    text = await llm.chat(USER, max_tokens=24)
    assert text.strip()
    assert llm.max_concurrency == 1 and "SmolLM2" in repr(llm)


@pytest.mark.anyio
async def test_max_tokens_is_respected(llm: LocalLLM) -> None:
    prompt = [{"role": "user", "content": "Write a long story about a dragon."}]
    pieces = [p async for p in llm.stream(prompt, max_tokens=5)]
    assert 1 <= len(pieces) <= 5  # llama.cpp streams one token per piece
    llama = llm._instances[0]
    assert len(llama.tokenize("".join(pieces).encode(), add_bos=False)) <= 6
    longer = await llm.chat(prompt, max_tokens=20)
    assert len(longer) > len("".join(pieces))


@pytest.mark.anyio
async def test_stop_sequence_ends_the_answer(llm: LocalLLM) -> None:
    free = await llm.complete("Numbers: 1, 2, 3, 4, 5, 6, 7, 8", max_tokens=20)
    assert "," in free  # without a stop it keeps counting
    stopped = await llm.complete("Numbers: 1, 2, 3, 4, 5, 6, 7, 8", max_tokens=20, stop=[","])
    assert "," not in stopped and len(stopped) < len(free)


@pytest.mark.anyio
async def test_stream_yields_pieces_that_make_the_chat_answer(llm: LocalLLM) -> None:
    pieces = [p async for p in llm.stream(USER, max_tokens=16)]
    assert len(pieces) >= 3 and all(pieces)
    assert "".join(pieces) == await llm.chat(USER, max_tokens=16)  # greedy: same answer


class Person(pydantic.BaseModel):
    name: str
    age: int


@pytest.mark.anyio
async def test_structured_output_validates(llm: LocalLLM) -> None:
    messages = [{"role": "user", "content": "Alice is 30 years old. Who is this?"}]
    person = await llm.structured(messages, Person, max_tokens=64)
    assert isinstance(person, Person) and person.name


STORY = [{"role": "user", "content": "Write a very long story about the sea."}]


async def _context_after_one_token(llm: LocalLLM) -> int:
    """Tokens in the model's context after a 1-token answer to STORY (its prompt, plus one)."""
    await llm.chat(STORY, max_tokens=1)
    return int(llm._instances[0].n_tokens)


@pytest.mark.anyio
async def test_leaving_a_stream_early_stops_generation(llm: LocalLLM) -> None:
    baseline = await _context_after_one_token(llm)
    async with aclosing(llm.stream(STORY, max_tokens=400)) as stream:
        async for _ in stream:
            break
    # the worker stopped within a token or two of the break, not after 400 tokens
    assert int(llm._instances[0].n_tokens) - baseline < 10
    assert llm._free == llm._instances  # and gave the instance back


@pytest.mark.anyio
async def test_cancelling_a_call_stops_generation(llm: LocalLLM) -> None:
    baseline = await _context_after_one_token(llm)
    llama = llm._instances[0]
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await llm.chat(STORY, max_tokens=400)

            tg.start_soon(call)
            while int(llama.n_tokens) < baseline + 3:  # a few tokens into the answer
                await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
    assert int(llama.n_tokens) - baseline < 15  # stopped soon after, not at 400 tokens
    assert llm._free == llm._instances
    assert (await llm.chat(USER, max_tokens=3)).strip()


@pytest.mark.anyio
async def test_cancelling_at_any_moment_never_hangs(llm: LocalLLM) -> None:
    for checkpoints in range(8):  # cancel before, while and after the job reaches a worker
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(llm.chat, STORY)
                for _ in range(checkpoints):
                    await anyio.lowlevel.checkpoint()
                tg.cancel_scope.cancel()
        assert llm._free == llm._instances


@pytest.mark.anyio
async def test_cancelling_while_waiting_for_an_instance(llm: LocalLLM) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(llm.chat, STORY)  # holds the only instance
        await anyio.lowlevel.checkpoint()
        with anyio.move_on_after(0) as scope:  # gives up before its turn, or at once
            await llm.chat(USER, max_tokens=3)
        assert scope.cancelled_caught
        tg.cancel_scope.cancel()
    assert llm._free == llm._instances
    assert (await llm.chat(USER, max_tokens=3)).strip()


@pytest.mark.anyio
async def test_calls_beyond_the_pool_wait_their_turn(llm: LocalLLM) -> None:
    results: list[str] = []

    async def one() -> None:
        results.append(await llm.chat(USER, max_tokens=4))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
    assert len(results) == 3 and len(set(results)) == 1  # same greedy answer, no interference


def test_llama_cpp_is_imported_only_when_a_model_is_created() -> None:
    import subprocess

    code = (
        "import sys\n"
        "from alto.operators.llm import LocalLLM, default_model_path\n"
        "assert default_model_path().is_file()\n"
        "print('llama_cpp' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no GGUF"):
        LocalLLM(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="instances"):
        LocalLLM(instances=0)
