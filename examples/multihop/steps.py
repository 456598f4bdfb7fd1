"""Multihop's operator calls and prompts, shared by the Alto flow, the reference and the baselines.

Decomposed RAG: the LLM splits a question into sub-questions; each is embedded,
searched, reranked by late interaction and answered from its passages; the LLM
then composes the final answer from the sub-answers, citing passage ids.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from alto.operators.text import split_lines
from examples.common import Operators, parse_each


class Config(BaseModel):
    """Multihop settings."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error


    max_subquestions: int = Field(3, description="sub-questions per question")
    k: int = Field(6, description="passages retrieved per sub-question before reranking")
    keep: int = Field(2, description="passages kept after reranking")
    decompose_tokens: int = 64
    answer_tokens: int = 64
    compose_tokens: int = 96


VARIED_FANOUT = {"max_subquestions": 6}
"""Settings of the benchmark's varied fan-out (``alto bench --fanout varied``): lists of 1-6
sub-questions are followed whole, so the fan-out per question varies."""


class Passage(BaseModel):
    """A passage used to answer a sub-question."""

    id: str
    text: str
    score: float


class SubAnswer(BaseModel):
    question: str
    answer: str
    passage_ids: list[str]


class Answer(BaseModel):
    """The final answer with its citations and the sub-answers it was composed from."""

    question: str
    answer: str
    citations: list[str]
    subanswers: list[SubAnswer]


def decompose_messages(question: str, n: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"Break the question into at most {n} simpler questions "
         "that can each be answered from one encyclopedia entry. One per line, nothing else."},
        {"role": "user", "content": question},
    ]


# Every prompt is laid out for prefix caches: the instructions (the system message, the same
# for every call of a kind), then what all calls of one question share (the question), then
# the sub-question's passages (sub-questions of one question often find the same best
# passage), and the sub-question itself last. The sub-answers of one question then share a
# byte-identical leading part that a server, or an instance of the embedded model, evaluates
# only once.


def answer_messages(
    question: str, sub: str, passages: Sequence[Passage]
) -> list[dict[str, str]]:
    context = "\n".join(f"[{p.id}] {p.text[:700]}" for p in passages) or "(nothing found)"
    return [
        {"role": "system", "content": "Answer the sub-question in one sentence using only the "
         "passages."},
        {"role": "user", "content": f"Question: {question}\n\nPassages:\n{context}\n\n"
         f"Sub-question: {sub}"},
    ]


def compose_messages(question: str, subanswers: Sequence[SubAnswer]) -> list[dict[str, str]]:
    notes = "\n".join(
        f"- {s.question} {s.answer} [{', '.join(s.passage_ids)}]" for s in subanswers
    ) or "- (no findings)"
    return [
        {"role": "system", "content": "Combine the findings into a short answer. Cite passage "
         "ids in square brackets."},
        {"role": "user", "content": f"Question: {question}\n\nFindings:\n{notes}"},
    ]


async def decompose(ops: Operators, question: str, config: Config) -> list[str]:
    """1-``max_subquestions`` sub-questions (the question itself if the LLM gives none)."""
    assert ops.llm is not None
    text = await ops.llm.chat(decompose_messages(question, config.max_subquestions),
                              max_tokens=config.decompose_tokens)
    subs = [s for s in split_lines(text, strip_markers=True) if s.strip()]
    return subs[: config.max_subquestions] or [question]


async def embed(ops: Operators, texts: list[str]) -> list[np.ndarray]:
    """Embeddings of a batch of sub-questions (one model call)."""
    return list(await ops.embedder.embed(texts))


def search(ops: Operators, vectors: list[np.ndarray], config: Config) -> list[list[Passage]]:
    """Top-``k`` passages for a batch of embedded sub-questions (one index search)."""
    rows = ops.retriever.search_vectors(np.stack(vectors), config.k)
    return [[Passage(id=h.id, text=h.text, score=round(float(h.score), 6)) for h in row]
            for row in rows]


async def rerank(
    ops: Operators, question: str, found: list[Passage], config: Config
) -> list[Passage]:
    """The best ``keep`` passages by late interaction (MaxSim over token embeddings)."""
    from alto.operators.retriever import Hit

    hits = [Hit(p.id, p.text, p.score, rank) for rank, p in enumerate(found, 1)]
    best = await ops.retriever.rerank(question, hits, config.keep)
    return [Passage(id=h.id, text=h.text, score=round(float(h.score), 6)) for h in best]


async def answer(
    ops: Operators, question: str, sub: str, passages: list[Passage], config: Config
) -> SubAnswer:
    """The answer to sub-question ``sub`` of ``question``, from its passages."""
    assert ops.llm is not None
    text = await ops.llm.chat(answer_messages(question, sub, passages),
                              max_tokens=config.answer_tokens)
    return SubAnswer(question=sub, answer=text.strip(), passage_ids=[p.id for p in passages])


async def compose(
    ops: Operators, question: str, subanswers: Sequence[SubAnswer], config: Config
) -> Answer:
    assert ops.llm is not None
    text = await ops.llm.chat(compose_messages(question, subanswers),
                              max_tokens=config.compose_tokens)
    citations = sorted({pid for s in subanswers for pid in s.passage_ids})
    return Answer(question=question, answer=text.strip(), citations=citations,
                  subanswers=list(subanswers))


def available_inputs() -> int:
    """How many inputs ``load_inputs`` can return: the shipped multi-hop questions
    (``n`` larger than this gives only this many)."""
    from examples import data

    return len(data.questions(multihop=True))


def load_inputs(n: int | None = None) -> list[str]:
    """Multi-hop questions from the shipped labelled set (the first ``n``)."""
    from examples import data

    return [q.question for q in data.questions(multihop=True)[:n]]


def _parse_one(record: Any) -> str:
    if isinstance(record, str) and record.strip():
        return record
    if isinstance(record, dict) and isinstance(record.get("question"), str):
        return record["question"]
    msg = 'each multihop input is a question: a string or {"question": "..."}'
    raise ValueError(msg)


def parse_inputs(records: list[Any]) -> list[Any]:
    """Inputs from the records of a JSON or JSON-lines file."""
    return parse_each(records, _parse_one)


def render(question: str, result: Answer) -> str:
    lines = [f"Q: {question}", f"A: {result.answer}", f"   cites {', '.join(result.citations)}"]
    for s in result.subanswers:
        lines.append(f"   - {s.question} -> {s.answer[:100]}")
    return "\n".join(lines)
