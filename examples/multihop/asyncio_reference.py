"""Multihop on asyncio, one coroutine per input, as concurrent as the data allows.

The benchmarks' *asyncio reference*: not an optimum, since nothing is scheduled across
inputs (a system that batches or orders work across inputs can beat it under load).

The sub-questions come out of one LLM answer, all at once, so they are embedded
in one model call and searched in one index search (a batch costs about what
one text costs, and calls on the one embedding model would queue anyway). Then
every sub-question's chain (rerank -> answer) runs concurrently, and the final
answer is composed when the last sub-answer is in. It calls the same step
functions as the Alto flow and the reference, so its output equals theirs.
"""

from __future__ import annotations

import asyncio

from examples.common import Operators
from examples.multihop import steps
from examples.multihop.steps import Answer, Config, Passage, SubAnswer


async def asyncio_reference(ops: Operators, question: str, config: Config | None = None) -> Answer:
    """The composed answer to one question, its sub-questions answered concurrently."""
    config = config or Config()
    subs = await steps.decompose(ops, question, config)
    vectors = await steps.embed(ops, subs)
    found = steps.search(ops, vectors, config)

    async def solve(sub: str, candidates: list[Passage]) -> SubAnswer:
        passages = await steps.rerank(ops, sub, candidates, config)
        return await steps.answer(ops, question, sub, passages, config)

    async with asyncio.TaskGroup() as group:
        solving = [group.create_task(solve(sub, hits)) for sub, hits in zip(subs, found)]
    return await steps.compose(ops, question, [s.result() for s in solving], config)
