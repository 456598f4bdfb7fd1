"""Shipped corpora for the example applications: loaders over small gzip JSON-lines files.

All text comes from two Debian packages (see ``README.md`` here for sources and licences):
FOLDOC, the Free On-line Dictionary of Computing, and the Python 3.11 documentation.
``build.py`` rebuilds every file from those packages; the loaders need only the standard library.

    >>> from examples import data
    >>> corpus = data.passages()
    >>> question = data.questions()[0]
    >>> question.gold_ids[0] in data.passages_by_id()
    True

What is here:

- :func:`passages`: about 2,650 retrieval passages of roughly 50-200 words (FOLDOC entries,
  Python glossary terms, library module introductions, tutorial and FAQ sections).
- :func:`questions`: 500 single-hop questions with a gold answer (text that occurs verbatim in
  the gold passage) and gold passage ids; ``questions(multihop=True)``: 100 questions with 2-3
  sub-questions each (a FOLDOC entry and the entries its definition refers to).
- :func:`documents`: 16 Python HOWTOs with their sections, for hierarchical summarization.
- :func:`ingest_documents`: 5,000 whole FOLDOC entries (16 to a few thousand words) in a fixed
  shuffled order, for a corpus-ingest stream.

The loaders cache the parsed files; each call returns a new list of frozen records.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "DATA_DIR",
    "Document",
    "IngestDocument",
    "Passage",
    "Question",
    "Section",
    "documents",
    "ingest_documents",
    "passages",
    "passages_by_id",
    "questions",
]

DATA_DIR = Path(__file__).resolve().parent
"""Folder holding the shipped ``*.jsonl.gz`` files."""


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieval passage.

    Attributes:
        id: stable id, e.g. ``"foldoc:garbage-collection"`` or ``"pydoc:faq/design:0003"``.
        title: the FOLDOC headword, or the page (and section) title.
        text: the passage; it starts with its title, so it can be embedded on its own.
        source: ``"foldoc"`` or ``"python-3.11-docs/<page>"``.
    """

    id: str
    title: str
    text: str
    source: str


@dataclass(frozen=True, slots=True)
class Question:
    """A labelled question.

    Attributes:
        id: stable id (``q-foldoc-0001``, ``q-faq-0007``, ``mh-0042``; empty for sub-questions).
        kind: ``foldoc-definition``, ``python-glossary``, ``python-module``, ``python-faq``,
            ``foldoc-multihop``, or ``subquestion``.
        question: the question text.
        answer: gold answer; for single-hop and sub-questions it occurs verbatim in every gold
            passage, for a multi-hop question it is the sub-answers joined by spaces.
        gold_ids: ids of the passages that hold the answer.
        subquestions: for multi-hop questions, 2-3 sub-questions in order (the first asks about
            the main term, the others about terms its definition refers to); empty otherwise.
    """

    id: str
    kind: str
    question: str
    answer: str
    gold_ids: tuple[str, ...]
    subquestions: tuple[Question, ...] = ()


@dataclass(frozen=True, slots=True)
class Section:
    """One heading of a document and the text directly under it.

    Attributes:
        title: the heading.
        level: 1 for the document title, 2 for its sections, and so on.
        text: paragraphs separated by blank lines; empty when the heading only introduces
            subsections.
    """

    title: str
    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Document:
    """A long document with its sections in reading order.

    Attributes:
        id: e.g. ``"howto/regex"``.
        title: the document title.
        source: ``"python-3.11-docs/howto/<name>"``.
        sections: every heading of the document in order, with the text under it.
    """

    id: str
    title: str
    source: str
    sections: tuple[Section, ...]

    @property
    def text(self) -> str:
        """The whole document as plain text, headings included."""
        parts = []
        for section in self.sections:
            parts.append(section.title)
            if section.text:
                parts.append(section.text)
        return "\n\n".join(parts)


@dataclass(frozen=True, slots=True)
class IngestDocument:
    """A short document of the ingest stream (one whole FOLDOC entry).

    Attributes:
        id: stable id, e.g. ``"foldoc-entry:garbage-collection"``.
        title: the headword.
        text: ``"<headword>: <all paragraphs>"``.
        source: ``"foldoc"``.
    """

    id: str
    title: str
    text: str
    source: str


def _records(name: str) -> Iterator[dict[str, Any]]:
    path = DATA_DIR / name
    if not path.exists():
        msg = (
            f"corpus file {str(path)!r} is missing; rebuild it with "
            "'python examples/data/build.py' (needs the Debian packages python3.11-doc and "
            "dict-foldoc)"
        )
        raise FileNotFoundError(msg)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def _question(record: dict[str, Any], kind: str = "subquestion") -> Question:
    return Question(
        id=record.get("id", ""),
        kind=record.get("kind", kind),
        question=record["question"],
        answer=record["answer"],
        gold_ids=tuple(record["gold_ids"]),
        subquestions=tuple(_question(sub) for sub in record.get("subquestions", ())),
    )


@cache
def _passages() -> tuple[Passage, ...]:
    return tuple(Passage(**record) for record in _records("passages.jsonl.gz"))


@cache
def _questions(multihop: bool) -> tuple[Question, ...]:
    name = "multihop.jsonl.gz" if multihop else "questions.jsonl.gz"
    return tuple(_question(record) for record in _records(name))


@cache
def _documents() -> tuple[Document, ...]:
    return tuple(
        Document(
            id=record["id"],
            title=record["title"],
            source=record["source"],
            sections=tuple(Section(**section) for section in record["sections"]),
        )
        for record in _records("documents.jsonl.gz")
    )


@cache
def _ingest() -> tuple[IngestDocument, ...]:
    return tuple(IngestDocument(**record) for record in _records("ingest.jsonl.gz"))


def passages() -> list[Passage]:
    """All retrieval passages: FOLDOC (by id), then the Python glossary, library, tutorial, FAQ."""
    return list(_passages())


def passages_by_id() -> dict[str, Passage]:
    """All retrieval passages keyed by id."""
    return {passage.id: passage for passage in _passages()}


def questions(multihop: bool = False) -> list[Question]:
    """The labelled questions.

    Args:
        multihop: False for the 500 single-hop questions (200 FOLDOC definitions, 100 Python
            glossary terms, 100 library modules, 100 FAQ entries, in that order); True for the
            100 multi-hop questions with sub-questions.
    """
    return list(_questions(multihop))


def documents() -> list[Document]:
    """The long documents (Python HOWTOs), sorted by id."""
    return list(_documents())


def ingest_documents(n: int | None = None) -> list[IngestDocument]:
    """The ingest stream: whole FOLDOC entries in a fixed pseudo-random order.

    Args:
        n: return only the first ``n`` documents (all 5,000 when None).

    Raises:
        ValueError: if ``n`` is negative.
    """
    if n is not None and n < 0:
        msg = f"n must be None or >= 0, got {n}"
        raise ValueError(msg)
    stream = _ingest()
    return list(stream if n is None else stream[:n])
