"""What moves between stages.

A *record* is either a fragment, the plain tuple ``(ancestry, value)``, or a
:class:`Close` that tells downstream gathers how many children a parent has.
A fragment whose value is :data:`DROPPED` is a tombstone: it carries no value
but still counts toward its parent's close, so gathers never hang.

Records travel in *chunks*: ``(port index, list of records)``, so one channel
operation moves many fragments.
"""

from __future__ import annotations

from typing import Any

from alto.ancestry.ancestry import Ancestry


class _Dropped:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DROPPED"

    def __reduce__(self) -> str:
        return "DROPPED"


DROPPED: Any = _Dropped()
"""The value of a tombstone fragment."""


class Close:
    """Parent ``parent`` has exactly ``count`` children (sent when its split ends).

    ``dropped`` marks the close of a parent that was itself a tombstone when it
    reached the split: it has no children, and its gather yields a tombstone
    rather than an empty list.
    """

    __slots__ = ("parent", "count", "dropped")

    def __init__(self, parent: Ancestry, count: int, dropped: bool = False) -> None:
        self.parent = parent
        self.count = count
        self.dropped = dropped

    def __repr__(self) -> str:
        tail = ", dropped" if self.dropped else ""
        return f"Close({self.parent!r}, {self.count}{tail})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Close)
            and other.parent == self.parent
            and other.count == self.count
            and other.dropped == self.dropped
        )

    def __hash__(self) -> int:
        return hash((Close, self.parent, self.count, self.dropped))

    def __reduce__(self) -> Any:
        return (Close, (self.parent, self.count, self.dropped))


CHUNK = 64
"""Most records a chunk carries."""

YIELD_EVERY = 256
"""Records a stage's reader handles before it lets other tasks run (every backend)."""

EAGER_S = 50e-6
"""Calls slower than this (moving average) send each output on at once, not in chunks."""

EAGER_REMOTE_S = 5e-3
"""The same threshold for a Ray actor's outputs, each message of which is a remote hop
(about a millisecond): only calls slower than this ship each output on its own."""
