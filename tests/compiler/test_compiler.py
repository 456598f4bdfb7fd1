"""Tracing flows into plans: inferred levels and port modes, and every compile error."""

from __future__ import annotations

import inspect

import pytest

import alto
from alto import CompileError, Gather, GatherStream, Split
from alto.compiler.plan import PortMode


@alto.stage
async def words(text: str) -> Split[str]:
    for w in text.split():
        yield w


@alto.stage
async def letters(word: str) -> Split[str]:
    for c in word:
        yield c


@alto.stage
async def upper(text: str) -> str:
    return text.upper()


@alto.stage
async def size(text: str) -> int:
    return len(text)


@alto.stage
async def pair(a: str, b: str) -> str:
    return a + b


@alto.stage
async def tag(item: str, label: str, n: int = 1) -> str:
    return f"{label}:{item}" * n


@alto.stage
async def join(items: Gather[str]) -> str:
    return "".join(items)


@alto.stage
async def total(sizes: Gather[int]) -> int:
    return sum(sizes)


@alto.stage
async def stream_total(sizes: GatherStream[int]) -> int:
    return sum([s async for s in sizes])


@alto.stage
async def pick(items: Gather[str], hint: str) -> str:
    return items[0] + hint


def line_of(fn, text: str) -> int:
    lines, start = inspect.getsourcelines(fn)
    for i, line in enumerate(lines):
        if text in line:
            return start + i
    msg = f"{text!r} not in {fn.__name__}"
    raise AssertionError(msg)


# --- levels and port modes -------------------------------------------------


def test_split_map_gather_levels():
    @alto.flow
    def f(text: str):
        return join(upper(words(text)))

    plan = f.plan
    assert [n.name for n in plan.nodes] == ["words", "upper", "join"]
    w, u, j = plan.nodes
    assert (w.level, w.out_level) == (0, 1)
    assert (u.level, u.out_level) == (1, 1)
    assert (j.level, j.out_level) == (0, 0)
    assert u.ports[0].mode is PortMode.SAME
    assert j.ports[0].mode is PortMode.GATHER
    assert j.ports[0].source_level == 1 and j.ports[0].level == 0
    assert plan.outputs == ("join",)


def test_join_broadcast_and_nested_levels():
    @alto.flow
    def f(text: str, label: str):
        w = words(text)
        c = letters(w)
        tagged = tag(c, label)  # level 2, broadcast from level 0
        per_word = join(tagged)  # gathers level 2 -> 1
        both = pair(per_word, w)  # joins two level-1 streams
        return join(both)

    plan = f.plan
    t = plan.node("tag")
    assert t.level == 2
    assert [p.mode for p in t.ports] == [PortMode.SAME, PortMode.BROADCAST]
    assert t.scope == ("words", "letters")
    p = plan.node("pair")
    assert p.level == 1 and [q.mode for q in p.ports] == [PortMode.SAME, PortMode.SAME]
    assert plan.node("join").level == 1
    assert plan.node("join_2").level == 0
    assert plan.consumers["words"] == (("letters", 0), ("pair", 1))


def test_gather_joined_with_same_level_value():
    @alto.flow
    def f(text: str):
        w = words(text)
        return join(pick(letters(w), w))

    node = f.plan.node("pick")
    assert node.level == 1
    assert [p.mode for p in node.ports] == [PortMode.GATHER, PortMode.SAME]
    assert node.primary == 1  # closes of outer levels are forwarded from the same-level input


def test_constants_are_bound_not_traced():
    @alto.flow
    def f(text: str):
        return join(tag(words(text), "x", n=2))

    node = f.plan.node("tag")
    assert dict(node.consts) == {"label": "x", "n": 2}
    assert len(node.ports) == 1


def test_repeated_stage_gets_unique_names_and_tuple_outputs():
    @alto.flow
    def f(text: str):
        return upper(text), upper(upper(text))

    assert [n.name for n in f.plan.nodes] == ["upper", "upper_2", "upper_3"]
    assert f.plan.outputs == ("upper", "upper_3")
    assert f.plan.output_tuple


def test_flow_inlines_another_flow():
    @alto.flow
    def inner(text: str):
        return total(size(words(text)))

    @alto.flow
    def outer(text: str):
        return tag(upper(text), "x", n=inner(text))

    assert [n.name for n in outer.plan.nodes] == ["upper", "words", "size", "total", "tag"]
    assert [p.mode for p in outer.plan.node("tag").ports] == [PortMode.SAME, PortMode.SAME]


def test_describe_and_mermaid_show_levels():
    @alto.flow
    def f(text: str):
        return join(upper(words(text)))

    text = f.plan.describe()
    assert "split words @level 0" in text and "stage upper @level 1" in text
    mermaid = f.plan.mermaid()
    assert mermaid.startswith("flowchart TD")
    assert "level 0→1" in mermaid and "gather" in mermaid


# --- compile errors ----------------------------------------------------------


def test_gather_with_no_open_level():
    def f(text: str):
        return join(upper(text))

    with pytest.raises(CompileError) as err:
        alto.flow(f)
    e = err.value
    assert e.stage == "join" and e.parameter == "items"
    assert "level 0" in str(e) and "no split is open" in str(e)
    assert "Split[T]" in str(e)  # the suggested fix
    assert e.where == f"{__file__}:{line_of(f, 'return join')}"


def test_joining_streams_of_different_splits():
    def f(a: str, b: str):
        return join(pair(words(a), letters(b)))

    with pytest.raises(CompileError) as err:
        alto.flow(f)
    e = err.value
    assert e.stage == "pair"
    assert "'words'" in str(e) and "'letters'" in str(e)
    assert "different splits" in str(e)
    assert "gather" in e.fix.lower()
    assert e.where.endswith(f":{line_of(f, 'return join')}")


def test_gather_result_at_outer_level_cannot_join_deeper_stream():
    def f(text: str):
        w = words(text)
        return join(join(pick(letters(w), letters(w))))

    with pytest.raises(CompileError, match="gathers stage 'letters' back to level 1") as err:
        alto.flow(f)
    assert "runs at level 2" in str(err.value) and err.value.parameter == "items"


def test_non_async_function_is_not_a_stage():
    with pytest.raises(CompileError) as err:

        @alto.stage
        def plain(x: int) -> int:
            return x

    assert "plain function" in str(err.value) and "async def" in str(err.value)
    assert err.value.where.startswith(__file__)

    with pytest.raises(CompileError, match="generator"):

        @alto.stage
        def gen(x: int) -> Split[int]:
            yield x


def test_missing_and_unknown_arguments():
    def missing(text: str):
        return pair(text)

    with pytest.raises(CompileError) as err:
        alto.flow(missing)
    assert err.value.parameter == "b" and "missing argument 'b'" in str(err.value)
    assert err.value.where.endswith(f":{line_of(missing, 'return pair')}")

    def unknown(text: str):
        return upper(text, colour="red")

    with pytest.raises(CompileError) as err:
        alto.flow(unknown)
    assert "no parameter 'colour'" in str(err.value) and "'text'" in str(err.value)

    def too_many(text: str):
        return upper(text, text)

    with pytest.raises(CompileError) as err:
        alto.flow(too_many)
    assert "stage 'upper' takes 1 positional argument but 2 were given" in str(err.value)

    def three(text: str):
        return pair(text, text, text)

    with pytest.raises(CompileError) as err:
        alto.flow(three)
    assert "stage 'pair' takes 2 positional arguments but 3 were given" in str(err.value)

    def twice(text: str):
        return pair(text, a=text)

    with pytest.raises(CompileError, match="got parameter 'a' twice"):
        alto.flow(twice)


def test_flow_must_return_a_stage_output():
    def returns_none(text: str):
        upper(text)

    with pytest.raises(CompileError, match="returns None"):
        alto.flow(returns_none)

    def returns_input(text: str):
        return text

    with pytest.raises(CompileError, match="returns its parameter 'text' unchanged"):
        alto.flow(returns_input)

    def returns_constant(text: str):
        return 42

    with pytest.raises(CompileError, match="returns 42"):
        alto.flow(returns_constant)

    def returns_level_1(text: str):
        return upper(words(text))

    with pytest.raises(CompileError) as err:
        alto.flow(returns_level_1)
    assert "level 1" in str(err.value) and "Gather[T]" in err.value.fix


def test_unused_stage_output():
    def f(text: str):
        upper(text)
        return size(text)

    with pytest.raises(CompileError) as err:
        alto.flow(f)
    assert err.value.stage == "upper" and "never used" in str(err.value)
    assert err.value.where.endswith(f":{line_of(f, 'upper(text)')}")


def test_annotation_mismatch_between_stages():
    def f(text: str):
        return upper(size(text))  # int into str

    with pytest.raises(CompileError) as err:
        alto.flow(f)
    assert err.value.stage == "upper" and err.value.parameter == "text"
    assert "expects a value of type str" in str(err.value) and "produces int" in str(err.value)

    def g(text: str):
        return total(words(text))  # str children into Gather[int]

    with pytest.raises(CompileError, match="expects elements of type int"):
        alto.flow(g)

    def h(text: str):
        return tag(text, "x", n="two")  # constant of the wrong type

    with pytest.raises(CompileError, match="expects int, got the constant 'two'"):
        alto.flow(h)


def test_unannotated_or_any_values_are_not_rejected():
    @alto.stage
    async def loose(x):
        return x

    @alto.flow
    def f(text: str):
        return size(loose(text))

    assert len(f.plan.nodes) == 2


def test_stage_called_outside_a_flow():
    with pytest.raises(CompileError, match="outside a flow") as err:
        upper("x")
    assert "await upper.fn" in err.value.fix


def test_branching_on_a_traced_value():
    def f(text: str):
        if upper(text):
            return size(text)
        return size(text)

    with pytest.raises(CompileError, match="truth"):
        alto.flow(f)

    def g(text: str):
        return [upper(w) for w in words(text)]

    with pytest.raises(CompileError, match="iterates"):
        alto.flow(g)


def test_stage_with_only_constants_never_runs():
    def f(text: str):
        return pair(upper(text), upper("fixed"))

    with pytest.raises(CompileError, match="only constants"):
        alto.flow(f)


def test_bad_options_and_markers():
    with pytest.raises(CompileError, match="replicas=0"):

        @alto.stage(replicas=0)
        async def a(x: int) -> int:
            return x

    with pytest.raises(CompileError, match="batch=8 and yields children"):

        @alto.stage(batch=8)
        async def b(x: int) -> Split[int]:
            yield x

    with pytest.raises(CompileError, match="Split marks the return"):

        @alto.stage
        async def c(x: Split[int]) -> int:
            return 1

    with pytest.raises(CompileError, match="named parameters"):

        @alto.stage
        async def d(*xs: int) -> int:
            return 1


def test_streaming_gather_takes_children_alone():
    @alto.flow
    def ok(text: str):
        return stream_total(size(words(text)))

    assert ok.plan.node("stream_total").ports[0].mode is PortMode.GATHER_STREAM

    @alto.stage
    async def mixed(xs: GatherStream[int], label: str) -> str:
        return label

    def bad(text: str):
        return mixed(size(words(text)), text)

    with pytest.raises(CompileError, match="GatherStream together with other flow values"):
        alto.flow(bad)


def test_async_flow_is_rejected():
    async def f(text: str):
        return upper(text)

    with pytest.raises(CompileError, match="plain 'def'"):
        alto.flow(f)


def test_value_from_another_flow():
    leaked = {}

    @alto.flow
    def first(text: str):
        leaked["h"] = upper(text)
        return leaked["h"]

    def second(text: str):
        return pair(text, leaked["h"])

    with pytest.raises(CompileError, match="another flow"):
        alto.flow(second)


# --- API mistakes caught where the stage is defined ----------------------------------


def test_split_stage_that_returns_instead_of_yielding():
    with pytest.raises(CompileError) as err:

        @alto.stage
        async def words_of(text: str) -> Split[str]:
            return text.split()  # type: ignore[return-value]

    e = err.value
    assert e.stage == "words_of" and e.where.startswith(__file__)
    text = str(e)
    assert "annotated -> Split[...] but returns instead of yielding" in text
    assert "expected an async generator" in text and "found an 'async def' that returns" in text
    assert "use `yield` for each child" in e.fix

    with pytest.raises(CompileError, match="returns instead of yielding"):

        @alto.stage
        async def quoted(text: str) -> "Split[str]":
            return text.split()  # type: ignore[return-value]


def test_batch_parameter_must_be_a_list():
    with pytest.raises(CompileError) as err:

        @alto.stage(batch=8)
        async def embed(text: str) -> list[float]:
            return [1.0]

    e = err.value
    assert (e.stage, e.parameter) == ("embed", "text") and e.where.startswith(__file__)
    assert "has batch=8, so parameter 'text' receives a list" in str(e)
    assert "found str" in str(e) and "list[str]" in e.fix

    with pytest.raises(CompileError, match="parameter 'n' receives a list"):

        @alto.stage(batch=4)
        async def scaled(xs: list[int], n: int | None) -> list[int]:
            return xs


def test_batch_return_must_be_a_list():
    with pytest.raises(CompileError) as err:

        @alto.stage(batch=8)
        async def count(texts: list[str]) -> int:
            return len(texts)

    e = err.value
    assert e.stage == "count" and "returns a list with one result per input" in str(e)
    assert "found -> int" in str(e) and "list[int]" in e.fix


def test_batch_list_annotations_that_pass():
    from collections.abc import Sequence
    from typing import Any, List, Optional

    @alto.stage(batch=8)
    async def seq(xs: Sequence[str], ys: List[int], zs: Optional[list[str]]) -> tuple[str, ...]:
        return tuple(xs)

    @alto.stage(batch=8)
    async def loose(xs, ys: Any):  # unannotated and Any: nothing to check
        return xs

    @alto.stage(batch=8)
    async def grouped(groups: Gather[list[str]], k: int = 3) -> list[str]:
        return ["".join(g) for g in groups]

    @alto.flow
    def f(text: str):
        return grouped(loose(words(text), text))  # k keeps its default: an int

    assert [n.name for n in f.plan.nodes] == ["words", "loose", "grouped"]

    with pytest.raises(CompileError, match=r"Gather\[list\[\.\.\.\]\], found Gather\[str\]"):

        @alto.stage(batch=8)
        async def joined(groups: Gather[str]) -> list[str]:
            return []


def test_batch_parameter_with_a_default_is_checked_when_the_flow_passes_it():
    @alto.stage(batch=8)
    async def top(texts: list[str], k: int = 3) -> list[str]:
        return texts

    @alto.flow
    def ok(text: str):
        return top(text)

    assert ok.plan.node("top").consts == {}

    def passed(text: str):
        return top(text, k=5)

    with pytest.raises(CompileError) as err:
        alto.flow(passed)
    e = err.value
    assert (e.stage, e.parameter) == ("top", "k") and "found int" in str(e)
    assert e.where.endswith(f":{line_of(passed, 'return top')}")


def test_plan_repr_is_short():
    @alto.flow
    def f(text: str):
        return join(upper(words(text)))

    assert repr(f.plan) == "<Plan f: 3 stages, 2 levels>"
    assert f.plan.levels == 2

    @alto.flow
    def g(text: str):
        return upper(text)

    assert repr(g.plan) == "<Plan g: 1 stage, 1 level>"

    @alto.flow
    def h(text: str):
        return join(join(letters(words(text))))

    assert repr(h.plan) == "<Plan h: 4 stages, 3 levels>"


def test_gather_stream_docstring_states_its_restriction():
    doc = " ".join(GatherStream.__doc__.split())
    assert "cannot combine a ``GatherStream`` with other flow values" in doc
    assert "Gather[T]" in doc
