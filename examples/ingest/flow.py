"""Ingest as an Alto flow: a stream of documents indexed chunk by chunk, batched across documents.

    corpus -> documents (split) -> chunks (split) -> embed (batched)
           -> check and add (batched, one replica) -> per document (gather)
           -> corpus report (gather)
"""

from __future__ import annotations

import alto
from alto import Gather, Split
from examples.common import Operators
from examples.ingest import steps
from examples.ingest.steps import (
    Chunk,
    ChunkResult,
    Config,
    Corpus,
    CorpusReport,
    Deduper,
    Doc,
    DocResult,
    EmbeddedChunk,
)


def build(ops: Operators, config: Config | None = None) -> alto.Flow:
    """The ingest flow over ``ops``; it indexes into a fresh index of its own."""
    config = config or Config()
    deduper = Deduper(ops, config)

    @alto.stage
    async def documents(corpus: Corpus) -> Split[Doc]:
        for doc in corpus.documents:
            yield doc  # documents stream in; each is chunked while the next arrives

    @alto.stage
    async def chunks(doc: Doc) -> Split[Chunk]:
        return steps.chunks(doc, config)

    # Throughput comes from batching: chunks of many documents share one forward pass.
    @alto.stage(batch=64, batch_timeout=0.01)
    async def embed(chunk: list[Chunk]) -> list[EmbeddedChunk]:
        return await steps.embed(ops, chunk)

    # One replica: a batch is checked against the index and added before the next one,
    # so every chunk is compared with every chunk indexed before it.
    @alto.stage(batch=64)
    async def index(item: list[EmbeddedChunk]) -> list[ChunkResult]:
        return deduper.check_and_add(item)

    @alto.stage
    async def per_document(results: Gather[ChunkResult], doc: Doc) -> DocResult:
        return steps.document_result(doc, results)

    @alto.stage
    async def report(docs: Gather[DocResult], corpus: Corpus) -> CorpusReport:
        return steps.corpus_report(corpus, docs)

    @alto.flow(name="ingest")
    def ingest(corpus: Corpus):
        doc = documents(corpus)
        return report(per_document(index(embed(chunks(doc))), doc), corpus)

    return ingest


async def reference(
    ops: Operators, inputs: list[Corpus], config: Config | None = None
) -> list[CorpusReport]:
    """The same computation in plain Python, one chunk after another (no Alto)."""
    config = config or Config()
    reports = []
    for corpus in inputs:
        deduper = Deduper(ops, config)
        docs = []
        for doc in corpus.documents:
            results = []
            for chunk in steps.chunks(doc, config):
                results += deduper.check_and_add(await steps.embed(ops, [chunk]))
            docs.append(steps.document_result(doc, results))
        reports.append(steps.corpus_report(corpus, docs))
    return reports
