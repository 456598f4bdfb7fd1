"""Each example app once, end to end, on the real embedded models (SmolLM2, MiniLM, faiss).

SmolLM2-135M is small, so the tests check that runs complete and outputs are
well formed for every input, not what the model says.
"""

from __future__ import annotations

import pytest

from examples import factcheck, ingest, multihop, summarize
from examples.common import Operators, open_operators

pytestmark = [pytest.mark.anyio, pytest.mark.models, pytest.mark.slow]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def ops():
    async with open_operators(["llm", "embedder", "retriever"], llm="local") as opened:
        yield opened


async def test_factcheck(ops: Operators) -> None:
    config = factcheck.Config(answer_tokens=48, max_claims=2, max_queries=1)
    inputs = factcheck.load_inputs(2)
    reports = await factcheck.build(ops, config).run(inputs)
    assert [r.question for r in reports] == inputs
    for r in reports:
        assert 0 <= len(r.claims) <= 2 and 0.0 <= r.factuality <= 1.0
        for c in r.claims:
            assert c.claim.strip() and c.evidence_ids
            assert all(pid in ops.retriever for pid in c.evidence_ids)


async def test_multihop(ops: Operators) -> None:
    config = multihop.Config(max_subquestions=2, answer_tokens=32, compose_tokens=48)
    inputs = multihop.load_inputs(2)
    answers = await multihop.build(ops, config).run(inputs)
    for question, a in zip(inputs, answers):
        assert a.question == question and a.answer
        assert 1 <= len(a.subanswers) <= 2
        assert set(a.citations) == {p for s in a.subanswers for p in s.passage_ids}


async def test_summarize(ops: Operators) -> None:
    config = summarize.Config(max_sections=2, section_tokens=32, document_tokens=48)
    docs = summarize.load_inputs(1)
    (summary,) = await summarize.build(ops, config).run(docs)
    assert summary.title == docs[0].title and summary.summary
    assert 1 <= len(summary.sections) <= 2
    assert all(s.summary for s in summary.sections)


async def test_ingest(ops: Operators) -> None:
    inputs = ingest.load_inputs(120)
    (report,) = await ingest.build(ops).run(inputs)
    assert report.documents == 120
    assert report.chunks >= 120
    assert all(len(g) >= 2 for g in report.duplicate_groups)
