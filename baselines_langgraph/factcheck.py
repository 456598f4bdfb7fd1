"""Factcheck in LangGraph: claims -> queries per claim -> retrieval -> verdict per claim -> report.

The same steps as ``examples/factcheck`` (``examples.factcheck.steps``), orchestrated three
ways:

* ``flat``:       claims -> Send per claim -> queries -> retrieve (one batched search for every
  query of the answer, evidence merged per claim) -> Send per claim -> verdict -> report.
* ``subgraph``:   claims -> Send per claim -> [queries -> retrieve -> verdict] -> report.
* ``functional``: the answer's claims consumed as the LLM writes them; per claim a chain of
  tasks (queries, retrieve, judge) starts at once; the report when all are in.

Token streaming: in the Graph API a node returns once, so the ``claims`` node consumes the
whole ``steps.claims`` stream and no downstream node starts before the LLM has finished the
answer (LangGraph's token streaming, ``stream_mode="messages"`` or a stream writer, reaches
the caller, not other nodes). The Functional API's entrypoint is ordinary async code, so there
the stream is consumed in the entrypoint and each claim's tasks start while the LLM writes the
next claim.
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

from langgraph.func import entrypoint, task
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from baselines_langgraph.runner import Runner, check_functional_limit
from examples.common import Operators
from examples.factcheck import steps
from examples.factcheck.steps import ClaimVerdict, Config, Evidence, Report

# State schemas live at module level: LangGraph resolves node and state type hints with
# typing.get_type_hints in this module's globals.


class FactcheckState(TypedDict):
    """The flat graph's state for one question."""

    question: str
    claims: list[str]
    # (claim index, query index, query): one Send per claim appends its queries
    queries: Annotated[list[tuple[int, int, str]], operator.add]
    evidence: list[list[Evidence]]  # per claim, in claim order
    # (claim index, verdict): one Send per claim appends its verdict
    verdicts: Annotated[list[tuple[int, ClaimVerdict]], operator.add]
    report: Report


class ClaimInput(TypedDict):
    """What a Send carries to the per-claim nodes."""

    question: str
    index: int
    claim: str


class JudgeInput(TypedDict):
    """What a Send carries to the flat graph's verdict node."""

    question: str
    index: int
    claim: str
    evidence: list[Evidence]


class ClaimState(TypedDict):
    """The per-claim subgraph's state."""

    question: str
    index: int
    claim: str
    queries: list[str]
    evidence: list[Evidence]
    verdicts: list[tuple[int, ClaimVerdict]]  # the one verdict, keyed by claim index


class ClaimOutput(TypedDict):
    """What the per-claim subgraph hands back to the parent (appended by its reducer)."""

    verdicts: list[tuple[int, ClaimVerdict]]


class ParentState(TypedDict):
    """The subgraph variant's parent state for one question."""

    question: str
    claims: list[str]
    verdicts: Annotated[list[tuple[int, ClaimVerdict]], operator.add]
    report: Report


def _by_index(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Fan-in results in child order, by the index each Send carried."""
    return sorted(items, key=lambda item: item[:-1])


def _per_claim(target: str, fallback: str) -> Any:
    """The conditional edge after ``claims``: one Send per claim, or on to ``fallback``."""

    def fan_out(state: FactcheckState) -> list[Send] | str:
        sends = [
            Send(target, {"question": state["question"], "index": i, "claim": claim})
            for i, claim in enumerate(state["claims"])
        ]
        return sends or fallback  # an answer with no claims goes straight to the report

    return fan_out


# --- flat: one StateGraph, Send fan-outs, reducers, fan-in nodes -----------------------------


def flat(ops: Operators, config: Config | None = None, *, max_concurrency: int = 64) -> Runner:
    """Factcheck as one ``StateGraph`` with per-claim Sends."""
    config = config or Config()

    async def claims(state: FactcheckState) -> dict[str, Any]:
        # A node returns once: the whole answer is written before any claim moves on.
        return {"claims": [c async for c in steps.claims(ops, state["question"], config)]}

    async def queries(state: ClaimInput) -> dict[str, Any]:
        found = await steps.queries(ops, state["question"], state["claim"], config)
        return {"queries": [(state["index"], j, q) for j, q in enumerate(found)]}

    # Retrieval is batched the way a LangGraph user batches: one node after the queries'
    # fan-in searches for every query of the answer in one embedding call and one index
    # search. A Send per query would run in the same superstep (so it would not start any
    # sooner) but make one model call per query. Merging a claim's evidence is a cheap pure
    # function, so it happens here too rather than in a superstep of its own.
    async def retrieve(state: FactcheckState) -> dict[str, Any]:
        ordered = _by_index(state["queries"])
        rows = await steps.retrieve(ops, [q for _, _, q in ordered], config)
        per_claim: list[list[list[Evidence]]] = [[] for _ in state["claims"]]
        for (claim, _, _), row in zip(ordered, rows):
            per_claim[claim].append(row)
        return {"evidence": [steps.merge_evidence(found, config) for found in per_claim]}

    def judge_each(state: FactcheckState) -> list[Send]:
        return [
            Send("verdict", {"question": state["question"], "index": i, "claim": claim,
                             "evidence": evidence})
            for i, (claim, evidence) in enumerate(zip(state["claims"], state["evidence"]))
        ]

    async def verdict(state: JudgeInput) -> dict[str, Any]:
        judged = await steps.judge(ops, state["question"], state["claim"], state["evidence"],
                                   config)
        return {"verdicts": [(state["index"], judged)]}

    async def report(state: FactcheckState) -> dict[str, Any]:
        verdicts = [v for _, v in _by_index(state.get("verdicts", []))]
        return {"report": steps.report(state["question"], verdicts)}

    graph = StateGraph(FactcheckState)
    graph.add_node("claims", claims)
    graph.add_node("queries", queries)
    graph.add_node("retrieve", retrieve)
    graph.add_node("verdict", verdict)
    graph.add_node("report", report)
    graph.add_edge(START, "claims")
    graph.add_conditional_edges("claims", _per_claim("queries", "report"), ["queries", "report"])
    graph.add_edge("queries", "retrieve")  # fan-in: runs once, after every claim's queries
    graph.add_conditional_edges("retrieve", judge_each, ["verdict"])
    graph.add_edge("verdict", "report")  # fan-in: runs once, after every verdict
    graph.add_edge("report", END)
    return Runner(
        graph.compile(name="factcheck-flat"),
        to_input=lambda question: {"question": question},
        from_output=lambda state: state["report"],
        max_concurrency=max_concurrency,
        name="factcheck/flat",
    )


# --- subgraph: Send to a compiled per-claim subgraph -----------------------------------------


def claim_subgraph(ops: Operators, config: Config) -> Any:
    """The compiled per-claim chain: queries -> retrieve -> verdict."""

    async def queries(state: ClaimState) -> dict[str, Any]:
        return {"queries": await steps.queries(ops, state["question"], state["claim"],
                                               config)}

    async def retrieve(state: ClaimState) -> dict[str, Any]:
        # the claim's queries share one embedding call and one index search
        found = await steps.retrieve(ops, state["queries"], config)
        return {"evidence": steps.merge_evidence(found, config)}

    async def verdict(state: ClaimState) -> dict[str, Any]:
        judged = await steps.judge(ops, state["question"], state["claim"], state["evidence"],
                                   config)
        return {"verdicts": [(state["index"], judged)]}

    graph = StateGraph(ClaimState, output_schema=ClaimOutput)
    graph.add_node("queries", queries)
    graph.add_node("retrieve", retrieve)
    graph.add_node("verdict", verdict)
    graph.add_edge(START, "queries")
    graph.add_edge("queries", "retrieve")
    graph.add_edge("retrieve", "verdict")
    graph.add_edge("verdict", END)
    return graph.compile(name="check_claim")


def subgraph(ops: Operators, config: Config | None = None, *, max_concurrency: int = 64) -> Runner:
    """Factcheck with one compiled subgraph per claim, so claims do not wait for each other."""
    config = config or Config()

    async def claims(state: ParentState) -> dict[str, Any]:
        # as in the flat graph: the whole answer is written before any claim moves on
        return {"claims": [c async for c in steps.claims(ops, state["question"], config)]}

    async def report(state: ParentState) -> dict[str, Any]:
        verdicts = [v for _, v in _by_index(state.get("verdicts", []))]
        return {"report": steps.report(state["question"], verdicts)}

    graph = StateGraph(ParentState)
    graph.add_node("claims", claims)
    # The subgraph's output ({"verdicts": [(index, verdict)]}) lands in the parent's
    # operator.add reducer.
    graph.add_node("check_claim", claim_subgraph(ops, config))
    graph.add_node("report", report)
    graph.add_edge(START, "claims")
    graph.add_conditional_edges("claims", _per_claim("check_claim", "report"),
                                ["check_claim", "report"])
    graph.add_edge("check_claim", "report")
    graph.add_edge("report", END)
    return Runner(
        graph.compile(name="factcheck-subgraph"),
        to_input=lambda question: {"question": question},
        from_output=lambda state: state["report"],
        max_concurrency=max_concurrency,
        name="factcheck/subgraph",
    )


# --- functional: @entrypoint and @task ---------------------------------------------------


def functional(
    ops: Operators, config: Config | None = None, *, max_concurrency: int = 64
) -> Runner:
    """Factcheck in the Functional API, each claim's tasks started as the claim is written."""
    check_functional_limit(max_concurrency)
    config = config or Config()

    @task
    async def write_queries(question: str, claim: str) -> list[str]:
        return await steps.queries(ops, question, claim, config)

    @task
    async def retrieve(queries: list[str]) -> list[list[Evidence]]:
        return await steps.retrieve(ops, queries, config)

    @task
    async def judge(question: str, claim: str, evidence: list[Evidence]) -> ClaimVerdict:
        return await steps.judge(ops, question, claim, evidence, config)

    # A claim's chain is driven by a coroutine in the entrypoint, not by a task calling
    # tasks: a task waiting on its own sub-tasks would hold one of LangGraph's
    # max_concurrency slots while they queue for another, and can deadlock at low limits.
    async def check(question: str, claim: str) -> ClaimVerdict:
        found = await retrieve(await write_queries(question, claim))
        return await judge(question, claim, steps.merge_evidence(found, config))

    @entrypoint()
    async def factcheck(question: str) -> Report:
        # The answer is streamed here, in the entrypoint's own code, because a task returns
        # once: this way each claim's tasks start while the LLM writes the next claim. The
        # price is LangGraph's durability: with a checkpointer, a resumed run would write
        # the answer again (these baselines run without one).
        async with asyncio.TaskGroup() as tg:
            checks = [tg.create_task(check(question, claim))
                      async for claim in steps.claims(ops, question, config)]
        return steps.report(question, [c.result() for c in checks])

    return Runner(factcheck, max_concurrency=max_concurrency, name="factcheck/functional")


BUILDERS = {"flat": flat, "subgraph": subgraph, "functional": functional}
