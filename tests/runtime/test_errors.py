"""Failures stay with their root input: timeouts, retries, batches, splits, dead letters."""

from __future__ import annotations

import anyio
import pytest

import alto
from alto import Gather, Split, StageError

pytestmark = pytest.mark.anyio


@alto.stage
async def items(text: str) -> Split[str]:
    for w in text.split():
        yield w


@alto.stage(replicas=2)
async def checked(item: str) -> str:
    if item.startswith("bad"):
        msg = f"cannot take {item!r}"
        raise ValueError(msg)
    return item.upper()


@alto.stage
async def collect(xs: Gather[str]) -> list[str]:
    return list(xs)


@alto.flow
def checks(text: str):
    return collect(checked(items(text)))


async def test_failing_fragments_fail_only_their_roots(backend):
    inputs = ["a b", "c bad1 d", "e", "bad2", "f g"]
    with pytest.raises(alto.PipelineError) as err:
        await checks.run(inputs, backend=backend)
    e = err.value
    assert e.results[0] == ["A", "B"] and e.results[2] == ["E"] and e.results[4] == ["F", "G"]
    assert [f.index for f in e.failures] == [1, 3]
    first = e.failures[0]
    assert isinstance(first, StageError)
    assert first.stage == "checked" and first.index == 1
    assert first.ancestry == (1, "items", 1)
    assert isinstance(first.cause, ValueError) and first.__cause__ is first.cause
    assert "root 1 > items[1]" in str(first) and "cannot take 'bad1'" in str(first)
    assert e.results[1] is first


async def test_stream_reports_errors_per_root(backend):
    results = {r.index: r async for r in checks.stream(["bad", "ok"], backend=backend)}
    assert not results[0].ok and isinstance(results[0].error, StageError)
    assert results[1].ok and results[1].unwrap() == ["OK"]
    with pytest.raises(StageError):
        results[0].unwrap()


async def test_retries_then_success(backend, shared):
    @alto.stage(retries=3, retry_backoff=0.001)
    async def flaky(x: str) -> str:
        if await shared.add(f"attempts:{x}") < 3:
            msg = "try again"
            raise ConnectionError(msg)
        return x

    @alto.flow
    def f(x: str):
        return flaky(x)

    stats = alto.RunStats()
    assert await f.run(["a", "b"], backend=backend, stats=stats) == ["a", "b"]
    assert [await shared.get("attempts:a"), await shared.get("attempts:b")] == [3, 3]
    assert stats.stages["flaky"].retries == 4


async def test_retries_exhausted_and_retry_on(backend, shared):
    @alto.stage(retries=2, retry_backoff=0.001, retry_on=ConnectionError)
    async def failing(kind: str) -> str:
        await shared.add(f"calls:{kind}")
        raise ConnectionError("down") if kind == "conn" else ValueError("bad")

    @alto.flow
    def f(kind: str):
        return failing(kind)

    with pytest.raises(alto.PipelineError) as err:
        await f.run(["conn", "value"], backend=backend)
    conn, value = err.value.failures
    assert conn.attempts == 3 and "after 3 attempts" in str(conn)
    assert value.attempts == 1  # not a retryable error
    assert [await shared.get("calls:conn"), await shared.get("calls:value")] == [3, 1]


async def test_timeout_fails_the_root(backend):
    @alto.stage(timeout=0.05)
    async def stuck(x: str) -> str:
        if x == "stuck":
            await anyio.sleep(30)
        return x

    @alto.flow
    def f(x: str):
        return stuck(x)

    with pytest.raises(alto.PipelineError) as err:
        await f.run(["ok", "stuck"], backend=backend)
    assert err.value.results[0] == "ok"
    (failure,) = err.value.failures
    assert isinstance(failure.cause, TimeoutError) and failure.index == 1
    cause = failure.cause
    assert isinstance(cause, alto.StageTimeout)
    assert (cause.stage, cause.timeout, cause.split) == ("stuck", 0.05, False)
    assert (failure.stage, failure.ancestry) == ("stuck", (1,))
    assert "stage 'stuck' timed out after 0.05 s" in str(failure)
    assert str(cause).startswith("stage 'stuck' timed out after 0.05 s")


async def test_split_timeout_says_the_whole_split_counts(backend):
    @alto.stage(timeout=0.05)
    async def parts(text: str) -> Split[str]:
        for w in text.split():
            if w == "stall":
                await anyio.sleep(30)
            yield w

    @alto.flow
    def f(text: str):
        return collect(parts(text))

    with pytest.raises(alto.PipelineError) as err:
        await f.run(["a b", "c stall"], backend=backend)
    assert err.value.results[0] == ["a", "b"]
    (failure,) = err.value.failures
    assert isinstance(failure.cause, alto.StageTimeout) and failure.cause.split
    assert (failure.stage, failure.ancestry) == ("parts", (1,))
    assert "stage 'parts' timed out after 0.05 s" in str(failure)
    assert "every child included" in str(failure)


async def test_split_failure_after_children_fails_root(backend):
    @alto.stage
    async def breaks(text: str) -> Split[str]:
        for w in text.split():
            if w == "boom":
                msg = "split broke"
                raise RuntimeError(msg)
            yield w

    @alto.flow
    def f(text: str):
        return collect(checked(breaks(text)))

    with pytest.raises(alto.PipelineError) as err:
        await f.run(["a boom b", "c"], backend=backend)
    assert err.value.results[1] == ["C"]
    (failure,) = err.value.failures
    assert failure.stage == "breaks" and failure.ancestry == (0,)


async def test_split_retried_only_before_its_first_child(backend, shared):
    @alto.stage(retries=2, retry_backoff=0.001)
    async def unreliable(text: str) -> Split[str]:
        tries = await shared.add(f"tries:{text}")
        if text == "early" and tries < 2:
            msg = "not yet"
            raise ConnectionError(msg)
        yield text
        if text == "late":
            msg = "too late to retry"
            raise ConnectionError(msg)

    @alto.flow
    def f(text: str):
        return collect(unreliable(text))

    with pytest.raises(alto.PipelineError) as err:
        await f.run(["early", "late"], backend=backend)
    assert err.value.results[0] == ["early"]
    assert [await shared.get("tries:early"), await shared.get("tries:late")] == [2, 1]


async def test_batch_returning_wrong_length(backend):
    @alto.stage(batch=4)
    async def short(xs: list[str]) -> list[str]:
        return xs[:-1]

    @alto.flow
    def f(x: str):
        return short(x)

    with pytest.raises(alto.PipelineError) as err:
        await f.run(["a"], backend=backend)
    assert "returned 0 results for a batch of 1" in str(err.value.failures[0])


async def test_dead_letters_keep_survivors(backend):
    letters: list[StageError] = []
    out = await checks.run(["a bad1 b", "bad2", "c"], backend=backend, dead_letters=letters)
    assert out == [["A", "B"], [], ["C"]]
    assert sorted(e.ancestry for e in letters) == [(0, "items", 1), (1, "items", 0)]
    assert sorted(e.inputs["item"] for e in letters) == ["bad1", "bad2"]  # the failed values


async def test_dead_letter_at_level_zero_fails_root(backend):
    @alto.stage
    async def picky(x: str) -> str:
        if x == "no":
            msg = "no"
            raise ValueError(msg)
        return x

    @alto.flow
    def f(x: str):
        return picky(x)

    letters: list[StageError] = []
    with pytest.raises(alto.PipelineError) as err:
        await f.run(["yes", "no"], backend=backend, dead_letters=letters)
    assert err.value.results[0] == "yes"
    assert err.value.failures[0] is letters[0]


async def test_dead_letter_before_nested_split_gives_tombstone_to_outer_gather(backend):
    @alto.stage
    async def fragile(word: str) -> str:
        if word == "x":
            msg = "x"
            raise ValueError(msg)
        return word

    @alto.stage
    async def chars(word: str) -> Split[str]:
        for c in word:
            yield c

    @alto.stage
    async def concat(cs: Gather[str]) -> str:
        return "".join(cs)

    @alto.flow
    def f(text: str):
        return collect(concat(chars(fragile(items(text)))))

    letters: list[StageError] = []
    out = await f.run(["ab x cd"], backend=backend, dead_letters=letters)
    assert out == [["ab", "cd"]]
    assert [e.stage for e in letters] == ["fragile"]


async def test_failure_in_join_branch(backend):
    @alto.stage
    async def length(item: str) -> int:
        if item == "zz":
            raise KeyError(item)
        return len(item)

    @alto.stage
    async def both(item: str, n: int) -> str:
        return item * n

    @alto.flow
    def f(text: str):
        w = items(text)
        return collect(both(w, length(w)))

    with pytest.raises(alto.PipelineError) as err:
        await f.run(["a zz", "bb", "zz"], backend=backend)
    assert err.value.results[1] == ["bbbb"]
    assert [x.index for x in err.value.failures] == [0, 2]


# --- a failing fragment in a batch of strangers ----------------------------------------

MIXED = ["a b", "c bad d", "e f", "g"]  # 8 fragments of 4 roots; 'bad' fails


def batched_flow(shared, fails, size: int = 8):
    """items -> a batched stage that records each call and fails on ``fails(word)`` -> collect.

    ``batch`` is the number of fragments, so the fragments of every root meet in one call
    (a partial batch waits for more while the split upstream works).
    """

    @alto.stage(batch=size, batch_timeout=5.0)
    async def shout(words: list[str]) -> list[str]:
        await shared.append("calls", list(words))
        bad = [w for w in words if fails(w)]
        if bad:
            msg = f"cannot take {bad[0]!r}"
            raise ValueError(msg)
        return [w.upper() for w in words]

    @alto.flow
    def f(text: str):
        return collect(shout(items(text)))

    return f


async def test_failing_fragment_in_a_batch_fails_only_its_root(backend, shared):
    f = batched_flow(shared, lambda w: w == "bad")
    clean = await f.run([t for t in MIXED if "bad" not in t], backend=backend)
    await shared.put("calls", [])
    stats = alto.RunStats()
    with pytest.raises(alto.PipelineError) as err:
        await f.run(MIXED, backend=backend, stats=stats)

    calls = await shared.get("calls")
    assert sorted(calls[0]) == sorted(" ".join(MIXED).split())  # strangers shared the call
    results = err.value.results
    assert [results[0], results[2], results[3]] == clean
    (failure,) = err.value.failures
    assert isinstance(failure, StageError) and results[1] is failure
    assert (failure.stage, failure.ancestry, failure.index) == ("shout", (1, "items", 1), 1)
    assert failure.bisected == 8 and failure.inputs == {"words": "bad"}
    assert "bisecting a batch of 8" in str(failure) and "root 1 > items[1]" in str(failure)
    assert "cannot take 'bad'" in str(failure)
    assert [c for c in calls if "bad" in c][-1] == ["bad"]  # it failed in a call of its own
    shout = stats.stages["shout"]
    assert shout.bisections == len(calls) - 1 >= 4 and shout.calls == len(calls)
    assert shout.errors == 1


async def test_batch_where_every_fragment_fails_reports_each(backend, shared):
    f = batched_flow(shared, lambda w: True)
    letters: list[StageError] = []
    out = await f.run(MIXED, backend=backend, dead_letters=letters)
    assert out == [[], [], [], []]  # every fragment failed; the gathers see no survivor
    fragments = [(i, "items", j) for i, t in enumerate(MIXED) for j in range(len(t.split()))]
    assert sorted(e.ancestry for e in letters) == fragments
    assert all(e.stage == "shout" and e.bisected == 8 for e in letters)
    assert sorted(e.inputs["words"] for e in letters) == sorted(" ".join(MIXED).split())
    calls = await shared.get("calls")
    assert len(calls) == 2 * 8 - 1  # the batch, and every part of it down to single words


async def test_dead_letters_get_the_culprit_of_a_bisected_batch(backend, shared):
    f = batched_flow(shared, lambda w: w == "bad")
    letters: list[StageError] = []
    out = await f.run(MIXED, backend=backend, dead_letters=letters)
    assert out == [["A", "B"], ["C", "D"], ["E", "F"], ["G"]]  # the culprit is dropped
    (letter,) = letters
    assert letter.ancestry == (1, "items", 1) and letter.inputs == {"words": "bad"}
    assert letter.bisected == 8 and isinstance(letter.cause, ValueError)
