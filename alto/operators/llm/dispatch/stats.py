"""What a dispatcher reports: per replica and in all, now, and a timeline while recording."""

from __future__ import annotations

from dataclasses import dataclass, field

Sample = tuple[float, int, int, int]
"""A timeline sample: ``(time.monotonic(), replica, inflight, queued)``; replica ``-1`` is a
change of the queue alone (``inflight`` is then the total in flight)."""


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """One replica, now.

    Attributes:
        target: its label (base URL or instance name).
        inflight: calls on it now.
        limit: its limit on calls in flight now (learned when ``"auto"``; ``None``: none).
        calls: calls it was given.
        failures: calls that failed on it.
        prompt_tokens / cached_tokens / output_tokens: usage its calls reported.
        healthy: in rotation (``False``: out, being probed).
        queued: calls waiting for it (routed to it by lineage).
        limit_source: where ``limit`` came from (:data:`~alto.operators.llm.dispatch.LimitSource`):
            ``"given"``, ``"auto"``, ``"server"`` or ``"default"``.
    """

    target: str
    inflight: int
    limit: int | None
    calls: int
    failures: int
    prompt_tokens: int
    cached_tokens: int
    healthy: bool
    output_tokens: int = 0
    queued: int = 0
    limit_source: str = "given"


@dataclass(frozen=True, slots=True)
class DispatchStats:
    """A dispatcher, now (:meth:`~alto.operators.llm.dispatch.Dispatcher.stats`).

    Attributes:
        name: the dispatcher's name (its endpoint).
        order / route: the names of its policies.
        queued: calls waiting for admission now.
        max_queued: the most that ever waited at once.
        replicas: one :class:`ReplicaStats` per replica.
        over_limit: calls the liveness guard let through over the limit (``stall``).
    """

    name: str
    order: str
    route: str
    queued: int
    max_queued: int
    replicas: tuple[ReplicaStats, ...]
    _samples: list[Sample] = field(default_factory=list, repr=False, compare=False)
    over_limit: int = 0

    @property
    def cached_share(self) -> float:
        """Prompt tokens served from the replicas' prefix caches, over all prompt tokens."""
        prompt = sum(r.prompt_tokens for r in self.replicas)
        return sum(r.cached_tokens for r in self.replicas) / prompt if prompt else 0.0

    def timeline(self) -> list[Sample]:
        """The samples recorded while the dispatcher was recording (a copy)."""
        return list(self._samples)
