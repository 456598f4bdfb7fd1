"""Each example app: the Alto flow's output equals its plain-Python reference.

With the scripted fake LLM and the hashing embedder (``alto.testing``) every
operator is deterministic, so the outputs must be equal, not just similar.
"""

from __future__ import annotations

import importlib

import pytest

import alto
from alto.compiler.plan import Plan, PortMode
from examples.common import Operators, fake_operators

pytestmark = pytest.mark.anyio

APPS = ["factcheck", "multihop", "summarize", "ingest"]
SIZES = {"factcheck": 12, "multihop": 8, "summarize": 4, "ingest": 400}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def ops() -> Operators:
    return await fake_operators()


@pytest.mark.parametrize("name", APPS)
async def test_alto_equals_reference(name: str, ops: Operators) -> None:
    app = importlib.import_module(f"examples.{name}")
    inputs = app.load_inputs(SIZES[name])
    stats = alto.RunStats()
    out = await app.build(ops).run(inputs, stats=stats)
    expected = await app.reference(ops, inputs)
    assert out == expected
    assert len(out) == len(inputs)
    # every stage of the plan did work
    assert all(s.calls > 0 for s in stats.stages.values()), stats.table()
    assert_counts_agree(app.build(ops).plan, stats, len(inputs))


def assert_counts_agree(plan: Plan, stats: alto.RunStats, inputs: int) -> None:
    """A stage's ``in`` equals the ``out`` of the stage feeding its main input."""
    for node in plan.nodes:
        main = next(p for p in node.ports if p.mode is not PortMode.BROADCAST)
        fed = (inputs if main.source.startswith("input.")
               else stats.stages[main.source].fragments_out)
        assert stats.stages[node.name].fragments_in == fed, (node.name, stats.table())


@pytest.mark.parametrize("name", ["factcheck", "multihop", "summarize"])
async def test_concurrency_limit_does_not_change_outputs(name: str, ops: Operators) -> None:
    app = importlib.import_module(f"examples.{name}")
    inputs = app.load_inputs(5)
    assert await app.build(ops).run(inputs, concurrency=2) == await app.reference(ops, inputs)


async def test_factcheck_report_shape(ops: Operators) -> None:
    from examples import factcheck

    (report,) = await factcheck.build(ops).run(factcheck.load_inputs(1))
    assert 1 <= len(report.claims) <= factcheck.Config().max_claims
    for claim in report.claims:
        assert 1 <= len(claim.evidence_ids) <= factcheck.Config().evidence_k
    assert report.factuality == pytest.approx(
        sum(c.supported for c in report.claims) / len(report.claims)
    )


async def test_ingest_finds_injected_near_duplicates(ops: Operators) -> None:
    from examples import ingest
    from examples.ingest import Corpus, Doc

    (corpus,) = ingest.load_inputs(60)
    originals = corpus.documents
    copies = tuple(Doc(f"copy-of-{d.id}", d.text + " (mirror)") for d in originals[:5])
    mixed = Corpus("mixed", originals[:30] + copies + originals[30:])
    (report,) = await ingest.build(ops).run([mixed])
    assert report == (await ingest.reference(ops, [mixed]))[0]
    flagged = set(report.documents_with_duplicates)
    for d in originals[:5]:
        assert d.id in flagged and f"copy-of-{d.id}" in flagged
    assert report.documents == 65


async def test_summarize_central_chunks_come_from_their_section(ops: Operators) -> None:
    from examples import summarize

    (doc,) = summarize.load_inputs(1)
    (summary,) = await summarize.build(ops).run([doc])
    by_title = {s.title: s.text for s in doc.sections}
    for part in summary.sections:
        assert 1 <= len(part.chunks_used) <= summarize.Config().central
        for chunk in part.chunks_used:
            assert chunk.split()[0] in by_title[part.title]


async def test_ingest_corpora_get_their_own_index(ops: Operators) -> None:
    from examples import ingest
    from examples.ingest import Corpus

    (corpus,) = ingest.load_inputs(40)
    twin = Corpus("twin", corpus.documents)  # the same documents again, as another corpus
    flow = ingest.build(ops)
    first = await flow.run([corpus])
    again = await flow.run([corpus])  # the same flow, a second job
    both = await flow.run([corpus, twin])  # two jobs at once
    expected = await ingest.reference(ops, [corpus])
    assert first == again == expected
    assert both[0] == expected[0]
    assert both[1].duplicate_groups == expected[0].duplicate_groups
    assert flow.deduper.indexes == {}  # every job's index released after its report
