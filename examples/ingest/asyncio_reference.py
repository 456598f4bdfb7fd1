"""Ingest written directly on asyncio, one coroutine per corpus: the asyncio reference.

Ingest makes no LLM calls; its cost is the embedding model and the index. The
fastest plain-asyncio form embeds chunks in batches (one forward pass for many
chunks costs far less than one per chunk) and overlaps the two: while the index
checks and adds batch *i* on the event loop, the embedding model already works
on batch *i + 1* on its worker thread. Batches are checked in document order
against a fresh index per corpus, as in the reference, so its output equals the
reference's.
"""

from __future__ import annotations

import asyncio

from examples.common import Operators
from examples.ingest import steps
from examples.ingest.steps import Chunk, ChunkResult, Config, Corpus, CorpusReport, Deduper

BATCH = 64
"""Chunks per embedding call (the Alto flow's embed stage batches up to the same number)."""


async def asyncio_reference(
    ops: Operators, corpus: Corpus, config: Config | None = None
) -> CorpusReport:
    """Index one corpus, embedding the next batch while the current one is checked and added."""
    config = config or Config()
    deduper = Deduper(ops, config)
    per_doc = [steps.chunks(doc, config) for doc in corpus.documents]
    chunks: list[Chunk] = [c for cs in per_doc for c in cs]
    batches = [chunks[i : i + BATCH] for i in range(0, len(chunks), BATCH)]
    results: list[ChunkResult] = []
    async with asyncio.TaskGroup() as group:
        pending = group.create_task(steps.embed(ops, batches[0])) if batches else None
        for i in range(len(batches)):
            assert pending is not None
            embedded = await pending
            if i + 1 < len(batches):
                pending = group.create_task(steps.embed(ops, batches[i + 1]))
            results += deduper.check_and_add(embedded)
    docs = []
    start = 0
    for doc, cs in zip(corpus.documents, per_doc):
        docs.append(steps.document_result(doc, results[start : start + len(cs)]))
        start += len(cs)
    return steps.corpus_report(corpus, docs)
