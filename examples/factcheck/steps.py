"""Factcheck's operator calls and prompts, shared by the Alto flow, the reference and the baselines.

FacTool-style verification: the LLM answers a question; each sentence of the
answer is a claim; per claim the LLM writes search queries, the retriever
finds passages for each, and the LLM judges the claim against the evidence.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, AsyncIterator, Sequence

from pydantic import BaseModel, ConfigDict, Field

from alto.operators.text import sentences, split_lines
from examples.common import Operators, parse_each


class Config(BaseModel):
    """Factcheck settings."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error


    answer_tokens: int = Field(96, description="most tokens of the LLM's answer")
    max_claims: int = Field(4, description="claims checked per answer")
    max_queries: int = Field(2, description="search queries written per claim (1-3)")
    k: int = Field(3, description="passages retrieved per query")
    evidence_k: int = Field(3, description="passages kept as evidence per claim")
    query_tokens: int = 48
    verdict_tokens: int = 128


VARIED_FANOUT = {"max_claims": 8}
"""Settings of the benchmark's varied fan-out (``alto bench --fanout varied``): answers of 1-8
sentences are checked whole, so the claims per input vary with the answer."""


class Evidence(BaseModel):
    """A passage retrieved for a claim."""

    id: str
    text: str
    score: float


class Verdict(BaseModel):
    """What the LLM answers about one claim (structured output)."""

    supported: bool = Field(description="whether the evidence supports the claim")
    # bounded, so a small model cannot run out of tokens inside the string
    reason: str = Field(max_length=160, description="one short sentence explaining the verdict")


class ClaimVerdict(BaseModel):
    """One claim, the evidence it was judged against, and the verdict."""

    claim: str
    supported: bool
    reason: str
    evidence_ids: list[str]


class Report(BaseModel):
    """The factuality report of one answer."""

    question: str
    claims: list[ClaimVerdict]
    factuality: float = Field(description="share of claims the evidence supports (1.0 if none)")


def answer_messages(question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a concise technical expert. Answer in 2-4 "
         "plain sentences, no lists."},
        {"role": "user", "content": question},
    ]


# Every prompt is laid out for prefix caches: the instructions (the system message, the same
# for every call of a kind), then what all calls of one question share (the question), and
# the claim's own text last (a verdict's evidence before its claim: claims of one answer
# often find the same best passage). Calls for the claims of one question then share a
# byte-identical leading part that a server, or an instance of the embedded model, evaluates
# only once.


def query_messages(question: str, claim: str, n: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"Write {n} short search queries, one per line, that "
         "would find evidence to check the claim made in answer to the question. Only the "
         "queries."},
        {"role": "user", "content": f"Question: {question}\nClaim: {claim}"},
    ]


def verdict_messages(
    question: str, claim: str, evidence: Sequence[Evidence]
) -> list[dict[str, str]]:
    passages = "\n".join(f"[{e.id}] {e.text[:600]}" for e in evidence) or "(no evidence found)"
    return [
        {"role": "system", "content": "Decide whether the evidence supports the claim."},
        {"role": "user", "content": f"Question: {question}\n\nEvidence:\n{passages}\n\n"
         f"Claim: {claim}"},
    ]


async def claims(ops: Operators, question: str, config: Config) -> AsyncIterator[str]:
    """The answer's sentences, each as soon as the LLM has finished writing it."""
    assert ops.llm is not None
    stream = ops.llm.stream(answer_messages(question), max_tokens=config.answer_tokens)
    n = 0
    async with aclosing(sentences(stream)) as found:
        async for claim in found:
            if n == config.max_claims:
                break  # stops the LLM too
            yield claim
            n += 1


async def queries(ops: Operators, question: str, claim: str, config: Config) -> list[str]:
    """1-``max_queries`` search queries for a claim made in answer to ``question`` (the claim
    itself if the LLM gives none)."""
    assert ops.llm is not None
    text = await ops.llm.chat(query_messages(question, claim, config.max_queries),
                              max_tokens=config.query_tokens)
    found = [q for q in split_lines(text, strip_markers=True) if q.strip()]
    return found[: config.max_queries] or [claim]


async def retrieve(ops: Operators, batch: list[str], config: Config) -> list[list[Evidence]]:
    """Passages for a batch of queries: one embedding call and one index search for all."""
    hits = await ops.retriever.search(batch, config.k)
    return [[Evidence(id=h.id, text=h.text, score=round(float(h.score), 6)) for h in row]
            for row in hits]


def merge_evidence(per_query: Sequence[Sequence[Evidence]], config: Config) -> list[Evidence]:
    """One claim's evidence: passages of all its queries, best score first, each once."""
    best: dict[str, Evidence] = {}
    for row in per_query:
        for e in row:
            if e.id not in best or e.score > best[e.id].score:
                best[e.id] = e
    ranked = sorted(best.values(), key=lambda e: (-e.score, e.id))
    return ranked[: config.evidence_k]


async def judge(
    ops: Operators, question: str, claim: str, evidence: Sequence[Evidence], config: Config
) -> ClaimVerdict:
    assert ops.llm is not None
    verdict = await ops.llm.structured(verdict_messages(question, claim, evidence), Verdict,
                                       max_tokens=config.verdict_tokens)
    return ClaimVerdict(claim=claim, supported=verdict.supported, reason=verdict.reason,
                        evidence_ids=[e.id for e in evidence])


def report(question: str, verdicts: Sequence[ClaimVerdict]) -> Report:
    supported = sum(v.supported for v in verdicts)
    return Report(question=question, claims=list(verdicts),
                  factuality=round(supported / len(verdicts), 4) if verdicts else 1.0)


def available_inputs() -> int:
    """How many inputs ``load_inputs`` can return: the shipped questions
    (``n`` larger than this gives only this many)."""
    from examples import data

    return len(data.questions())


def load_inputs(n: int | None = None) -> list[str]:
    """Questions from the shipped labelled set (the first ``n``)."""
    from examples import data

    return [q.question for q in data.questions()[:n]]


def _parse_one(record: Any) -> str:
    """One input from a file: a question string, or ``{"question": ...}``."""
    if isinstance(record, str) and record.strip():
        return record
    if isinstance(record, dict) and isinstance(record.get("question"), str):
        return record["question"]
    msg = 'each factcheck input is a question: a string or {"question": "..."}'
    raise ValueError(msg)


def parse_inputs(records: list[Any]) -> list[Any]:
    """Inputs from the records of a JSON or JSON-lines file."""
    return parse_each(records, _parse_one)


def render(question: str, report: Report) -> str:
    lines = [f"Q: {question}", f"   factuality {report.factuality:.2f} over "
             f"{len(report.claims)} claims"]
    for c in report.claims:
        mark = "✓" if c.supported else "✗"
        lines.append(f"   {mark} {c.claim}  [{', '.join(c.evidence_ids)}]")
    return "\n".join(lines)
