"""End-to-end behaviour of flows: nesting, joins, broadcasts, batching, outputs, inputs."""

from __future__ import annotations

import random

import anyio
import pytest

import alto
from alto import Gather, GatherStream, Split

pytestmark = pytest.mark.anyio


@alto.stage
async def words(text: str) -> Split[str]:
    for w in text.split():
        yield w


@alto.stage
async def chars(word: str) -> Split[str]:
    for c in word:
        yield c


@alto.stage(replicas=4)
async def shout(word: str) -> str:
    await anyio.sleep(random.random() * 0.002)
    return word.upper()


@alto.stage(replicas=3)
async def glue(parts: Gather[str]) -> str:
    return " ".join(parts)


@alto.stage
async def concat(parts: Gather[str]) -> str:
    return "".join(parts)


@alto.stage
async def label(word: str, loud: str, prefix: str) -> str:
    return f"{prefix}{word}={loud}"


@alto.flow
def loud_words(text: str):
    return glue(shout(words(text)))


@alto.flow
def labelled(text: str, prefix: str):
    w = words(text)
    return glue(label(w, shout(w), prefix))


@alto.flow
def respelled(text: str):
    # split twice, gather twice: chars joined per word, words per text
    w = words(text)
    return glue(concat(shout(chars(w))))


async def test_split_map_gather_in_input_order(backend):
    texts = ["a bb ccc", "dd", "e f g h i j"]
    out = await loud_words.run(texts, backend=backend)
    assert out == ["A BB CCC", "DD", "E F G H I J"]


async def test_join_and_broadcast(backend):
    out = await labelled.run([("x y", "1:"), ("zz", "2:")], backend=backend)
    assert out == ["1:x=X 1:y=Y", "2:zz=ZZ"]
    out = await labelled.run([{"prefix": "p", "text": "q"}], backend=backend)
    assert out == ["pq=Q"]


async def test_two_levels(backend):
    out = await respelled.run(["ab cde", "f"], backend=backend)
    assert out == ["AB CDE", "F"]


async def test_empty_splits_close_their_parent(backend):
    # an empty text has no words; a word cannot be empty, but "  " still yields none
    out = await respelled.run(["", "  ", "a"], backend=backend)
    assert out == ["", "", "A"]


async def test_many_roots_and_replicated_gathers(backend):
    rng = random.Random(7)
    texts = [
        " ".join("w" * rng.randint(1, 4) for _ in range(rng.randint(0, 6))) for _ in range(300)
    ]
    out = await respelled.run(texts, backend=backend)
    assert out == [t.upper() for t in (" ".join(s.split()) for s in texts)]


async def test_tuple_outputs(backend):
    @alto.flow
    def both(text: str):
        return loud_words(text), glue(words(text))

    assert await both.run(["a b"], backend=backend) == [("A B", "a b")]


async def test_split_with_a_constant(backend):
    @alto.stage
    async def halves(n: int, parts: int = 2) -> Split[int]:
        for _ in range(parts):
            yield n // parts

    @alto.stage
    async def add(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def f(n: int):
        return add(halves(n, parts=4))

    assert await f.run([8, 3], backend=backend) == [8, 0]


async def test_batched_stage_mixes_parents_and_routes_results_back(backend, shared):
    @alto.stage
    async def numbered(text: str) -> Split[str]:
        for i, w in enumerate(text.split()):
            yield f"{w}{i}"

    @alto.stage(batch=16, batch_timeout=0.05)
    async def lengths(words: list[str]) -> list[int]:
        await shared.append("batches", list(words))
        return [len(w) for w in words]

    @alto.stage
    async def add(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def f(text: str):
        return add(lengths(numbered(text)))

    texts = [" ".join("x" * (i % 3 + 1) for _ in range(i % 4)) for i in range(40)]
    out = await f.run(texts, backend=backend)
    expected = [sum(len(f"{w}{j}") for j, w in enumerate(t.split())) for t in texts]
    assert out == expected
    batches = await shared.get("batches")
    assert all(len(b) <= 16 for b in batches)
    assert sum(len(b) for b in batches) == sum(len(t.split()) for t in texts)
    assert any(len(b) > 1 for b in batches)


async def test_batched_join_with_broadcast(backend):
    @alto.stage(batch=8)
    async def scaled(xs: list[int], factor: list[int]) -> list[int]:
        return [x * f for x, f in zip(xs, factor)]

    @alto.stage
    async def digits(n: int) -> Split[int]:
        for d in str(n):
            yield int(d)

    @alto.stage
    async def add(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def f(n: int, factor: int):
        return add(scaled(digits(n), factor))

    assert await f.run([(123, 2), (45, 10), (7, 0)], backend=backend) == [12, 90, 0]


async def test_streaming_gather_sees_children_as_they_arrive(backend):
    @alto.stage
    async def count(xs: GatherStream[str]) -> int:
        n = 0
        async for _ in xs:
            n += 1
        return n

    @alto.flow
    def f(text: str):
        return count(shout(words(text)))

    assert await f.run(["a b c", "", "d"], backend=backend) == [3, 0, 1]


async def test_stream_yields_results_as_roots_complete(backend, shared):
    @alto.stage(replicas=4)
    async def wait_for(text: str) -> str:
        if text == "slow":
            await shared.wait("release")
        return text

    @alto.stage
    async def done(text: str) -> str:
        # the slow input goes on once every other one is through this stage (a runtime
        # in several processes gives no order to independent inputs, only to causes)
        if text != "slow" and await shared.add("fast") == 3:
            await shared.set("release")
        return text

    @alto.flow
    def f(text: str):
        return done(wait_for(text))

    order = [r.index async for r in f.stream(["slow", "a", "b", "last-fast"], backend=backend)]
    assert order[-1] == 0 and sorted(order) == [0, 1, 2, 3]


async def test_async_iterable_inputs(backend):
    async def arriving():
        for t in ["a b", "c"]:
            await anyio.sleep(0.001)
            yield t

    assert await loud_words.run(arriving(), backend=backend) == ["A B", "C"]


async def test_bad_inputs_fail_alone(backend):
    with pytest.raises(alto.PipelineError) as err:
        await labelled.run([("a", "p"), ("only-one",), 42, {"text": "b", "colour": 1}, ("c", "q")],
                           backend=backend)
    e = err.value
    assert e.results[0] == "pa=A" and e.results[4] == "qc=C"
    assert [f.index for f in e.failures] == [1, 2, 3]
    assert all(isinstance(f, alto.InputError) for f in e.failures)
    assert "missing parameter 'prefix'" in str(e.failures[0])
    assert "pass a tuple or a dict" in str(e.failures[1])
    assert "unknown parameter 'colour'" in str(e.failures[2])


async def test_concurrency_bounds_roots_in_flight(backend, shared):
    @alto.stage(replicas=8)
    async def track(n: int) -> int:
        await shared.top("peak", await shared.add("active"))
        await anyio.sleep(0.001)
        await shared.add("active", -1)
        return n

    @alto.flow
    def f(n: int):
        return track(n)

    assert await f.run(range(40), backend=backend, concurrency=3) == list(range(40))
    assert 1 <= await shared.get("peak") <= 3


async def test_stats_in_counts_the_main_input_only(backend):
    """``in`` of a join-and-broadcast stage equals its feeding stage's ``out``: the second
    joined stream and the broadcast prefix are not counted again."""
    stats = alto.RunStats()
    await labelled.run([("x y", "1:"), ("zz z", "2:")], backend=backend, stats=stats)
    s = stats.stages
    assert s["words"].fragments_out == 4
    assert s["label"].fragments_in == s["shout"].fragments_in == 4
    assert s["glue"].fragments_in == s["label"].fragments_out == 4


async def test_stats_and_root_timings(backend):
    stats = alto.RunStats()
    await respelled.run(["ab c", "d"], backend=backend, stats=stats, trace=True)
    s = stats.stages
    assert list(s) == ["words", "chars", "shout", "concat", "glue"]
    assert (s["words"].fragments_in, s["words"].fragments_out) == (2, 3)
    assert (s["chars"].fragments_in, s["chars"].fragments_out) == (3, 4)
    assert s["shout"].calls == 4 and s["shout"].busy_s > 0
    assert s["concat"].fragments_in == 4 and s["concat"].fragments_out == 3
    assert s["glue"].calls == 2 and s["shout"].replicas == 4
    assert all(v.peak_queue >= 1 for v in s.values())
    assert sorted(stats.root_end) == [0, 1]
    assert all(stats.latency(i) >= 0 for i in (0, 1))
    assert stats.spans is not None and len(stats.spans) == 2 + 3 + 4 + 3 + 2
    assert {sp.stage for sp in stats.spans} == set(s)
    assert "shout" in stats.table()
    assert stats.as_dict()["stages"][0]["name"] == "words"


async def test_every_traced_call_lies_within_its_roots_run(backend):
    """Spans are on the driver's clock: on Ray each actor's clock offset is measured apart
    from its start-up, so no call of a root starts before the root entered the run or ends
    after its result came back (a few ms for the offset's estimate)."""
    stats = alto.RunStats()
    await respelled.run(["ab c", "d", "ef gh ij"], backend=backend, stats=stats, trace=True)
    assert stats.spans
    slack = 0.005
    for span in stats.spans:
        root = alto.ancestry.root_of(span.ancestry)
        assert stats.root_start[root] - slack <= span.start <= span.end
        assert span.end <= stats.root_end[root] + slack, span


def test_blocking_helper():
    assert alto.run(loud_words, ["a"]) == ["A"]


async def test_blocking_helper_inside_a_loop_says_what_to_do():
    with pytest.raises(RuntimeError, match="await loud_words.run"):
        alto.run(loud_words, ["a"])
