"""When a batched stage runs a partial batch: one policy, on every backend.

A full batch (``batch`` calls) runs at once. A partial batch waits for more inputs,
at most ``batch_timeout`` seconds after it started waiting, and only while more can
come without a new root input arriving: the source is admitting an input (not waiting
for a free place under the run's ``concurrency``), or a stage upstream (or this stage's
own inbox) still holds or works on records. Otherwise nothing can come, so it runs now:
one input through a ``batch=32`` stage does not wait out the timeout, nor does a run
with ``concurrency=1``, whose next input waits for this one to end. A stage with
``batch_timeout=0`` never waits.
"""

from __future__ import annotations

from typing import Callable

from alto.runtime.metrics import now

POLL_S = 1e-3
"""How often a partial batch that waits checks whether more inputs can still come."""


class BatchPolicy:
    """The batch policy of one batched stage (see the module docstring).

    Args:
        size: the stage's ``batch``.
        timeout: the stage's ``batch_timeout`` (seconds).
        more_coming: whether records may still reach the stage without a new root input.
    """

    __slots__ = ("size", "timeout", "more_coming")

    def __init__(self, size: int, timeout: float, more_coming: Callable[[], bool]) -> None:
        self.size = size
        self.timeout = timeout
        self.more_coming = more_coming

    def due(self, waiting: int, since: float, ended: bool) -> bool:
        """Whether ``waiting`` assembled calls run now.

        The oldest of them has waited since ``since`` (``now()`` clock); ``ended``: no more
        inputs will come at all.
        """
        if waiting >= self.size or ended or self.timeout <= 0:
            return True
        if now() - since >= self.timeout:
            return True
        return not self.more_coming()

    def recheck_in(self, since: float) -> float:
        """Seconds until a partial batch waiting since ``since`` should be looked at again."""
        return max(0.0, min(since + self.timeout - now(), POLL_S))
