"""Summarize in LangGraph: sections -> chunks -> embeddings -> section summaries -> summary.

The same steps as ``examples/summarize`` (``examples.summarize.steps``), orchestrated three
ways:

* ``flat``:       central (sections and chunks cut, every chunk of the document embedded in one
  call, central chunks picked per section) -> Send per section -> section summary ->
  document summary.
* ``subgraph``:   Send per section -> [embed the section's chunks and pick the central ones ->
  section summary] -> document summary.
* ``functional``: per section a chain of tasks (embed its chunks, then summarize), all started
  at once; the document summary when all are in.

Cutting sections and chunks is cheap pure Python, so no variant spends a superstep or a Send
per chunk on it; the model work per chunk is the embedding, which is batched (the whole
document in the flat graph, a section at a time where sections are pipelined).
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
from examples.summarize import steps
from examples.summarize.steps import (
    Config,
    DocumentIn,
    Embedded,
    SectionSummary,
    SectionText,
    Summary,
)

# State schemas live at module level: LangGraph resolves node and state type hints with
# typing.get_type_hints in this module's globals.


class SummarizeState(TypedDict):
    """The graph state for one document (both graph variants)."""

    document: DocumentIn
    sections: list[SectionText]
    picked: list[list[str]]  # central chunks per section, in section order (flat graph)
    # (section index, summary): one Send per section appends its summary
    parts: Annotated[list[tuple[int, SectionSummary]], operator.add]
    summary: Summary


class SectionInput(TypedDict):
    """What a Send carries to the flat graph's section summary node."""

    document: DocumentIn
    index: int
    section: SectionText
    picked: list[str]


class SectionState(TypedDict):
    """The per-section subgraph's state."""

    document: DocumentIn
    index: int
    section: SectionText
    picked: list[str]
    parts: list[tuple[int, SectionSummary]]  # the one section summary, keyed by its index


class SectionOutput(TypedDict):
    """What the per-section subgraph hands back to the parent (appended by its reducer)."""

    parts: list[tuple[int, SectionSummary]]


async def _embed(ops: Operators, texts: list[str]) -> list[Embedded]:
    """``steps.embed``, skipping the model call when there is nothing to embed."""
    return await steps.embed(ops, texts) if texts else []


async def _central(ops: Operators, section: SectionText, config: Config) -> list[str]:
    """One section's central chunks: its chunks embedded in one call."""
    return steps.central(await _embed(ops, steps.chunks(section, config)), config)


def _document_summary(ops: Operators, config: Config) -> Any:
    async def document_summary(state: SummarizeState) -> dict[str, Any]:
        parts = [p for _, p in sorted(state.get("parts", []), key=operator.itemgetter(0))]
        return {"summary": await steps.summarize_document(ops, state["document"], parts,
                                                          config)}

    return document_summary


# --- flat: one StateGraph, Send fan-out, reducer, fan-in --------------------------------------


def flat(ops: Operators, config: Config | None = None, *, max_concurrency: int = 64) -> Runner:
    """Summarize as one ``StateGraph`` with per-section Sends."""
    config = config or Config()

    # One node embeds every chunk of the document in one model call: a Send per section
    # (or per chunk) would run in the same superstep, so no summary could start sooner, and
    # would make one model call per section instead.
    async def central(state: SummarizeState) -> dict[str, Any]:
        sections = steps.sections(state["document"], config)
        chunks = [steps.chunks(s, config) for s in sections]
        embedded = await _embed(ops, [c for part in chunks for c in part])
        picked, start = [], 0
        for part in chunks:
            picked.append(steps.central(embedded[start : start + len(part)], config))
            start += len(part)
        return {"sections": sections, "picked": picked}

    def per_section(state: SummarizeState) -> list[Send] | str:
        sends = [Send("section_summary", {"document": state["document"], "index": i,
                                          "section": s, "picked": p})
                 for i, (s, p) in enumerate(zip(state["sections"], state["picked"]))]
        return sends or "document_summary"  # a document with nothing to summarize

    async def section_summary(state: SectionInput) -> dict[str, Any]:
        part = await steps.summarize_section(ops, state["document"], state["section"],
                                             state["picked"], config)
        return {"parts": [(state["index"], part)]}

    graph = StateGraph(SummarizeState)
    graph.add_node("central", central)
    graph.add_node("section_summary", section_summary)
    graph.add_node("document_summary", _document_summary(ops, config))
    graph.add_edge(START, "central")
    graph.add_conditional_edges("central", per_section,
                                ["section_summary", "document_summary"])
    graph.add_edge("section_summary", "document_summary")  # fan-in: after every section
    graph.add_edge("document_summary", END)
    return Runner(
        graph.compile(name="summarize-flat"),
        to_input=lambda document: {"document": document},
        from_output=lambda state: state["summary"],
        max_concurrency=max_concurrency,
        name="summarize/flat",
    )


# --- subgraph: Send to a compiled per-section subgraph ---------------------------------------


def section_subgraph(ops: Operators, config: Config) -> Any:
    """The compiled per-section chain: central chunks -> section summary."""

    # Each section embeds its own chunks (one call per section), so its summary can start
    # while other sections are still being embedded.
    async def central(state: SectionState) -> dict[str, Any]:
        return {"picked": await _central(ops, state["section"], config)}

    async def section_summary(state: SectionState) -> dict[str, Any]:
        part = await steps.summarize_section(ops, state["document"], state["section"],
                                             state["picked"], config)
        return {"parts": [(state["index"], part)]}

    graph = StateGraph(SectionState, output_schema=SectionOutput)
    graph.add_node("central", central)
    graph.add_node("section_summary", section_summary)
    graph.add_edge(START, "central")
    graph.add_edge("central", "section_summary")
    graph.add_edge("section_summary", END)
    return graph.compile(name="summarize_section")


def subgraph(ops: Operators, config: Config | None = None, *, max_concurrency: int = 64) -> Runner:
    """Summarize with one compiled subgraph per section."""
    config = config or Config()

    # Cutting sections is pure and cheap: the fan-out happens on the edge out of START
    # rather than in a node (and superstep) of its own.
    def per_section(state: SummarizeState) -> list[Send] | str:
        sends = [Send("summarize_section", {"document": state["document"], "index": i,
                                            "section": s})
                 for i, s in enumerate(steps.sections(state["document"], config))]
        return sends or "document_summary"

    graph = StateGraph(SummarizeState)
    graph.add_node("summarize_section", section_subgraph(ops, config))
    graph.add_node("document_summary", _document_summary(ops, config))
    graph.add_conditional_edges(START, per_section, ["summarize_section", "document_summary"])
    graph.add_edge("summarize_section", "document_summary")
    graph.add_edge("document_summary", END)
    return Runner(
        graph.compile(name="summarize-subgraph"),
        to_input=lambda document: {"document": document},
        from_output=lambda state: state["summary"],
        max_concurrency=max_concurrency,
        name="summarize/subgraph",
    )


# --- functional: @entrypoint and @task ---------------------------------------------------


def functional(
    ops: Operators, config: Config | None = None, *, max_concurrency: int = 64
) -> Runner:
    """Summarize in the Functional API: every section's chain of tasks runs at once."""
    check_functional_limit(max_concurrency)
    config = config or Config()

    @task
    async def central(section: SectionText) -> list[str]:
        return await _central(ops, section, config)

    @task
    async def summarize_section(document: DocumentIn, section: SectionText,
                                picked: list[str]) -> SectionSummary:
        return await steps.summarize_section(ops, document, section, picked, config)

    @task
    async def summarize_document(document: DocumentIn,
                                 parts: list[SectionSummary]) -> Summary:
        return await steps.summarize_document(ops, document, parts, config)

    # Each chain is a coroutine of the entrypoint rather than a task calling tasks, which
    # would hold a max_concurrency slot while its sub-tasks wait for one.
    async def one_section(document: DocumentIn, section: SectionText) -> SectionSummary:
        return await summarize_section(document, section, await central(section))

    @entrypoint()
    async def summarize(document: DocumentIn) -> Summary:
        sections = steps.sections(document, config)  # pure: no task needed
        parts = await asyncio.gather(*(one_section(document, s) for s in sections))
        return await summarize_document(document, list(parts))

    return Runner(summarize, max_concurrency=max_concurrency, name="summarize/functional")


BUILDERS = {"flat": flat, "subgraph": subgraph, "functional": functional}
