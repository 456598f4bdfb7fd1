"""Ingest as an Alto flow: a stream of documents indexed chunk by chunk, batched across documents.

    corpus -> documents (split) -> chunks (split) -> embed (batched)
           -> check and add (batched, one replica) -> per document (gather)
           -> corpus report (gather)
"""

from __future__ import annotations

from dataclasses import replace

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
    EmbeddedChunk,
    Ingested,
)


def build(ops: Operators, config: Config | None = None) -> alto.Flow:
    """The ingest flow over ``ops``; each corpus it ingests gets an index of its own."""
    config = config or Config()
    deduper = Deduper(ops, config)

    @alto.stage
    async def documents(corpus: Corpus) -> Split[Doc]:
        job = deduper.start(corpus)
        for doc in corpus.documents:
            yield replace(doc, job=job)  # documents stream in; each is chunked as it comes

    @alto.stage
    async def chunks(doc: Doc) -> Split[Chunk]:
        for chunk in steps.chunks(doc, config):
            yield chunk

    # Throughput comes from batching: chunks of many documents share one forward pass.
    # No batch timeout by default: a partial batch runs as soon as the stage is free, and the
    # next one fills while it runs. Under load a timeout only makes chunks wait: other
    # corpora keep the stages upstream busy, so a partial batch waits out the whole timeout.
    @alto.stage(batch=64, batch_timeout=config.embed_batch_timeout)
    async def embed(chunk: list[Chunk]) -> list[EmbeddedChunk]:
        return await steps.embed(ops, chunk)

    # One replica: a batch is checked against the index and added before the next one,
    # so every chunk is compared with every chunk indexed before it.
    @alto.stage(batch=64)
    async def index(item: list[EmbeddedChunk]) -> list[ChunkResult]:
        return deduper.check_and_add(item)

    @alto.stage
    async def per_document(results: Gather[ChunkResult], doc: Doc) -> Ingested:
        return Ingested(doc.job, steps.document_result(doc, results))

    @alto.stage
    async def report(docs: Gather[Ingested], corpus: Corpus) -> CorpusReport:
        deduper.finish(docs[0].job if docs else None)  # the corpus's index is done
        return steps.corpus_report(corpus, [d.result for d in docs])

    @alto.flow(name="ingest")
    def ingest(corpus: Corpus):
        doc = documents(corpus)
        return report(per_document(index(embed(chunks(doc))), doc), corpus)

    ingest.deduper = deduper  # its open indexes, for inspection
    return ingest


async def reference(
    ops: Operators, inputs: list[Corpus], config: Config | None = None
) -> list[CorpusReport]:
    """The same computation in plain Python, one chunk after another (no Alto)."""
    config = config or Config()
    reports = []
    deduper = Deduper(ops, config)
    for corpus in inputs:
        job = deduper.start(corpus)
        docs = []
        for doc in corpus.documents:
            doc = replace(doc, job=job)
            results = []
            for chunk in steps.chunks(doc, config):
                results += deduper.check_and_add(await steps.embed(ops, [chunk]))
            docs.append(steps.document_result(doc, results))
        deduper.finish(job)
        reports.append(steps.corpus_report(corpus, docs))
    return reports
