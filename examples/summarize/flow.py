"""Summarize as an Alto flow: two nested splits, batched embedding, two gathers.

    document -> sections (split) -> chunks (split) -> embed (batched)
             -> central (gather per section) -> section summary (join)
             -> document summary (gather per document)
"""

from __future__ import annotations

import alto
from alto import Gather, Split
from examples.common import Operators
from examples.summarize import steps
from examples.summarize.steps import (
    Config,
    DocumentIn,
    Embedded,
    SectionSummary,
    SectionText,
    Summary,
)


def build(ops: Operators, config: Config | None = None) -> alto.Flow:
    """The summarize flow over ``ops``."""
    config = config or Config()
    llm_calls = ops.llm_replicas

    @alto.stage
    async def sections(document: DocumentIn) -> Split[SectionText]:
        for section in steps.sections(document, config):
            yield section

    @alto.stage
    async def chunks(section: SectionText) -> Split[str]:
        for chunk in steps.chunks(section, config):
            yield chunk

    # Chunks of every section of every document in flight share one forward pass.
    @alto.stage(batch=64, batch_timeout=0.005)
    async def embed(chunk: list[str]) -> list[Embedded]:
        return await steps.embed(ops, chunk)

    @alto.stage
    async def central(embedded: Gather[Embedded]) -> list[str]:
        return steps.central(embedded, config)

    # A section is summarized as soon as its own chunks are in, while other sections
    # are still being embedded: as many at once as the LLM serves.
    @alto.stage(replicas=llm_calls)
    async def section_summary(
        picked: list[str], section: SectionText, document: DocumentIn
    ) -> SectionSummary:
        return await steps.summarize_section(ops, document, section, picked, config)

    @alto.stage(replicas=llm_calls)
    async def document_summary(parts: Gather[SectionSummary], document: DocumentIn) -> Summary:
        return await steps.summarize_document(ops, document, parts, config)

    @alto.flow(name="summarize")
    def summarize(document: DocumentIn):
        section = sections(document)
        picked = central(embed(chunks(section)))
        return document_summary(section_summary(picked, section, document), document)

    return summarize


async def reference(
    ops: Operators, inputs: list[DocumentIn], config: Config | None = None
) -> list[Summary]:
    """The same computation in plain Python, one step after another (no Alto)."""
    config = config or Config()
    results = []
    for document in inputs:
        parts = []
        for section in steps.sections(document, config):
            embedded = [e for text in steps.chunks(section, config)
                        for e in await steps.embed(ops, [text])]
            picked = steps.central(embedded, config)
            parts.append(await steps.summarize_section(ops, document, section, picked, config))
        results.append(await steps.summarize_document(ops, document, parts, config))
    return results
