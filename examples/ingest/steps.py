"""Ingest's operator calls, shared by the Alto flow, the reference and the baselines.

Streaming corpus indexing with near-duplicate detection: documents are cut
into chunks, the chunks embedded, and each chunk is checked against the index
for near duplicates before it is added. The corpus report lists duplicate
groups (chunks linked by similarity above a threshold), which do not depend
on the order chunks arrive in: whichever of two near-duplicates comes second
finds the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from examples.common import Operators, parse_each


class Config(BaseModel):
    """Ingest settings."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error


    chunk_words: int = Field(80, description="words per chunk")
    threshold: float = Field(0.92, description="cosine similarity of near duplicates")
    k: int = Field(8, description="neighbours checked per chunk")
    embed_batch_timeout: float = Field(
        0.0,
        ge=0.0,
        description="seconds a partial batch of the Alto flow's embed stage waits for more "
        "chunks (0: it runs as soon as the stage is free)",
    )


@dataclass(frozen=True, slots=True)
class Doc:
    id: str
    text: str
    job: str = ""  # set when ingest starts: which corpus's index the document goes into


@dataclass(frozen=True, slots=True)
class Corpus:
    """One ingest job: a named stream of documents."""

    name: str
    documents: tuple[Doc, ...]


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str  # "<document id>#<chunk index>"
    doc_id: str
    text: str
    job: str = ""


@dataclass(frozen=True, slots=True)
class EmbeddedChunk:
    chunk: Chunk
    vector: np.ndarray


class ChunkResult(BaseModel):
    """A chunk after indexing, and the earlier chunks it nearly duplicates."""

    id: str
    matches: list[str]


class DocResult(BaseModel):
    id: str
    chunks: int
    links: list[tuple[str, str]]


class CorpusReport(BaseModel):
    """What ingesting a corpus found."""

    corpus: str
    documents: int
    chunks: int
    duplicate_groups: list[list[str]] = Field(
        description="chunk ids linked by near-duplicate similarity, each group sorted"
    )
    documents_with_duplicates: list[str]


@dataclass(frozen=True, slots=True)
class Ingested:
    """One document's result, with the job it was indexed under."""

    job: str
    result: DocResult


class Deduper:
    """The indexes being built, one per ingest job, with the near-duplicate check before adds.

    Each corpus gets a job id when its ingest starts (:meth:`start`) and its own
    index, released when its report is made (:meth:`finish`): corpora ingested
    at the same time, or one after another, never see each other's chunks.

    ``check_and_add`` is synchronous: checking a batch and adding it happen with
    no other batch in between, so every chunk is compared with every chunk of
    its job indexed before it.
    """

    def __init__(self, ops: Operators, config: Config) -> None:
        self.ops = ops
        self.config = config
        self.indexes: dict[str, Any] = {}
        self._jobs = 0

    def start(self, corpus: Corpus) -> str:
        self._jobs += 1
        return f"{corpus.name}/{self._jobs}"

    def finish(self, job: str | None) -> None:
        if job is not None:
            self.indexes.pop(job, None)

    def check_and_add(self, batch: Sequence[EmbeddedChunk]) -> list[ChunkResult]:
        results: dict[int, ChunkResult] = {}
        by_job: dict[str, list[int]] = {}
        for i, e in enumerate(batch):
            by_job.setdefault(e.chunk.job, []).append(i)
        for job, positions in by_job.items():
            for i, result in zip(
                positions, self._check_and_add(job, [batch[i] for i in positions])
            ):
                results[i] = result
        return [results[i] for i in range(len(batch))]

    def _check_and_add(self, job: str, batch: list[EmbeddedChunk]) -> list[ChunkResult]:
        from alto.operators.retriever import Retriever

        index = self.indexes.get(job)
        if index is None:
            index = self.indexes[job] = Retriever(self.ops.embedder)
        matrix = np.stack([e.vector for e in batch]).astype(np.float32)
        threshold = self.config.threshold
        matches: list[list[str]] = [[] for _ in batch]
        if len(index):
            k = min(self.config.k, len(index))
            for row, hits in zip(matches, index.search_vectors(matrix, k)):
                row.extend(h.id for h in hits if h.score >= threshold)
        within = matrix @ matrix.T  # each chunk against those before it in the batch
        for i in range(len(batch)):
            for j in range(i):
                if within[i, j] >= threshold:
                    matches[i].append(batch[j].chunk.id)
        index.add_vectors(matrix, [e.chunk.text for e in batch], ids=[e.chunk.id for e in batch])
        return [ChunkResult(id=e.chunk.id, matches=sorted(m)) for e, m in zip(batch, matches)]


def chunks(doc: Doc, config: Config) -> list[Chunk]:
    words = doc.text.split()
    return [
        Chunk(f"{doc.id}#{i}", doc.id, " ".join(words[start : start + config.chunk_words]),
              doc.job)
        for i, start in enumerate(range(0, len(words), config.chunk_words))
    ]


async def embed(ops: Operators, batch: list[Chunk]) -> list[EmbeddedChunk]:
    vectors = await ops.embedder.embed([c.text for c in batch])
    return [EmbeddedChunk(c, v) for c, v in zip(batch, vectors)]


def document_result(doc: Doc, results: Sequence[ChunkResult]) -> DocResult:
    links = sorted((r.id, m) for r in results for m in r.matches)
    return DocResult(id=doc.id, chunks=len(results), links=links)


def corpus_report(corpus: Corpus, docs: Sequence[DocResult]) -> CorpusReport:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for d in docs:
        for a, b in d.links:
            parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    duplicate_groups = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    in_groups = {c for g in duplicate_groups for c in g}
    return CorpusReport(
        corpus=corpus.name,
        documents=len(docs),
        chunks=sum(d.chunks for d in docs),
        duplicate_groups=duplicate_groups,
        documents_with_duplicates=sorted({c.split("#", 1)[0] for c in in_groups}),
    )


def available_inputs() -> int:
    """How many documents ``load_inputs`` can put in its corpus: the size of the shipped
    ingest stream (``n`` larger than this gives only this many)."""
    from examples import data

    return len(data.ingest_documents())


def load_inputs(n: int | None = None) -> list[Corpus]:
    """One corpus: the first ``n`` documents of the shipped ingest stream (default 200)."""
    from examples import data

    docs = data.ingest_documents(n or 200)
    return [Corpus(f"foldoc-{len(docs)}", tuple(Doc(d.id, d.text) for d in docs))]


def _parse_doc(record: Any) -> Doc:
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return Doc(str(record.get("id", "")), record["text"])
    msg = 'each ingest input is a document: {"id": "...", "text": "..."}'
    raise ValueError(msg)


def parse_inputs(records: list[Any]) -> list[Corpus]:
    """A file's records are the documents of one corpus (ids default to their line number)."""
    docs = parse_each(records, _parse_doc)
    docs = [d if d.id else Doc(f"doc-{i}", d.text) for i, d in enumerate(docs)]
    return [Corpus(f"file-{len(docs)}", tuple(docs))]


def input_summary(corpus: Corpus) -> dict[str, Any]:
    """A corpus as the CLI's JSON output shows it: its name and size, not every document."""
    return {"corpus": corpus.name, "documents": len(corpus.documents)}


def render(corpus: Corpus, report: CorpusReport) -> str:
    lines = [f"corpus {report.corpus}: {report.documents} documents, {report.chunks} chunks, "
             f"{len(report.duplicate_groups)} near-duplicate groups"]
    for group in report.duplicate_groups[:10]:
        lines.append(f"   {' ~ '.join(group)}")
    if len(report.duplicate_groups) > 10:
        lines.append(f"   ... {len(report.duplicate_groups) - 10} more")
    return "\n".join(lines)
