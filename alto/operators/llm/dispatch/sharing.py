"""Where the copies of one client share one dispatcher: the seam a distributed backend fills.

A client pickled to another process (a Ray actor) is rebuilt there from its settings, with a
dispatcher of its own; its limit and order would then hold per process. A backend that runs
stage functions in several processes registers a :class:`Sharing` (the Ray backend's is
:mod:`alto.runtime.ray.shared_dispatcher`), which the client asks when it is pickled
(:func:`shipped`) and when its stats are read (:func:`shared_stats`). With none registered,
every copy keeps a dispatcher of its own, as in any process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from alto.operators.llm.dispatch.stats import DispatchStats

Adopt = Callable[[Any], None]
"""``adopt(copy)``: run where a pickled client is rebuilt, to give it the shared dispatcher;
pickled by reference, so a function at module level."""


class Sharing(Protocol):
    """How the copies of a client in other processes share its dispatcher."""

    def shipped(self, client: Any) -> Adopt | None:
        """``client`` is being pickled: prepare what its copies share.

        For example an actor that holds the dispatcher. Return what to run on each copy
        where it is rebuilt; ``None`` where nothing is shared (e.g. no cluster is
        connected).
        """
        ...

    def stats(self, client: Any) -> DispatchStats | None:
        """The shared dispatcher's state, where copies of ``client`` share one; else ``None``."""
        ...


_registered: list[Sharing] = []


def share_with(sharing: Sharing) -> None:
    """Register ``sharing`` (once; later registrations of an equal one are ignored)."""
    if sharing not in _registered:
        _registered.append(sharing)


def shipped(client: Any) -> Adopt | None:
    """What to run on a copy of ``client`` where it is rebuilt, or ``None``.

    The first registered sharing that shares it says.
    """
    for sharing in _registered:
        adopt = sharing.shipped(client)
        if adopt is not None:
            return adopt
    return None


def shared_stats(client: Any) -> DispatchStats | None:
    """The state of the dispatcher the copies of ``client`` share, or ``None``.

    ``None`` unless a sharing holds one.
    """
    for sharing in _registered:
        stats = sharing.stats(client)
        if stats is not None:
            return stats
    return None
