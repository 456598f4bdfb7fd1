"""The learned limit on calls in flight at one replica: TCP Vegas on the time per output token.

Used by :class:`~alto.operators.llm.dispatch.Dispatcher` when ``max_inflight="auto"``.
"""

from __future__ import annotations

import math

from alto.errors import UsageError

MAX_LIMIT = 64
START_LIMIT = 4


class VegasLimit:
    """An adaptive limit on calls in flight at one replica: TCP Vegas.

    As Netflix's concurrency-limits ``VegasLimit`` applies it to request concurrency.

    Why Vegas and not ``Gradient2Limit``: Vegas compares the latency now with the latency
    without load, which is what a replica's throughput knee is (below it an output token takes
    the same time at any number of calls in flight; past it, time per token grows with them and
    throughput stays flat), and its fixed point is a small, bounded queue above the knee.
    Gradient2 compares a short with a long moving average of latency, so in a steady state
    (both equal) it keeps adding ``sqrt(limit)`` and drifts up to its bound.

    The latency here is the time per output token of the calls that ended in a window
    (the sum of their durations over the sum of their output tokens; the calls themselves
    when a server reports no usage), so answers of different lengths compare. A window closes
    after ``max(16, 2 * limit)`` calls (Netflix's ``WindowedLimit`` does the same against
    noise). With ``r0`` the least window latency seen (the no-load latency) and ``r`` the
    window's, Vegas estimates the calls queued inside the replica as
    ``queue = limit * (1 - r0 / r)`` (the calls in flight beyond those that run at the
    no-load rate), then:

    * a failed call in the window (connection refused, 5xx): ``limit - max(1, limit / 10)``;
    * the replica was not kept busy (peak in flight under half the limit): no change;
    * ``queue <= alpha / 2``: ``limit + beta`` (Vegas' slow start);
    * ``queue < alpha``: ``limit + 1``; ``queue > beta``: ``limit - max(1, (queue - beta) / 2)``
      (Vegas steps by one; a window here spans many calls, so a limit far past the knee is
      brought halfway back to the band at once); else no change;

    kept within ``[1, max_limit]``. Netflix's ``alpha = 3 log10(limit)``,
    ``beta = 6 log10(limit)`` are the constants 3 and 6 below 100 calls, which on a replica
    whose knee is 4 would leave 3 to 6 calls waiting inside it; a call waiting there costs
    far more than a packet in a router buffer, so here ``alpha = max(1, limit / 10)`` and
    ``beta = max(2, limit / 4)``: the limit settles between ``knee / 0.9`` and
    ``knee / 0.75`` (``knee + 1`` to ``knee + 2`` for small knees).

    The no-load latency must follow lasting changes of workload (longer prompts), or the
    limit would shrink for ever. Netflix's Vegas resets ``r0`` to the latency under load now
    and then, which ratchets the limit up past the knee each time; here, as BBR's ProbeRTT
    does, every ``probe`` windows one window runs at half the limit (below the knee whenever
    the limit is within twice of it), counting only the calls that started with at most that
    many in flight, and its latency becomes ``r0``: about 1/(2 probe) of the throughput,
    1.7% at the default 30.

    References: L. Brakmo and L. Peterson, "TCP Vegas: End to End Congestion Avoidance on a
    Global Internet", IEEE JSAC 13(8), 1995; Netflix concurrency-limits,
    ``com.netflix.concurrency.limits.limit.VegasLimit`` and ``WindowedLimit``; N. Cardwell
    et al., "BBR: Congestion-Based Congestion Control", ACM Queue 14(5), 2016 (ProbeRTT).

    Args:
        start: the first limit.
        max_limit: the limit never exceeds it.
        probe: windows between resets of the no-load latency.
    """

    __slots__ = (
        "limit", "max_limit", "probe", "_r0", "_time", "_tokens", "_calls", "_drops",
        "_peak", "_windows", "_saved",
    )

    def __init__(self, start: int = START_LIMIT, max_limit: int = MAX_LIMIT, probe: int = 30):
        if not 1 <= start <= max_limit:
            msg = f"start must be within 1..max_limit ({max_limit}), got {start}"
            raise UsageError(msg)
        self.limit = start
        self.max_limit = max_limit
        self.probe = probe
        self._r0 = math.inf
        self._time = 0.0
        self._tokens = 0
        self._calls = 0
        self._drops = 0
        self._peak = 0
        self._windows = 0
        self._saved = 0  # the limit to go back to after a probe window (0: not probing)

    @property
    def settled(self) -> int:
        """The limit outside probe windows (during one, :attr:`limit` is half of it)."""
        return self._saved or self.limit

    def sample(self, seconds: float, tokens: int, inflight: int) -> bool:
        """Count one finished call.

        Its duration, output tokens, and the calls in flight at its replica when it started.
        Returns whether the limit changed.
        """
        if self._saved and inflight > self.limit:
            return False  # a probe window counts only the calls it let start
        self._time += seconds
        self._tokens += tokens
        self._calls += 1
        if inflight > self._peak:
            self._peak = inflight
        return self._calls >= max(16, 2 * self.limit) and self._close()

    def drop(self) -> bool:
        """Count one failed call (connection refused, 5xx). Returns whether the limit changed."""
        self._drops += 1
        self._calls += 1
        return self._calls >= max(16, 2 * self.limit) and self._close()

    def _close(self) -> bool:
        limit = self.limit
        done = self._calls - self._drops
        work = self._tokens if self._tokens >= done else done  # no usage: count calls
        rtt = self._time / work if work else 0.0
        drops, peak = self._drops, self._peak
        self._time, self._tokens, self._calls, self._drops, self._peak = 0.0, 0, 0, 0, 0
        self._windows += 1
        if self._saved:  # the probe window ends: its latency is the no-load latency now
            if rtt > 0.0 and not drops:
                self._r0 = rtt
            self.limit, self._saved = self._saved, 0
            return self.limit != limit
        if rtt > 0.0 and rtt < self._r0:
            self._r0 = rtt
        if self._windows % self.probe == 0 and limit > 1 and not drops:
            self._saved = limit
            self.limit = max(1, limit // 2)
            return True
        new = float(limit)
        if drops:
            new = limit - max(1.0, limit / 10)
        elif rtt <= 0.0 or 2 * peak < limit:
            return False  # nothing measured, or the replica was not kept busy
        else:
            queue = limit * (1.0 - self._r0 / rtt)
            alpha = max(1.0, limit / 10)
            beta = max(2.0, limit / 4)
            if queue <= alpha / 2:
                new = limit + beta
            elif queue < alpha:
                new = limit + 1
            elif queue > beta:
                new = limit - max(1.0, (queue - beta) / 2)
        self.limit = max(1, min(self.max_limit, int(new)))
        return self.limit != limit
