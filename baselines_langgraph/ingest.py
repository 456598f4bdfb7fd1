"""Ingest in LangGraph: documents -> chunks -> embeddings -> near-duplicate check and add -> report.

The same steps as ``examples/ingest`` (``examples.ingest.steps``), orchestrated three ways:

* ``flat``:       chunk -> Send per batch of chunks -> embed -> index (every batch checked and
  added, in order) -> report.
* ``subgraph``:   chunk -> Send per batch of chunks -> [embed -> check and add] -> report.
* ``functional``: every batch's embedding task started at once; batches checked and added in
  order as their embeddings arrive; the report at the end.

The index an ingest run builds (a :class:`~examples.ingest.steps.Deduper`) is a run-scoped
resource, so it travels in LangGraph's runtime context (``context_schema``), one fresh index
per root input, as the plain-Python reference builds one per corpus. ``check_and_add`` is
synchronous, so concurrent nodes never interleave inside one check-and-add.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langgraph.func import entrypoint, task
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from baselines_langgraph.runner import Runner, check_functional_limit
from examples.common import Operators
from examples.ingest import steps
from examples.ingest.steps import (
    Chunk,
    ChunkResult,
    Config,
    Corpus,
    CorpusReport,
    Deduper,
    EmbeddedChunk,
)

# Chunks per embedding call and per check-and-add: the batch size of the Alto flow's
# embed and index stages.
BATCH = 64

# State schemas live at module level: LangGraph resolves node and state type hints with
# typing.get_type_hints in this module's globals.


@dataclass(frozen=True, slots=True)
class IngestContext:
    """The runtime context of one ingest run: the index it builds."""

    deduper: Deduper


class IngestState(TypedDict):
    """The flat graph's state for one corpus."""

    corpus: Corpus
    chunks: list[list[Chunk]]  # per document, in document order
    # (batch index, embedded batch): one Send per batch appends its embeddings
    embedded: Annotated[list[tuple[int, list[EmbeddedChunk]]], operator.add]
    results: list[ChunkResult]  # in chunk order
    report: CorpusReport


class BatchInput(TypedDict):
    """What a Send carries to the flat graph's embed node."""

    index: int
    batch: list[Chunk]


class CorpusState(TypedDict):
    """The subgraph variant's parent state for one corpus."""

    corpus: Corpus
    chunks: list[list[Chunk]]  # per document, in document order
    # (batch index, results): one subgraph per batch appends its results
    indexed: Annotated[list[tuple[int, list[ChunkResult]]], operator.add]
    report: CorpusReport


class BatchState(TypedDict):
    """The per-batch subgraph's state."""

    index: int
    batch: list[Chunk]
    embedded: list[EmbeddedChunk]
    indexed: list[tuple[int, list[ChunkResult]]]  # the batch's results, keyed by its index


class BatchOutput(TypedDict):
    """What the per-batch subgraph hands back to the parent (appended by its reducer)."""

    indexed: list[tuple[int, list[ChunkResult]]]


def _context(ops: Operators, config: Config) -> Any:
    """A fresh index for each run, so runs (and corpora) never see each other's chunks."""
    return lambda: IngestContext(Deduper(ops, config))


async def _embed(ops: Operators, chunks: list[Chunk]) -> list[EmbeddedChunk]:
    """``steps.embed``, skipping the model call when there is nothing to embed."""
    return await steps.embed(ops, chunks) if chunks else []


def _batches(chunks: list[Chunk]) -> list[list[Chunk]]:
    return [chunks[start : start + BATCH] for start in range(0, len(chunks), BATCH)]


def _report(corpus: Corpus, per_doc: list[list[Chunk]], results: list[ChunkResult]) -> Any:
    """The corpus report from the results in chunk order and each document's chunks."""
    docs, start = [], 0
    for doc, chunks in zip(corpus.documents, per_doc):
        docs.append(steps.document_result(doc, results[start : start + len(chunks)]))
        start += len(chunks)
    return steps.corpus_report(corpus, docs)


# --- flat: one StateGraph, Send fan-out, reducer, fan-in --------------------------------------


def flat(ops: Operators, config: Config | None = None, *, max_concurrency: int = 64) -> Runner:
    """Ingest as one ``StateGraph`` with a Send per batch of chunks."""
    config = config or Config()

    async def chunk(state: IngestState) -> dict[str, Any]:
        return {"chunks": [steps.chunks(doc, config) for doc in state["corpus"].documents]}

    # The fan-out is per batch, not per chunk or per document: the model call is what
    # costs, and a batch of chunks shares one forward pass (per-document calls would make
    # hundreds of small ones).
    def per_batch(state: IngestState) -> list[Send] | str:
        flat_chunks = [c for part in state["chunks"] for c in part]
        sends = [Send("embed", {"index": i, "batch": batch})
                 for i, batch in enumerate(_batches(flat_chunks))]
        return sends or "index"  # a corpus without text has nothing to embed

    async def embed(state: BatchInput) -> dict[str, Any]:
        return {"embedded": [(state["index"], await _embed(ops, state["batch"]))]}

    # Fan-in: every batch is checked against the index and added, in chunk order, so
    # each chunk is compared with every chunk indexed before it.
    async def index(state: IngestState, runtime: Runtime[IngestContext]) -> dict[str, Any]:
        results: list[ChunkResult] = []
        for _, batch in sorted(state.get("embedded", []), key=operator.itemgetter(0)):
            results += runtime.context.deduper.check_and_add(batch)
        return {"results": results}

    async def report(state: IngestState) -> dict[str, Any]:
        return {"report": _report(state["corpus"], state["chunks"], state["results"])}

    graph = StateGraph(IngestState, context_schema=IngestContext)
    graph.add_node("chunk", chunk)
    graph.add_node("embed", embed)
    graph.add_node("index", index)
    graph.add_node("report", report)
    graph.add_edge(START, "chunk")
    graph.add_conditional_edges("chunk", per_batch, ["embed", "index"])
    graph.add_edge("embed", "index")
    graph.add_edge("index", "report")
    graph.add_edge("report", END)
    return Runner(
        graph.compile(name="ingest-flat"),
        to_input=lambda corpus: {"corpus": corpus},
        from_output=lambda state: state["report"],
        context=_context(ops, config),
        max_concurrency=max_concurrency,
        name="ingest/flat",
    )


# --- subgraph: Send to a compiled per-batch subgraph ------------------------------------------


def batch_subgraph(ops: Operators) -> Any:
    """The compiled per-batch chain: embed the chunks -> check and add them."""

    async def embed(state: BatchState) -> dict[str, Any]:
        return {"embedded": await _embed(ops, state["batch"])}

    # Batches reach the index in the order they finish embedding, as in the Alto flow;
    # the corpus report does not depend on that order.
    async def index(state: BatchState, runtime: Runtime[IngestContext]) -> dict[str, Any]:
        results = runtime.context.deduper.check_and_add(state["embedded"])
        return {"indexed": [(state["index"], results)]}

    graph = StateGraph(BatchState, context_schema=IngestContext, output_schema=BatchOutput)
    graph.add_node("embed", embed)
    graph.add_node("index", index)
    graph.add_edge(START, "embed")
    graph.add_edge("embed", "index")
    graph.add_edge("index", END)
    return graph.compile(name="index_batch")


def subgraph(ops: Operators, config: Config | None = None, *, max_concurrency: int = 64) -> Runner:
    """Ingest with one compiled subgraph per batch of chunks, indexed once it is embedded."""
    config = config or Config()

    async def chunk(state: CorpusState) -> dict[str, Any]:
        return {"chunks": [steps.chunks(doc, config) for doc in state["corpus"].documents]}

    # The fragment is a batch of chunks rather than a document: a subgraph per document
    # would make one embedding call and one index search per document (hundreds of small
    # ones), where a batch shares one of each.
    def per_batch(state: CorpusState) -> list[Send] | str:
        flat_chunks = [c for part in state["chunks"] for c in part]
        sends = [Send("index_batch", {"index": i, "batch": batch})
                 for i, batch in enumerate(_batches(flat_chunks))]
        return sends or "report"

    async def report(state: CorpusState) -> dict[str, Any]:
        indexed = sorted(state.get("indexed", []), key=operator.itemgetter(0))
        results = [r for _, batch in indexed for r in batch]
        return {"report": _report(state["corpus"], state["chunks"], results)}

    graph = StateGraph(CorpusState, context_schema=IngestContext)
    graph.add_node("chunk", chunk)
    graph.add_node("index_batch", batch_subgraph(ops))
    graph.add_node("report", report)
    graph.add_edge(START, "chunk")
    graph.add_conditional_edges("chunk", per_batch, ["index_batch", "report"])
    graph.add_edge("index_batch", "report")
    graph.add_edge("report", END)
    return Runner(
        graph.compile(name="ingest-subgraph"),
        to_input=lambda corpus: {"corpus": corpus},
        from_output=lambda state: state["report"],
        context=_context(ops, config),
        max_concurrency=max_concurrency,
        name="ingest/subgraph",
    )


# --- functional: @entrypoint and @task ---------------------------------------------------


def functional(
    ops: Operators, config: Config | None = None, *, max_concurrency: int = 64
) -> Runner:
    """Ingest in the Functional API: embeddings run ahead while earlier batches are indexed."""
    check_functional_limit(max_concurrency)
    config = config or Config()

    @task
    async def embed(batch: list[Chunk]) -> list[EmbeddedChunk]:
        return await _embed(ops, batch)

    @task
    async def index(deduper: Deduper, batch: list[EmbeddedChunk]) -> list[ChunkResult]:
        return deduper.check_and_add(batch)

    @entrypoint(context_schema=IngestContext)
    async def ingest(corpus: Corpus, runtime: Runtime[IngestContext]) -> CorpusReport:
        per_doc = [steps.chunks(doc, config) for doc in corpus.documents]  # pure: no task
        # every embedding starts now; each batch is indexed as soon as it and all batches
        # before it are done, in chunk order
        embedding = [embed(batch) for batch in _batches([c for p in per_doc for c in p])]
        results: list[ChunkResult] = []
        for future in embedding:
            results += await index(runtime.context.deduper, await future)
        return _report(corpus, per_doc, results)

    return Runner(
        ingest, context=_context(ops, config), max_concurrency=max_concurrency,
        name="ingest/functional",
    )


BUILDERS = {"flat": flat, "subgraph": subgraph, "functional": functional}
