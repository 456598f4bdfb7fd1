"""ingest: streaming corpus indexing with near-duplicate detection."""

from examples.ingest.flow import build, reference
from examples.ingest.steps import (
    Config,
    Corpus,
    CorpusReport,
    Doc,
    DocResult,
    input_summary,
    load_inputs,
    parse_inputs,
    render,
)

NAME = "ingest"
DESCRIPTION = "streaming indexing: documents -> chunks -> embed -> near-duplicate check + add"
NEEDS = ("embedder",)

__all__ = [
    "Config",
    "Corpus",
    "CorpusReport",
    "DESCRIPTION",
    "Doc",
    "DocResult",
    "NAME",
    "NEEDS",
    "build",
    "input_summary",
    "load_inputs",
    "parse_inputs",
    "reference",
    "render",
]
