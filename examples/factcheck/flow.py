"""Factcheck as an Alto flow: two nested splits, a batched retriever, two gathers.

    question -> claims (split, streamed) -> queries (split) -> retrieve (batched)
             -> evidence (gather per claim) -> verdict (join + broadcast)
             -> report (gather per answer)
"""

from __future__ import annotations

import alto
from alto import Gather, Split
from examples.common import Operators
from examples.factcheck import steps
from examples.factcheck.steps import ClaimVerdict, Config, Evidence, Report


def build(ops: Operators, config: Config | None = None) -> alto.Flow:
    """The factcheck flow over ``ops``."""
    config = config or Config()
    llm_calls = ops.llm_replicas

    # Each LLM stage gets as many replicas as the LLM serves calls at once (at least a few,
    # so a model serving one call at a time can pick the next; see Operators.llm_replicas):
    # fewer would leave it idle while fragments wait.
    @alto.stage(replicas=llm_calls)
    async def claims(question: str) -> Split[str]:
        async for claim in steps.claims(ops, question, config):
            yield claim  # downstream starts on this claim while the LLM writes the next

    @alto.stage(replicas=llm_calls)
    async def queries(claim: str, question: str) -> Split[str]:
        for query in await steps.queries(ops, question, claim, config):
            yield query

    # One embedding call and one index search serve the queries of every claim and every
    # question in flight; the short timeout lets a batch fill while the LLM stages work.
    @alto.stage(batch=32, batch_timeout=0.005)
    async def retrieve(query: list[str]) -> list[list[Evidence]]:
        return await steps.retrieve(ops, query, config)

    @alto.stage
    async def evidence(found: Gather[list[Evidence]]) -> list[Evidence]:
        return steps.merge_evidence(found, config)

    @alto.stage(replicas=llm_calls)
    async def verdict(claim: str, evidence: list[Evidence], question: str) -> ClaimVerdict:
        return await steps.judge(ops, question, claim, evidence, config)

    @alto.stage
    async def report(verdicts: Gather[ClaimVerdict], question: str) -> Report:
        return steps.report(question, verdicts)

    @alto.flow(name="factcheck")
    def factcheck(question: str):
        claim = claims(question)
        found = evidence(retrieve(queries(claim, question)))
        return report(verdict(claim, found, question), question)

    return factcheck


async def reference(
    ops: Operators, inputs: list[str], config: Config | None = None
) -> list[Report]:
    """The same computation in plain Python, one step after another (no Alto)."""
    config = config or Config()
    reports = []
    for question in inputs:
        verdicts = []
        async for claim in steps.claims(ops, question, config):
            queries = await steps.queries(ops, question, claim, config)
            found = await steps.retrieve(ops, queries, config)
            evidence = steps.merge_evidence(found, config)
            verdicts.append(await steps.judge(ops, question, claim, evidence, config))
        reports.append(steps.report(question, verdicts))
    return reports
