"""Factcheck on asyncio, one coroutine per input, as concurrent as the data allows.

The benchmarks' *asyncio reference*: not an optimum, since nothing is scheduled across
inputs (a system that batches or orders work across inputs can beat it under load).

Each claim's chain (queries -> retrieve -> verdict) starts the moment the claim
has streamed out of the answer, while the LLM is still writing the next one;
the report waits only for the last verdict. It calls the same step functions as
the Alto flow and the reference, so its output equals theirs.

Retrieval is one call per claim: a claim's queries arrive together (one LLM
answer), so one embedding pass and one index search serve all of them. Batching
across claims would mean holding an early claim back for a later one, which
arrives only as the answer streams on; calling per query would queue the calls
on the one embedding model and pay its per-call cost once per query.
"""

from __future__ import annotations

import asyncio

from examples.common import Operators
from examples.factcheck import steps
from examples.factcheck.steps import ClaimVerdict, Config, Report


async def asyncio_reference(ops: Operators, question: str, config: Config | None = None) -> Report:
    """The factuality report of one question's answer, every claim checked concurrently."""
    config = config or Config()

    async def check(claim: str) -> ClaimVerdict:
        queries = await steps.queries(ops, question, claim, config)
        found = await steps.retrieve(ops, queries, config)
        evidence = steps.merge_evidence(found, config)
        return await steps.judge(ops, question, claim, evidence, config)

    checks: list[asyncio.Task[ClaimVerdict]] = []
    async with asyncio.TaskGroup() as group:
        async for claim in steps.claims(ops, question, config):
            checks.append(group.create_task(check(claim)))
    return steps.report(question, [c.result() for c in checks])
