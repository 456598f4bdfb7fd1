"""Each app's asyncio reference computes exactly what its plain-Python reference computes.

With the scripted fake LLM and the hashing embedder every operator is deterministic, so the
outputs must be equal, not just similar, also when many inputs run at once on shared
operators and the fake LLM's delay lets their calls interleave.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest

from alto.testing import FakeLLM
from examples.common import Operators, fake_operators

pytestmark = pytest.mark.anyio

APPS = ["factcheck", "multihop", "summarize", "ingest"]
SIZES = {"factcheck": 12, "multihop": 8, "summarize": 4, "ingest": 300}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def ops() -> Operators:
    return await fake_operators()


def _modules(name: str) -> tuple[Any, Any]:
    return importlib.import_module(f"examples.{name}"), importlib.import_module(
        f"examples.{name}.asyncio_reference"
    )


@pytest.mark.parametrize("name", APPS)
async def test_asyncio_reference_equals_reference(name: str, ops: Operators) -> None:
    app, asyncio_ref = _modules(name)
    inputs = app.load_inputs(SIZES[name])
    expected = await app.reference(ops, inputs)
    assert [await asyncio_ref.asyncio_reference(ops, x) for x in inputs] == expected


@pytest.mark.parametrize("name", ["factcheck", "multihop", "summarize"])
async def test_asyncio_reference_equals_reference_with_interleaved_inputs(
    name: str, ops: Operators
) -> None:
    app, asyncio_ref = _modules(name)
    slow = Operators(FakeLLM(delay=0.002), ops.embedder, ops.retriever, ops.labels)
    inputs = app.load_inputs(6)
    got = await asyncio.gather(*(asyncio_ref.asyncio_reference(slow, x) for x in inputs))
    assert list(got) == await app.reference(ops, inputs)


async def test_asyncio_reference_takes_the_apps_config(ops: Operators) -> None:
    from examples import factcheck
    from examples.factcheck.asyncio_reference import asyncio_reference

    config = factcheck.Config(max_claims=1, max_queries=1)
    (question,) = factcheck.load_inputs(1)
    report = await asyncio_reference(ops, question, config)
    assert report == (await factcheck.reference(ops, [question], config))[0]
    assert len(report.claims) == 1


async def test_ingest_asyncio_reference_finds_the_references_duplicates_across_batches(
    ops: Operators,
) -> None:
    from examples import ingest
    from examples.ingest import Corpus, Doc
    from examples.ingest.asyncio_reference import asyncio_reference

    (corpus,) = ingest.load_inputs(150)  # several embedding batches of 64 chunks
    originals = corpus.documents
    copies = tuple(Doc(f"copy-of-{d.id}", d.text + " (mirror)") for d in originals[:5])
    mixed = Corpus("mixed", originals[:100] + copies + originals[100:])
    report = await asyncio_reference(ops, mixed)
    assert report == (await ingest.reference(ops, [mixed]))[0]
    assert report.chunks > 64
    for d in originals[:5]:
        assert {d.id, f"copy-of-{d.id}"} <= set(report.documents_with_duplicates)


async def test_ingest_asyncio_reference_of_an_empty_corpus(ops: Operators) -> None:
    from examples import ingest
    from examples.ingest import Corpus
    from examples.ingest.asyncio_reference import asyncio_reference

    empty = Corpus("empty", ())
    assert await asyncio_reference(ops, empty) == (await ingest.reference(ops, [empty]))[0]
