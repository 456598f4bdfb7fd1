"""The critical-path lower bound: service times from the emulator's model, longest chains."""

from __future__ import annotations

import importlib

import pytest

from alto.bench.bound import critical_path, llm_service_time, prompt_tokens
from alto.bench.emulator import EmulatorConfig
from alto.bench.record import FULL, Call, Recorder, recording_operators, tracking_dependencies
from alto.testing import FakeLLM

# 400 prompt characters = 100 tokens; ttft 0.1 + 100 / 1000 = 0.2 s; 0.01 s per further token
# (no prefix cache: the chain tests price every prompt in full)
MODEL = EmulatorConfig(
    ttft_s=0.1, prefill_tokens_per_s=1000, tpot_s=0.01, chars_per_token=4, prefix_caching=False
)


def llm(id: int, tokens: int, deps: tuple[tuple[int, int], ...] = (), step: str = "") -> Call:
    return Call(
        id, "llm", "chat", step or f"l{id}", 50.0, 99.0, prompt_chars=400, tokens=tokens, deps=deps
    )


def other(id: int, seconds: float, deps: tuple[tuple[int, int], ...] = ()) -> Call:
    return Call(id, "retriever", "search", f"o{id}", 10.0, 10.0 + seconds, deps=deps)


def test_prompt_tokens_follow_the_emulators_estimate() -> None:
    from alto.bench.emulator.text import count_tokens

    for text in ["", "abc", "x" * 401, "a b c " * 37]:
        assert prompt_tokens(len(text), 4.0) == count_tokens(text, 4.0)


def test_llm_service_time_is_ttft_plus_per_token_time() -> None:
    call = llm(0, tokens=11)
    assert llm_service_time(call, MODEL) == pytest.approx(0.2 + 10 * 0.01)
    assert llm_service_time(call, MODEL, 3) == pytest.approx(0.2 + 2 * 0.01)
    assert llm_service_time(call, MODEL, 50) == llm_service_time(call, MODEL)  # never past it
    assert llm_service_time(llm(1, tokens=0), MODEL) == 0.0
    slower = MODEL.model_copy(update={"time_scale": 2.0})
    assert llm_service_time(call, slower) == pytest.approx(2 * 0.3)


def test_with_a_prefix_cache_the_bound_takes_every_cacheable_block_as_cached() -> None:
    """100 prompt tokens: 6 full blocks of 16 can be cached (the last token never is), so
    only 4 tokens are prefilled: the bound holds whatever earlier calls left in the cache."""
    cached = MODEL.model_copy(update={"prefix_caching": True})
    call = llm(0, tokens=11)
    assert llm_service_time(call, cached) == pytest.approx(
        cached.ttft(100, 1, cached_tokens=96) + 10 * 0.01
    )
    assert llm_service_time(call, cached) < llm_service_time(call, MODEL)


def test_the_longest_chain_wins_and_partial_streams_count_their_prefix() -> None:
    calls = [
        llm(0, tokens=11, step="answer"),  # a stream: 0.3 s in all, 0.22 s for 3 tokens
        other(1, 0.05, deps=((0, FULL),)),  # after the whole answer: ends 0.35
        llm(2, tokens=1, deps=((0, 3),), step="check"),  # after 3 tokens: 0.22 + 0.2 = 0.42
    ]
    bound = critical_path(calls, {1: FULL, 2: FULL}, MODEL)
    assert bound.seconds == pytest.approx(0.42)
    assert bound.chain == ("answer[:3]", "check")
    assert bound.llm_s == pytest.approx(0.42) and bound.other_s == 0.0


def test_non_llm_calls_count_their_measured_duration() -> None:
    calls = [llm(0, tokens=1), other(1, 0.5, deps=((0, FULL),)), llm(2, 1, deps=((1, FULL),))]
    bound = critical_path(calls, [(2, FULL)], MODEL)
    assert bound.seconds == pytest.approx(0.2 + 0.5 + 0.2)
    assert (bound.llm_s, bound.other_s) == (pytest.approx(0.4), pytest.approx(0.5))
    assert bound.chain == ("l0", "o1", "l2")
    assert bound.as_dict()["chain"] == ["l0", "o1", "l2"]


def test_the_llm_only_bound_leaves_out_measured_calls() -> None:
    calls = [llm(0, tokens=1), other(1, 0.5, deps=((0, FULL),)), llm(2, 1, deps=((1, FULL),))]
    bound = critical_path(calls, [(2, FULL)], MODEL, other=False)
    assert bound.seconds == pytest.approx(0.4) and bound.other_s == 0.0
    assert bound.seconds <= critical_path(calls, [(2, FULL)], MODEL).seconds


def test_independent_branches_do_not_add_up() -> None:
    calls = [llm(0, 1), llm(1, 21), llm(2, 1, deps=((0, FULL), (1, FULL)))]
    # 0 and 1 run side by side: 2 waits for the longer (0.4 s), then takes 0.2 s
    assert critical_path(calls, {2: FULL}, MODEL).seconds == pytest.approx(0.6)


def test_degenerate_cases() -> None:
    assert critical_path([], {}, MODEL).seconds == 0.0
    with pytest.raises(ValueError, match="not recorded"):
        critical_path([llm(0, 1, deps=((7, FULL),))], {7: FULL}, MODEL)


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["factcheck", "multihop", "summarize"])
async def test_bound_of_a_recorded_asyncio_reference_run(name: str) -> None:
    from examples.common import fake_operators

    ops = await fake_operators()
    # the fake's replies are one line: script the decomposition into three sub-questions
    ops.llm = FakeLLM({"Break the question": "What is a compiler?\nWhat is a parser?\nWhy?"})
    app = importlib.import_module(f"examples.{name}")
    reference = importlib.import_module(f"examples.{name}.asyncio_reference").asyncio_reference
    fragment = {"factcheck": "judge", "multihop": "answer", "summarize": "summarize_section"}
    for value in app.load_inputs(8):  # the first input that fans out to two fragments or more
        recorder = Recorder()
        with tracking_dependencies() as result:
            await reference(recording_operators(ops, recorder), value)
        if sum(c.step == fragment[name] for c in recorder.calls) >= 2:
            break
    else:
        pytest.fail("no input fans out")
    bound = critical_path(recorder.calls, result.seen, MODEL)
    assert bound.seconds == pytest.approx(bound.llm_s + bound.other_s)
    assert bound.seconds >= max(
        llm_service_time(c, MODEL) for c in recorder.calls if c.operator == "llm"
    )
    first, last = {
        "factcheck": ("claims", "judge"),
        "multihop": ("decompose", "compose"),
        "summarize": ("embed", "summarize_document"),
    }[name]
    assert bound.chain[0].split("[")[0] == first and bound.chain[-1] == last
    # a chain, not the sum of every call: fragments run side by side
    every = sum(llm_service_time(c, MODEL) for c in recorder.calls if c.operator == "llm")
    assert bound.llm_s < every
