"""summarize: hierarchical summarization of long documents."""

from examples.summarize.flow import build, reference
from examples.summarize.steps import (
    Config,
    DocumentIn,
    SectionSummary,
    SectionText,
    Summary,
    load_inputs,
    parse_inputs,
    render,
)

NAME = "summarize"
DESCRIPTION = "hierarchical summary: sections -> chunks -> embed -> central chunks -> summaries"
NEEDS = ("llm", "embedder")

__all__ = [
    "Config",
    "DESCRIPTION",
    "DocumentIn",
    "NAME",
    "NEEDS",
    "SectionSummary",
    "SectionText",
    "Summary",
    "build",
    "load_inputs",
    "parse_inputs",
    "reference",
    "render",
]
