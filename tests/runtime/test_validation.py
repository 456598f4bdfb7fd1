"""Arguments annotated with a pydantic model are validated in one place, per fragment.

A batched stage validates each fragment's arguments before its call: a fragment that does
not validate fails alone (a StageError naming the stage, the parameter and pydantic's
message, never retried) and the rest of its batch is called without it.
"""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

import alto
from alto import Gather, Split, StageError
from alto.runtime.validate import ArgumentError, argument_check

pytestmark = pytest.mark.anyio


class Item(pydantic.BaseModel):
    name: str
    size: int = pydantic.Field(ge=0)


@alto.stage
async def parse(text: str) -> Split[dict]:
    for word in text.split():
        name, _, size = word.partition(":")
        yield {"name": name, "size": size}


@alto.stage(batch=8, batch_timeout=0.05, retries=3, retry_backoff=0.001)
async def measure(item: list[Item], scale: list[int]) -> list[int]:
    # a fragment that did not validate never gets here: every value is an Item
    assert all(isinstance(i, Item) for i in item), item
    return [i.size * s for i, s in zip(item, scale)]


@alto.stage
async def total(sizes: Gather[int]) -> list[int]:
    return list(sizes)


@alto.flow
def sized(text: str, scale: int):
    return total(measure(parse(text), scale))


@alto.stage(batch=4, batch_timeout=0.05)
async def weigh(item: list[Item]) -> list[str]:
    assert all(isinstance(i, Item) for i in item), item
    return [f"{i.name}={i.size}" for i in item]


@alto.flow
def weighed(raw: dict):
    return weigh(raw)


async def test_a_bad_fragment_of_a_batch_fails_alone(backend: str) -> None:
    letters: list[StageError] = []
    out = await sized.run(
        [("a:1 b:x c:3 d:-1 e:5", 10)], backend=backend, dead_letters=letters
    )
    assert out == [[10, 30, 50]]  # the others of the batch were called, in child order
    assert sorted(e.ancestry for e in letters) == [(0, "parse", 1), (0, "parse", 3)]
    by_name = {e.inputs["item"]["name"]: e for e in letters}
    assert by_name["b"].inputs == {"item": {"name": "b", "size": "x"}, "scale": 10}
    for error in letters:
        assert error.stage == "measure" and error.attempts == 1  # never retried
        assert error.bisected is None  # no batch call failed: the fragment was not called
        assert isinstance(error.cause, ArgumentError)
        assert "parameter 'item' of stage 'measure' is not a valid Item" in str(error)
    assert "size: Input should be a valid integer" in str(by_name["b"])
    assert "size: Input should be greater than or equal to 0" in str(by_name["d"])


async def test_bad_roots_in_a_batch_fail_alone_and_others_complete(backend: str) -> None:
    inputs: list[Any] = [
        {"name": "a", "size": 1},
        {"name": "b"},  # size is fine (default), but ...
        {"size": 2},  # ... a name is required
        {"name": "d", "size": "many"},
        {"name": "e", "size": 5},
    ]
    inputs[1]["size"] = 0
    with pytest.raises(alto.PipelineError) as err:
        await weighed.run(inputs, backend=backend)
    e = err.value
    assert e.results[0] == "a=1" and e.results[1] == "b=0" and e.results[4] == "e=5"
    assert [f.index for f in e.failures] == [2, 3]
    for failure in e.failures:
        assert isinstance(failure, StageError) and failure.stage == "weigh"
        assert "parameter 'item' of stage 'weigh' is not a valid Item" in str(failure)
    assert "name: Field required" in str(e.failures[0])
    assert e.failures[1].inputs == {"item": {"name": "d", "size": "many"}}


async def test_a_batch_of_only_bad_fragments_makes_no_call(backend: str) -> None:
    with pytest.raises(alto.PipelineError) as err:
        await weighed.run([{"size": 1}, {"name": "x", "size": -2}], backend=backend)
    assert [f.index for f in err.value.failures] == [0, 1]
    assert all(f.stage == "weigh" and f.attempts == 1 for f in err.value.failures)


def test_argument_check_is_none_without_models_and_reads_list_models_when_batched() -> None:
    assert argument_check(sized.plan.nodes[0]) is None  # parse takes a str
    check = argument_check(weighed.plan.nodes[0])
    assert check is not None
    assert check({"name": "n", "size": 3}) == Item(name="n", size=3)
    with pytest.raises(ArgumentError, match="parameter 'item' of stage 'weigh'"):
        check({"name": "n", "size": -1})
    keyed = argument_check(next(n for n in sized.plan.nodes if n.name == "measure"))
    assert keyed is not None
    assert keyed(({"name": "n", "size": 3}, 2)) == (Item(name="n", size=3), 2)
