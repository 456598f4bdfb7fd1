"""Summarize's operator calls and prompts, shared by the Alto flow, the reference and the baselines.

Hierarchical summarization: a document is split into sections and each section
into chunks; the chunks are embedded and the most central ones of each section
(closest to the section's mean embedding) are summarized by the LLM; the
section summaries are summarized again into one for the document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from examples.common import Operators, parse_each


class Config(BaseModel):
    """Summarize settings."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error


    chunk_words: int = Field(60, description="words per chunk (paragraphs are not merged)")
    central: int = Field(2, description="most central chunks summarized per section")
    max_sections: int = Field(6, description="sections summarized per document")
    section_tokens: int = 64
    document_tokens: int = 96


VARIED_FANOUT = {"max_sections": 16}
"""Settings of the benchmark's varied fan-out (``alto bench --fanout varied``): documents keep
their own section counts from the corpus (6-16 of the shipped HOWTOs' 6-44 sections, so that
one long HOWTO does not dominate a small sample)."""


@dataclass(frozen=True, slots=True)
class SectionText:
    """One section to summarize."""

    title: str
    text: str


@dataclass(frozen=True, slots=True)
class DocumentIn:
    """A document: a title and its sections in reading order."""

    title: str
    sections: tuple[SectionText, ...]


@dataclass(frozen=True, slots=True)
class Embedded:
    """A chunk and its embedding."""

    text: str
    vector: np.ndarray


class SectionSummary(BaseModel):
    title: str
    summary: str
    chunks_used: list[str]


class Summary(BaseModel):
    """The summary of one document, with the section summaries it was built from."""

    title: str
    summary: str
    sections: list[SectionSummary]


# Every prompt is laid out for prefix caches: the instructions (the system message, the same
# for every call of a kind), then what all calls of one document share (its title), and the
# section's own text last. The sections of one document then share a byte-identical leading
# part that a server, or an instance of the embedded model, evaluates only once.


def section_messages(document: str, title: str, chunks: Sequence[str]) -> list[dict[str, str]]:
    body = "\n\n".join(chunks)
    return [
        {"role": "system", "content": "Summarize the section of the document in one or two "
         "sentences."},
        {"role": "user", "content": f"Document: {document}\nSection: {title}\n\n{body}"},
    ]


def document_messages(title: str, sections: Sequence[SectionSummary]) -> list[dict[str, str]]:
    notes = "\n".join(f"- {s.title}: {s.summary}" for s in sections) or "- (empty document)"
    return [
        {"role": "system", "content": "Write a three-sentence summary of the document from "
         "its section summaries."},
        {"role": "user", "content": f"Document: {title}\n\n{notes}"},
    ]


def sections(document: DocumentIn, config: Config) -> list[SectionText]:
    """The sections worth summarizing: those with text, the first ``max_sections``."""
    return [s for s in document.sections if s.text.strip()][: config.max_sections]


def chunks(section: SectionText, config: Config) -> list[str]:
    """Chunks of about ``chunk_words`` words; a paragraph is split but never merged."""
    out = []
    for paragraph in section.text.split("\n\n"):
        words = paragraph.split()
        for start in range(0, len(words), config.chunk_words):
            out.append(" ".join(words[start : start + config.chunk_words]))
    return out


async def embed(ops: Operators, texts: list[str]) -> list[Embedded]:
    """Embeddings of a batch of chunks (one model call)."""
    vectors = await ops.embedder.embed(texts)
    return [Embedded(t, v) for t, v in zip(texts, vectors)]


def central(chunks: Sequence[Embedded], config: Config) -> list[str]:
    """The ``central`` chunks nearest the section's mean embedding, in reading order."""
    if not chunks:
        return []
    matrix = np.stack([c.vector for c in chunks])
    centroid = matrix.mean(axis=0)
    scores = matrix @ centroid
    best = sorted(sorted(range(len(chunks)), key=lambda i: (-scores[i], i))[: config.central])
    return [chunks[i].text for i in best]


async def summarize_section(
    ops: Operators, document: DocumentIn, section: SectionText, picked: list[str], config: Config
) -> SectionSummary:
    """The summary of one section of ``document`` from its ``picked`` chunks."""
    assert ops.llm is not None
    text = await ops.llm.chat(section_messages(document.title, section.title, picked),
                              max_tokens=config.section_tokens)
    return SectionSummary(title=section.title, summary=text.strip(), chunks_used=picked)


async def summarize_document(
    ops: Operators, document: DocumentIn, parts: Sequence[SectionSummary], config: Config
) -> Summary:
    assert ops.llm is not None
    text = await ops.llm.chat(document_messages(document.title, parts),
                              max_tokens=config.document_tokens)
    return Summary(title=document.title, summary=text.strip(), sections=list(parts))


def available_inputs() -> int:
    """How many inputs ``load_inputs`` can return: the shipped HOWTOs
    (``n`` larger than this gives only this many)."""
    from examples import data

    return len(data.documents())


def load_inputs(n: int | None = None) -> list[DocumentIn]:
    """The shipped Python HOWTOs (the first ``n``)."""
    from examples import data

    return [
        DocumentIn(d.title, tuple(SectionText(s.title, s.text) for s in d.sections))
        for d in data.documents()[:n]
    ]


def _parse_one(record: Any) -> DocumentIn:
    """``{"title", "sections": [{"title", "text"}, ...]}`` or ``{"title", "text"}``."""
    if isinstance(record, dict) and isinstance(record.get("title"), str):
        if isinstance(record.get("sections"), list):
            try:
                parts = tuple(SectionText(str(s["title"]), str(s["text"]))
                              for s in record["sections"])
            except (KeyError, TypeError) as exc:
                msg = "each section needs a 'title' and a 'text'"
                raise ValueError(msg) from exc
            return DocumentIn(record["title"], parts)
        if isinstance(record.get("text"), str):
            return DocumentIn(record["title"], (SectionText(record["title"], record["text"]),))
    msg = (
        'each summarize input is {"title", "text"} or {"title", "sections": '
                     '[{"title", "text"}, ...]}'
    )
    raise ValueError(msg)


def parse_inputs(records: list[Any]) -> list[Any]:
    """Inputs from the records of a JSON or JSON-lines file."""
    return parse_each(records, _parse_one)


def render(document: DocumentIn, summary: Summary) -> str:
    lines = [f"# {summary.title}", summary.summary]
    for s in summary.sections:
        lines.append(f"  - {s.title}: {s.summary[:120]}")
    return "\n".join(lines)
