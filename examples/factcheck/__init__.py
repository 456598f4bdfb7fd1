"""factcheck: FacTool-style verification of an LLM's answer, claim by claim."""

from examples.factcheck.flow import build, reference
from examples.factcheck.steps import (
    ClaimVerdict,
    Config,
    Evidence,
    Report,
    load_inputs,
    parse_inputs,
    render,
)

NAME = "factcheck"
DESCRIPTION = "verify an LLM answer: claims -> search queries -> evidence -> verdicts -> report"
NEEDS = ("llm", "embedder", "retriever")

__all__ = [
    "ClaimVerdict",
    "Config",
    "DESCRIPTION",
    "Evidence",
    "NAME",
    "NEEDS",
    "Report",
    "build",
    "load_inputs",
    "parse_inputs",
    "reference",
    "render",
]
