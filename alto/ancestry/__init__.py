"""Nested ancestry and the plan compiler. Pure: never imports the runtime."""

from alto.ancestry.ancestry import (
    Ancestry,
    child,
    depth,
    format_ancestry,
    hops,
    index,
    is_prefix,
    parent,
    prefix,
    root,
    root_of,
)

__all__ = [
    "Ancestry",
    "child",
    "depth",
    "format_ancestry",
    "hops",
    "index",
    "is_prefix",
    "parent",
    "prefix",
    "root",
    "root_of",
]
