"""Summarize on asyncio, one coroutine per input, as concurrent as the data allows.

The benchmarks' *asyncio reference*: not an optimum, since nothing is scheduled across
inputs (a system that batches or orders work across inputs can beat it under load).

Every section is chunked, embedded and summarized on its own task, so a
section's summary starts as soon as its own chunks are embedded. Embedding is
one call per section: the chunks of a section are all known up front, and one
call for the whole document would hold every section summary back until the
last chunk of the last section is embedded (calls on the one embedding model
run one at a time either way, so the total embedding time is the same). The
document summary waits for the last section. It calls the same step functions
as the Alto flow and the reference, so its output equals theirs.
"""

from __future__ import annotations

import asyncio

from examples.common import Operators
from examples.summarize import steps
from examples.summarize.steps import Config, DocumentIn, SectionSummary, SectionText, Summary


async def asyncio_reference(
    ops: Operators, document: DocumentIn, config: Config | None = None
) -> Summary:
    """The summary of one document, its sections summarized concurrently."""
    config = config or Config()

    async def section_summary(section: SectionText) -> SectionSummary:
        texts = steps.chunks(section, config)
        embedded = await steps.embed(ops, texts) if texts else []
        picked = steps.central(embedded, config)
        return await steps.summarize_section(ops, document, section, picked, config)

    async with asyncio.TaskGroup() as group:
        parts = [group.create_task(section_summary(s)) for s in steps.sections(document, config)]
    return await steps.summarize_document(ops, document, [p.result() for p in parts], config)
