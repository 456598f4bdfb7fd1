"""LocalLLM's calls made in stages: the dispatcher's order and lineage routing over its instances.

A stand-in replaces llama.cpp (no model is loaded), except in the last test, which runs the real
SmolLM2 GGUF with two instances and a few two-token answers.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from alto.lineage import CallSite, fresh_slot
from alto.operators.llm import LocalLLM
from alto.operators.llm import local as local_module

pytestmark = pytest.mark.anyio


class FakeLlama:
    def __init__(self, **settings: Any) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> LocalLLM:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"stand-in")
    monkeypatch.setattr(local_module, "_import_llama", lambda: FakeLlama)
    return LocalLLM(model, **kwargs)


SUBMITTED = {0: 10.0, 1: 11.0, 2: 12.0}  # root 0 entered the run first


def _in_stage(root: int, child: int | None = None) -> None:
    """Make the task running now look like a stage call on a fragment of ``root``."""
    slot = fresh_slot()
    slot.site = CallSite("run-1", "judge", SUBMITTED)
    slot.one = (root,) if child is None else (root, "claims", child)


async def _call(
    llm: LocalLLM,
    prompt: str,
    log: list[tuple[str, int]],
    *,
    root: int | None = None,
    child: int | None = None,
    release: anyio.Event | None = None,
    tokens: int = 0,
) -> None:
    """One call: in a stage on ``root`` (outside one when None); logs (prompt, instance)."""
    if root is not None:
        _in_stage(root, child)
    usage = local_module._Usage()
    async with llm._instance(prompt, usage) as llama:
        log.append((prompt, llm._instances.index(llama)))
        if release is not None:
            await release.wait()
        usage.output = tokens


@pytest.mark.parametrize("route", ["lineage", "least-loaded"])
async def test_a_roots_next_call_goes_to_the_instance_that_served_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    llm = _make(tmp_path, monkeypatch, instances=2, route=route)
    log: list[tuple[str, int]] = []
    release = anyio.Event()
    async with anyio.create_task_group() as tg:  # both roots' first calls at once
        tg.start_soon(lambda: _call(llm, "root 0, claim 0", log, root=0, child=0,
                                    release=release))
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(lambda: _call(llm, "root 1, claim 0", log, root=1, child=0,
                                    release=release))
        await anyio.wait_all_tasks_blocked()
        release.set()
    # both instances free: root 1's next call, then root 0's, one at a time
    await _call(llm, "root 1, claim 1", log, root=1, child=1)
    await _call(llm, "root 0, claim 1", log, root=0, child=1)
    where = dict(log)
    assert {where["root 0, claim 0"], where["root 1, claim 0"]} == {0, 1}
    if route == "lineage":
        assert where["root 1, claim 1"] == where["root 1, claim 0"]
        assert where["root 0, claim 1"] == where["root 0, claim 0"]
    else:  # the least loaded: the first free instance, whoever ran there before
        assert where["root 1, claim 1"] == 0 and where["root 0, claim 1"] == 0
    stats = llm.dispatch_stats()
    assert [r.calls for r in stats.replicas] == [
        sum(1 for _, i in log if i == n) for n in range(2)
    ]
    assert stats.queued == 0 and all(r.inflight == 0 and r.failures == 0 for r in stats.replicas)


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("root-first", [0, 1, 2]),  # the oldest root first
        ("fifo", [1, 2, 0]),  # arrival
        ("least-attained", [2, 1, 0]),  # root 2 had no tokens yet, root 1 had 10, root 0 had 50
    ],
)
async def test_waiting_calls_are_served_in_the_orders_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str, expected: list[int]
) -> None:
    llm = _make(tmp_path, monkeypatch, instances=1, order=order)
    log: list[tuple[str, int]] = []
    await _call(llm, "root 0 earlier", log, root=0, tokens=50)
    await _call(llm, "root 1 earlier", log, root=1, tokens=10)
    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _call(llm, "holder", log, root=0, release=release))
        await anyio.wait_all_tasks_blocked()
        for root in (1, 2, 0):  # they queue in this order
            tg.start_soon(lambda r=root: _call(llm, f"root {r} now", log, root=r))
            await anyio.wait_all_tasks_blocked()
        assert llm.dispatch_stats().queued == 3
        release.set()
    served = [int(p.split()[1]) for p, _ in log if p.endswith(" now")]
    assert served == expected
    assert llm.dispatch_stats().max_queued == 3


@pytest.mark.parametrize(("order", "route"), [("fifo", "round-robin"), ("root-first", "lineage")])
async def test_calls_outside_a_stage_keep_the_longest_prefix_hand_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str, route: str
) -> None:
    llm = _make(tmp_path, monkeypatch, instances=1, order=order, route=route)
    log: list[tuple[str, int]] = []
    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _call(llm, "judge: the first claim", log, release=release))
        await anyio.wait_all_tasks_blocked()
        for prompt in ["queries: claim two", "judge: the second claim", "queries: claim three"]:
            tg.start_soon(lambda p=prompt: _call(llm, p, log))
            await anyio.wait_all_tasks_blocked()
        release.set()
    # the judge prompt's neighbour first, then the queries calls, oldest first
    assert [p for p, _ in log] == [
        "judge: the first claim",
        "judge: the second claim",
        "queries: claim two",
        "queries: claim three",
    ]
    assert llm.dispatch_stats().replicas[0].calls == 0  # the dispatcher never saw them


async def test_a_stage_call_waits_for_its_instance_while_an_outside_call_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = _make(tmp_path, monkeypatch, instances=1)
    held: list[int] = []
    most = [0]
    release = anyio.Event()

    async def call(root: int | None, wait: bool) -> None:
        if root is not None:
            _in_stage(root)
        async with llm._instance("prompt"):
            held.append(1)
            most[0] = max(most[0], len(held))
            if wait:
                await release.wait()
            else:
                await anyio.sleep(0)
            held.pop()

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, None, True)  # outside a stage, holds the only instance
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(call, 0, False)  # admitted by the dispatcher, which cannot see it held
        tg.start_soon(call, None, False)
        await anyio.wait_all_tasks_blocked()
        assert len(llm._claims[id(llm._instances[0])]) == 1
        release.set()
    assert most[0] == 1  # never two calls on one instance
    assert len(llm._free) == 1 and not llm._waiters and not any(llm._claims.values())
    assert llm.dispatch_stats().replicas[0].calls == 1


async def test_closing_turns_away_stage_calls_waiting_for_an_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = _make(tmp_path, monkeypatch, instances=1)
    release = anyio.Event()
    errors: list[Exception] = []
    log: list[tuple[str, int]] = []

    async def waiting() -> None:
        try:
            await _call(llm, "late", log, root=1)
        except local_module.LLMError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _call(llm, "busy", log, root=0, release=release))
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiting)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(llm.aclose)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert [p for p, _ in log] == ["busy"]
    assert errors and "closed" in str(errors[0])
    assert llm._instances[0].closed


def test_the_knobs_are_checked_and_survive_pickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="order"):
        _make(tmp_path, monkeypatch, order="newest-first")
    with pytest.raises(ValueError, match="route"):
        _make(tmp_path, monkeypatch, route="random")
    llm = _make(tmp_path, monkeypatch, instances=2, order="least-attained", route="round-robin")
    copy = pickle.loads(pickle.dumps(llm))
    assert (copy.dispatcher.order, copy.dispatcher.route) == ("least-attained", "round-robin")
    assert copy.dispatcher.targets == ("instance 0", "instance 1")


# -- the real model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two() -> Iterator[LocalLLM]:
    pytest.importorskip("llama_cpp")
    model = LocalLLM(instances=2, n_ctx=512, n_threads=1)
    yield model
    anyio.run(model.aclose)


def _claim(question: str, claim: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Write one short search query that would find evidence "
         "to check the claim made in answer to the question. Only the query."},
        {"role": "user", "content": f"Question: {question}\nClaim: {claim}"},
    ]


Q0 = "How does a hash table resolve collisions between two keys that hash alike?"
Q1 = "Why does the Rust borrow checker reject two mutable references to one value?"


@pytest.mark.models
async def test_a_roots_next_call_reuses_the_prefix_its_instance_kept(two: LocalLLM) -> None:
    async def chat(root: int, question: str, claim: str) -> None:
        _in_stage(root, 0)
        await two.chat(_claim(question, claim), max_tokens=2)

    async with anyio.create_task_group() as tg:  # one root per instance
        tg.start_soon(chat, 0, Q0, "Chaining keeps a list per bucket.")
        tg.start_soon(chat, 1, Q1, "Two mutable references could race.")
    before = two.dispatch_stats().replicas
    await chat(1, Q1, "The compiler proves one writer at a time.")
    after = two.dispatch_stats().replicas
    served = [i for i in range(2) if after[i].calls > before[i].calls]
    assert len(served) == 1
    i = served[0]
    cached = after[i].cached_tokens - before[i].cached_tokens
    prompt = after[i].prompt_tokens - before[i].prompt_tokens
    # the system message and root 1's question were kept (elsewhere only the system message
    # is): only the new claim is evaluated
    system = _claim(Q1, "")[0]["content"]
    kept = len(two._instances[i].tokenize(f"{system}\nQuestion: {Q1}".encode(), add_bos=False))
    assert cached >= kept
    assert prompt - cached < 20
    assert all(r.failures == 0 and r.inflight == 0 for r in after)
