"""Multihop as an Alto flow: one split, batched embedding and search across all questions.

    question -> subquestions (split) -> embed (batched) -> search (batched)
             -> rerank -> answer (join) -> compose (gather + broadcast)
"""

from __future__ import annotations

import numpy as np

import alto
from alto import Gather, Split
from examples.common import Operators
from examples.multihop import steps
from examples.multihop.steps import Answer, Config, Passage, SubAnswer


def build(ops: Operators, config: Config | None = None) -> alto.Flow:
    """The multihop flow over ``ops``."""
    config = config or Config()
    llm_calls = ops.llm_replicas

    @alto.stage(replicas=llm_calls)  # as many LLM calls at once as the LLM serves
    async def subquestions(question: str) -> Split[str]:
        for sub in await steps.decompose(ops, question, config):
            yield sub

    # Embedding is the model call that batches best: sub-questions of every question in
    # flight share one forward pass (a short wait lets a batch fill).
    @alto.stage(batch=32, batch_timeout=0.005)
    async def embed(sub: list[str]) -> list[np.ndarray]:
        return await steps.embed(ops, sub)

    @alto.stage(batch=32)  # one faiss search for whatever vectors have arrived
    async def search(vector: list[np.ndarray]) -> list[list[Passage]]:
        return steps.search(ops, vector, config)

    @alto.stage  # token embeddings run on the one embedding model: one call at a time
    async def rerank(sub: str, found: list[Passage]) -> list[Passage]:
        return await steps.rerank(ops, sub, found, config)

    @alto.stage(replicas=llm_calls)
    async def answer(sub: str, passages: list[Passage], question: str) -> SubAnswer:
        return await steps.answer(ops, question, sub, passages, config)

    @alto.stage(replicas=llm_calls)
    async def compose(subanswers: Gather[SubAnswer], question: str) -> Answer:
        return await steps.compose(ops, question, subanswers, config)

    @alto.flow(name="multihop")
    def multihop(question: str):
        sub = subquestions(question)
        passages = rerank(sub, search(embed(sub)))
        return compose(answer(sub, passages, question), question)

    return multihop


async def reference(
    ops: Operators, inputs: list[str], config: Config | None = None
) -> list[Answer]:
    """The same computation in plain Python, one step after another (no Alto)."""
    config = config or Config()
    results = []
    for question in inputs:
        subanswers = []
        for sub in await steps.decompose(ops, question, config):
            (vector,) = await steps.embed(ops, [sub])
            (found,) = steps.search(ops, [vector], config)
            passages = await steps.rerank(ops, sub, found, config)
            subanswers.append(await steps.answer(ops, question, sub, passages, config))
        results.append(await steps.compose(ops, question, subanswers, config))
    return results
