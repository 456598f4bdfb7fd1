"""multihop: decomposed retrieval-augmented answering of multi-hop questions."""

from examples.multihop.flow import build, reference
from examples.multihop.steps import (
    Answer,
    Config,
    Passage,
    SubAnswer,
    available_inputs,
    load_inputs,
    parse_inputs,
    render,
)

NAME = "multihop"
DESCRIPTION = "decomposed RAG: sub-questions -> embed -> retrieve -> rerank -> answer -> compose"
NEEDS = ("llm", "embedder", "retriever")
# what `alto run --n` counts
INPUT_UNIT = "inputs"

__all__ = [
    "Answer",
    "Config",
    "DESCRIPTION",
    "INPUT_UNIT",
    "NAME",
    "NEEDS",
    "Passage",
    "SubAnswer",
    "available_inputs",
    "build",
    "load_inputs",
    "parse_inputs",
    "reference",
    "render",
]
