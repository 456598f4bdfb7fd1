"""summarize: hierarchical summarization of long documents."""

from examples.summarize.flow import build, reference
from examples.summarize.steps import (
    Config,
    DocumentIn,
    SectionSummary,
    SectionText,
    Summary,
    available_inputs,
    load_inputs,
    parse_inputs,
    render,
)

NAME = "summarize"
DESCRIPTION = "hierarchical summary: sections -> chunks -> embed -> central chunks -> summaries"
NEEDS = ("llm", "embedder")
# what `alto run --n` counts
INPUT_UNIT = "inputs"

__all__ = [
    "Config",
    "DESCRIPTION",
    "DocumentIn",
    "INPUT_UNIT",
    "NAME",
    "NEEDS",
    "SectionSummary",
    "SectionText",
    "Summary",
    "available_inputs",
    "build",
    "load_inputs",
    "parse_inputs",
    "reference",
    "render",
]
