"""multihop: decomposed retrieval-augmented answering of multi-hop questions."""

from examples.multihop.flow import build, reference
from examples.multihop.steps import (
    Answer,
    Config,
    Passage,
    SubAnswer,
    load_inputs,
    parse_inputs,
    render,
)

NAME = "multihop"
DESCRIPTION = "decomposed RAG: sub-questions -> embed -> retrieve -> rerank -> answer -> compose"
NEEDS = ("llm", "embedder", "retriever")

__all__ = [
    "Answer",
    "Config",
    "DESCRIPTION",
    "NAME",
    "NEEDS",
    "Passage",
    "SubAnswer",
    "build",
    "load_inputs",
    "parse_inputs",
    "reference",
    "render",
]
