"""ingest: streaming corpus indexing with near-duplicate detection."""

from examples.ingest.flow import build, reference
from examples.ingest.steps import (
    Config,
    Corpus,
    CorpusReport,
    Doc,
    DocResult,
    available_inputs,
    input_summary,
    load_inputs,
    parse_inputs,
    render,
)

NAME = "ingest"
DESCRIPTION = "streaming indexing: documents -> chunks -> embed -> near-duplicate check + add"
NEEDS = ("embedder",)
# what `alto run --n` counts: documents of the one corpus it ingests
INPUT_UNIT = "documents"

__all__ = [
    "Config",
    "Corpus",
    "CorpusReport",
    "DESCRIPTION",
    "Doc",
    "DocResult",
    "INPUT_UNIT",
    "NAME",
    "NEEDS",
    "available_inputs",
    "build",
    "input_summary",
    "load_inputs",
    "parse_inputs",
    "reference",
    "render",
]
