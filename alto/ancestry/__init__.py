"""Nested ancestry and the plan compiler. Pure: never imports the runtime."""

from alto.ancestry.ancestry import (
    Ancestry,
    Hop,
    child,
    child_index,
    format_ancestry,
    hops,
    index,
    is_prefix,
    key_length,
    level,
    parent,
    parent_key,
    prefix,
    prefix_key,
    root,
    root_of,
)

__all__ = [
    "Ancestry",
    "Hop",
    "child",
    "child_index",
    "format_ancestry",
    "hops",
    "index",
    "is_prefix",
    "key_length",
    "level",
    "parent",
    "parent_key",
    "prefix",
    "prefix_key",
    "root",
    "root_of",
]
