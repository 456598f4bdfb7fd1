"""factcheck: FacTool-style verification of an LLM's answer, claim by claim."""

from examples.factcheck.flow import build, reference
from examples.factcheck.steps import (
    ClaimVerdict,
    Config,
    Evidence,
    Report,
    available_inputs,
    load_inputs,
    parse_inputs,
    render,
)

NAME = "factcheck"
DESCRIPTION = "verify an LLM answer: claims -> search queries -> evidence -> verdicts -> report"
NEEDS = ("llm", "embedder", "retriever")
# what `alto run --n` counts
INPUT_UNIT = "inputs"

__all__ = [
    "ClaimVerdict",
    "Config",
    "DESCRIPTION",
    "Evidence",
    "INPUT_UNIT",
    "NAME",
    "NEEDS",
    "Report",
    "available_inputs",
    "build",
    "load_inputs",
    "parse_inputs",
    "reference",
    "render",
]
