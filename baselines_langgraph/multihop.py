"""Multihop in LangGraph: sub-questions -> retrieval -> rerank, answer per sub-question -> compose.

The same steps as ``examples/multihop`` (``examples.multihop.steps``), orchestrated three
ways:

* ``flat``:       decompose -> retrieve (one embedding call and one index search for all
  sub-questions) -> Send per sub-question -> rerank -> (Command + Send) answer -> compose.
* ``subgraph``:   decompose -> retrieve (batched, as in flat) -> Send per sub-question ->
  [rerank -> answer] -> compose.
* ``functional``: decompose and retrieve tasks, then per sub-question a rerank -> answer chain
  of tasks, all started at once; compose when all sub-answers are in.

The sub-questions arrive together (the decomposition is one LLM call), so embedding and
searching them in one batch costs no waiting in any variant, and saves a model call per
sub-question; LangGraph cannot batch across root inputs (one invocation per question), which
Alto's batched stages do.
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

from langgraph.func import entrypoint, task
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send

from baselines_langgraph.runner import Runner, check_functional_limit
from examples.common import Operators
from examples.multihop import steps
from examples.multihop.steps import Answer, Config, Passage, SubAnswer

# State schemas live at module level: LangGraph resolves node and state type hints with
# typing.get_type_hints in this module's globals.


class MultihopState(TypedDict):
    """The graph state for one question (both graph variants)."""

    question: str
    subquestions: list[str]
    found: list[list[Passage]]  # retrieved per sub-question, in sub-question order
    # (sub-question index, sub-answer): one Send per sub-question appends its answer
    subanswers: Annotated[list[tuple[int, SubAnswer]], operator.add]
    answer: Answer


class RerankInput(TypedDict):
    """What a Send carries to the per-sub-question nodes."""

    question: str
    index: int
    sub: str
    found: list[Passage]


class AnswerInput(TypedDict):
    """What the flat graph's rerank node sends on to its answer node."""

    question: str
    index: int
    sub: str
    passages: list[Passage]


class SubState(TypedDict):
    """The per-sub-question subgraph's state."""

    question: str
    index: int
    sub: str
    found: list[Passage]
    passages: list[Passage]
    subanswers: list[tuple[int, SubAnswer]]  # the one sub-answer, keyed by its index


class SubOutput(TypedDict):
    """What the subgraph hands back to the parent (appended by its reducer)."""

    subanswers: list[tuple[int, SubAnswer]]


def _front(ops: Operators, config: Config) -> tuple[Any, Any, Any]:
    """The nodes both graph variants share: decompose, retrieve, compose."""

    async def decompose(state: MultihopState) -> dict[str, Any]:
        return {"subquestions": await steps.decompose(ops, state["question"], config)}

    async def retrieve(state: MultihopState) -> dict[str, Any]:
        vectors = await steps.embed(ops, state["subquestions"])
        return {"found": steps.search(ops, vectors, config)}

    async def compose(state: MultihopState) -> dict[str, Any]:
        parts = [s for _, s in sorted(state["subanswers"], key=operator.itemgetter(0))]
        return {"answer": await steps.compose(ops, state["question"], parts, config)}

    return decompose, retrieve, compose


def _per_subquestion(target: str) -> Any:
    """The conditional edge after ``retrieve``: one Send per sub-question."""

    def fan_out(state: MultihopState) -> list[Send]:
        # steps.decompose always gives at least one sub-question (the question itself)
        return [Send(target, {"question": state["question"], "index": i, "sub": sub,
                              "found": found})
                for i, (sub, found) in enumerate(zip(state["subquestions"], state["found"]))]

    return fan_out


def _graph(ops: Operators, config: Config, first: str, last: str) -> StateGraph:
    """decompose -> retrieve -> Send per sub-question to ``first`` ... ``last`` -> compose.

    The caller adds the per-sub-question nodes ``first`` to ``last``.
    """
    decompose, retrieve, compose = _front(ops, config)
    graph = StateGraph(MultihopState)
    graph.add_node("decompose", decompose)
    graph.add_node("retrieve", retrieve)
    graph.add_node("compose", compose)
    graph.add_edge(START, "decompose")
    graph.add_edge("decompose", "retrieve")
    graph.add_conditional_edges("retrieve", _per_subquestion(first), [first])
    graph.add_edge(last, "compose")  # fan-in: runs once, after every sub-answer
    graph.add_edge("compose", END)
    return graph


# --- flat: one StateGraph, Send fan-out, reducer, fan-in --------------------------------------


def flat(ops: Operators, config: Config | None = None, *, max_concurrency: int = 64) -> Runner:
    """Multihop as one ``StateGraph`` with per-sub-question Sends."""
    config = config or Config()

    # rerank hands its sub-question on to answer with Command(goto=Send(...)): no fan-in
    # node in between, only the superstep boundary every Graph API step has.
    async def rerank(state: RerankInput) -> Command:
        passages = await steps.rerank(ops, state["sub"], state["found"], config)
        return Command(goto=Send("answer", {"question": state["question"],
                                            "index": state["index"], "sub": state["sub"],
                                            "passages": passages}))

    async def answer(state: AnswerInput) -> dict[str, Any]:
        sub = await steps.answer(ops, state["question"], state["sub"], state["passages"],
                                 config)
        return {"subanswers": [(state["index"], sub)]}

    graph = _graph(ops, config, "rerank", "answer")
    graph.add_node("rerank", rerank, destinations=("answer",))
    graph.add_node("answer", answer)
    return Runner(
        graph.compile(name="multihop-flat"),
        to_input=lambda question: {"question": question},
        from_output=lambda state: state["answer"],
        max_concurrency=max_concurrency,
        name="multihop/flat",
    )


# --- subgraph: Send to a compiled per-sub-question subgraph ----------------------------------


def subquestion_subgraph(ops: Operators, config: Config) -> Any:
    """The compiled per-sub-question chain: rerank -> answer."""

    async def rerank(state: SubState) -> dict[str, Any]:
        return {"passages": await steps.rerank(ops, state["sub"], state["found"], config)}

    async def answer(state: SubState) -> dict[str, Any]:
        sub = await steps.answer(ops, state["question"], state["sub"], state["passages"],
                                 config)
        return {"subanswers": [(state["index"], sub)]}

    graph = StateGraph(SubState, output_schema=SubOutput)
    graph.add_node("rerank", rerank)
    graph.add_node("answer", answer)
    graph.add_edge(START, "rerank")
    graph.add_edge("rerank", "answer")
    graph.add_edge("answer", END)
    return graph.compile(name="answer_subquestion")


def subgraph(ops: Operators, config: Config | None = None, *, max_concurrency: int = 64) -> Runner:
    """Multihop with one compiled subgraph per sub-question."""
    config = config or Config()
    graph = _graph(ops, config, "answer_subquestion", "answer_subquestion")
    graph.add_node("answer_subquestion", subquestion_subgraph(ops, config))
    return Runner(
        graph.compile(name="multihop-subgraph"),
        to_input=lambda question: {"question": question},
        from_output=lambda state: state["answer"],
        max_concurrency=max_concurrency,
        name="multihop/subgraph",
    )


# --- functional: @entrypoint and @task ---------------------------------------------------


def functional(
    ops: Operators, config: Config | None = None, *, max_concurrency: int = 64
) -> Runner:
    """Multihop in the Functional API: every sub-question's chain of tasks runs at once."""
    check_functional_limit(max_concurrency)
    config = config or Config()

    @task
    async def decompose(question: str) -> list[str]:
        return await steps.decompose(ops, question, config)

    @task
    async def retrieve(subquestions: list[str]) -> list[list[Passage]]:
        return steps.search(ops, await steps.embed(ops, subquestions), config)

    @task
    async def rerank(sub: str, found: list[Passage]) -> list[Passage]:
        return await steps.rerank(ops, sub, found, config)

    @task
    async def answer(question: str, sub: str, passages: list[Passage]) -> SubAnswer:
        return await steps.answer(ops, question, sub, passages, config)

    @task
    async def compose(question: str, subanswers: list[SubAnswer]) -> Answer:
        return await steps.compose(ops, question, subanswers, config)

    # Each chain is a coroutine of the entrypoint rather than a task calling tasks, which
    # would hold a max_concurrency slot while its sub-tasks wait for one.
    async def answer_one(question: str, sub: str, found: list[Passage]) -> SubAnswer:
        return await answer(question, sub, await rerank(sub, found))

    @entrypoint()
    async def multihop(question: str) -> Answer:
        subquestions = await decompose(question)
        found = await retrieve(subquestions)
        subanswers = await asyncio.gather(
            *(answer_one(question, sub, hits) for sub, hits in zip(subquestions, found))
        )
        return await compose(question, list(subanswers))

    return Runner(multihop, max_concurrency=max_concurrency, name="multihop/functional")


BUILDERS = {"flat": flat, "subgraph": subgraph, "functional": functional}
