"""LocalLLM's instance pool with a stand-in for llama.cpp: who gets a freed model, and when."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from alto.operators.llm import LLMError, LocalLLM
from alto.operators.llm import local as local_module

pytestmark = pytest.mark.anyio


class FakeLlama:
    def __init__(self, **settings: Any) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def llm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalLLM:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"stand-in")
    monkeypatch.setattr(local_module, "_import_llama", lambda: FakeLlama)
    return LocalLLM(model, instances=1)


async def _hold(llm: LocalLLM, prompt: str, order: list[str], release: anyio.Event) -> None:
    async with llm._instance(prompt):
        order.append(prompt)
        await release.wait()


async def _queue(llm: LocalLLM, prompts: list[str], order: list[str]) -> None:
    """One call holds the model while ``prompts`` queue up in this order; then all run."""
    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_hold, llm, "judge: the first claim", order, release)
        await anyio.wait_all_tasks_blocked()
        done = anyio.Event()
        done.set()
        for prompt in prompts:
            tg.start_soon(_hold, llm, prompt, order, done)
            await anyio.wait_all_tasks_blocked()
        release.set()


async def test_a_freed_model_goes_to_the_call_sharing_its_prompt_prefix(llm: LocalLLM) -> None:
    order: list[str] = []
    waiting = ["queries: claim two", "judge: the second claim", "queries: claim three"]
    await _queue(llm, waiting, order)
    # after a judge prompt, the waiting judge call first; then the queries calls, oldest first
    assert order == [
        "judge: the first claim",
        "judge: the second claim",
        "queries: claim two",
        "queries: claim three",
    ]


async def test_a_call_is_passed_over_a_bounded_number_of_times(llm: LocalLLM) -> None:
    order: list[str] = []
    judges = [f"judge: claim {i}" for i in range(8)]
    await _queue(llm, ["queries: the odd one", *judges], order)
    position = order.index("queries: the odd one")
    assert position == 1 + local_module.MAX_PASSED  # the first call, then MAX_PASSED judges
    assert sorted(order) == sorted(["judge: the first claim", "queries: the odd one", *judges])


async def test_a_cancelled_waiter_neither_holds_nor_loses_the_model(llm: LocalLLM) -> None:
    order: list[str] = []
    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_hold, llm, "judge: one", order, release)
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as scope:
            scope.cancel()
            async with llm._instance("judge: two"):
                order.append("never")
        release.set()
    async with llm._instance("queries: after"):
        order.append("queries: after")
    assert order == ["judge: one", "queries: after"]
    assert len(llm._free) == 1 and not llm._waiters


async def test_closing_waits_for_calls_in_flight_and_turns_waiters_away(llm: LocalLLM) -> None:
    release = anyio.Event()
    order: list[str] = []
    errors: list[Exception] = []

    async def waiting() -> None:
        try:
            async with llm._instance("queries: late"):
                order.append("late")
        except LLMError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(_hold, llm, "judge: busy", order, release)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiting)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(llm.aclose)
        await anyio.wait_all_tasks_blocked()
        assert not llm._instances[0].closed  # the call in flight still has its model
        release.set()
    assert order == ["judge: busy"]
    assert errors and "closed" in str(errors[0])
    assert llm._instances[0].closed
