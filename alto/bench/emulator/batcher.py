"""One emulated replica's continuous batching on a modeled clock (timing emulation).

The batcher never sleeps and never reads a wall clock: :meth:`ContinuousBatcher.step` plans
one step the way vLLM's V1 scheduler does and advances :attr:`ContinuousBatcher.now` by the
step's modeled duration (:meth:`~alto.bench.emulator.config.EmulatorConfig.step_s`). The
server's driver (:mod:`alto.bench.emulator.replica`) paces steps against the wall clock;
tests drive the batcher directly, so no test depends on the machine's speed.

One step (vLLM V1 ``Scheduler.schedule``):

1. Running sequences first, in admission order: each gets what it still needs (one token
   when decoding, the rest of its prompt when prefilling), within the step's token budget
   (``max_num_batched_tokens``; a prompt longer than what is left is prefilled in chunks,
   and that chunk slows every decode of the step). If the KV cache has no block for a
   sequence, the running sequence with the largest ``(priority, arrival)`` is preempted:
   its blocks are freed and it waits again, to recompute its tokens later (prefix-cache
   hits included).
2. Then, if nothing was preempted, waiting requests in ``(priority, arrival)`` order while
   there are fewer than ``max_num_seqs`` running, budget left, and KV blocks: each first
   takes its prompt's cached blocks (prefix caching), then new blocks for what it computes.

A sequence that has computed all its known tokens samples one: the first ends its prompt
(time to first token), each later one is a decode step. It finishes after its answer's last
token, and its blocks are freed (full ones stay cached).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from alto.bench.emulator.config import BLOCK_TOKENS, EmulatorConfig
from alto.bench.emulator.prefix_cache import BlockPool, block_hashes
from alto.errors import UsageError


def blocks_for(tokens: int) -> int:
    """KV blocks that hold ``tokens`` tokens."""
    return -(-tokens // BLOCK_TOKENS)


@dataclass(eq=False)
class Sequence:
    """One request inside the batcher: its tokens, its progress, and its modeled times.

    ``prompt`` and ``output`` are token ids (the output is known in advance: the emulator
    decides its answer before timing it). Times are on the batcher's modeled clock.
    """

    prompt: list[int]
    output: list[int]
    priority: int = 0
    order: int = 0
    entered_at: float = 0.0
    computed: int = 0
    emitted: int = 0
    blocks: list[int] = field(default_factory=list)
    cached_tokens: int = 0
    admitted_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    preemptions: int = 0
    aborted: bool = False
    hashes: list[int] = field(default_factory=list)
    _cached_upto: int = 0

    @property
    def known(self) -> int:
        """Tokens whose KV the sequence needs now: its prompt and what it has emitted."""
        return len(self.prompt) + self.emitted

    @property
    def done(self) -> bool:
        """Whether the sequence has finished or was aborted."""
        return self.finished_at is not None or self.aborted


@dataclass(frozen=True, slots=True)
class Step:
    """What one step did: its modeled span, its batch, and who got a token."""

    start: float
    end: float
    sequences: int
    prefill_tokens: int
    emitted: tuple[Sequence, ...]
    finished: tuple[Sequence, ...]
    preempted: tuple[Sequence, ...]


class ContinuousBatcher:
    """Continuous batching with chunked prefill, a KV cache and prefix caching.

    Example:
        >>> batcher = ContinuousBatcher(EmulatorConfig())
        >>> seq = batcher.add(list(range(40)), list(range(3)))
        >>> while batcher.busy:
        ...     _ = batcher.step()
        >>> seq.emitted, round(seq.first_token_at * 1000, 2)
        (3, 8.98)
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.pool = BlockPool(config.kv_cache_tokens // BLOCK_TOKENS, caching=config.prefix_caching)
        self.now = 0.0
        self.running: list[Sequence] = []
        self._waiting: list[tuple[int, int, Sequence]] = []
        self._order = itertools.count()
        self.steps = 0
        self.preemptions = 0

    @property
    def waiting(self) -> int:
        """Requests waiting to enter the batch (aborted ones not counted)."""
        return sum(1 for _, _, s in self._waiting if not s.aborted)

    @property
    def busy(self) -> bool:
        """Whether a step has work: a running or waiting sequence."""
        return bool(self.running) or any(not s.aborted for _, _, s in self._waiting)

    def advance(self, t: float) -> None:
        """Move an idle batcher's clock forward to ``t`` (a busy batcher keeps its own)."""
        if not self.busy:
            self.now = max(self.now, t)

    def add(self, prompt: Seq[int], output: Seq[int], priority: int = 0) -> Sequence:
        """Queue a request at the current modeled time.

        Raises:
            UsageError: its prompt and answer cannot fit in the KV cache even alone.
        """
        total = len(prompt) + len(output)
        if blocks_for(total) > self.pool.num_blocks:
            msg = (
                f"a request of {total} tokens does not fit the emulated KV cache of "
                f"{self.pool.num_blocks * BLOCK_TOKENS} tokens (kv_cache_tokens)"
            )
            raise UsageError(msg)
        seq = Sequence(list(prompt), list(output), priority=priority, order=next(self._order))
        seq.entered_at = self.now
        seq.hashes = block_hashes(seq.prompt + seq.output) if self.config.prefix_caching else []
        heapq.heappush(self._waiting, (priority, seq.order, seq))
        return seq

    def abort(self, seq: Sequence) -> None:
        """Drop a request (its client went away): its blocks are freed at once."""
        if seq.done:
            return
        seq.aborted = True
        if seq in self.running:
            self.running.remove(seq)
            self._release(seq)

    def step(self) -> Step | None:
        """Plan and run one step from :attr:`now`; None when there is nothing to do."""
        config = self.config
        budget = config.max_num_batched_tokens
        scheduled: dict[Sequence, int] = {}
        preempted: list[Sequence] = []
        for seq in list(self.running):
            if seq not in self.running or budget == 0:
                continue
            n = min(seq.known - seq.computed, budget)
            while not self._reserve(seq, seq.computed + n):
                victim = max(self.running, key=lambda s: (s.priority, s.order))
                budget += scheduled.pop(victim, 0)
                self._preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
            if seq in self.running:
                scheduled[seq] = n
                budget -= n
        while not preempted and budget > 0 and len(self.running) < config.max_num_seqs:
            head = self._next_waiting()
            if head is None:
                break
            seq = head
            hits = self.pool.lookup(seq.hashes, seq.known)
            self.pool.touch(hits)
            computed = len(hits) * BLOCK_TOKENS
            n = min(seq.known - computed, budget)
            fresh = self.pool.allocate(blocks_for(computed + n) - len(hits))
            if fresh is None:
                self.pool.free(hits)
                break
            heapq.heappop(self._waiting)
            seq.blocks = hits + fresh
            seq.computed = seq._cached_upto = computed
            if seq.admitted_at is None:
                seq.admitted_at = self.now
                seq.cached_tokens = computed
            self.running.append(seq)
            scheduled[seq] = n
            budget -= n
        if not scheduled:
            return None
        prefill = sum(n for s, n in scheduled.items() if not self._decoding(s))
        start = self.now
        self.now = end = start + config.step_s(len(scheduled), prefill)
        self.steps += 1
        emitted, finished = [], []
        for seq, n in scheduled.items():
            seq.computed += n
            self._cache_full_blocks(seq)
            if seq.computed < seq.known:
                continue  # a chunk of a longer prompt
            seq.emitted += 1
            emitted.append(seq)
            if seq.first_token_at is None:
                seq.first_token_at = end
            if seq.emitted >= len(seq.output):
                seq.finished_at = end
                self.running.remove(seq)
                self._release(seq)
                finished.append(seq)
        return Step(
            start, end, len(scheduled), prefill, tuple(emitted), tuple(finished), tuple(preempted)
        )

    # -- helpers --------------------------------------------------------------------------------

    def _decoding(self, seq: Sequence) -> bool:
        return seq.emitted > 0 and seq.computed == seq.known - 1

    def _next_waiting(self) -> Sequence | None:
        while self._waiting and self._waiting[0][2].aborted:
            heapq.heappop(self._waiting)
        return self._waiting[0][2] if self._waiting else None

    def _reserve(self, seq: Sequence, tokens: int) -> bool:
        need = blocks_for(tokens) - len(seq.blocks)
        if need <= 0:
            return True
        fresh = self.pool.allocate(need)
        if fresh is None:
            return False
        seq.blocks.extend(fresh)
        return True

    def _cache_full_blocks(self, seq: Sequence) -> None:
        full = min(seq.computed // BLOCK_TOKENS, len(seq.hashes))
        for b in range(seq._cached_upto // BLOCK_TOKENS, full):
            self.pool.cache(seq.blocks[b], seq.hashes[b])
        seq._cached_upto = max(seq._cached_upto, full * BLOCK_TOKENS)

    def _release(self, seq: Sequence) -> None:
        self.pool.free(seq.blocks)
        seq.blocks = []

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._release(seq)
        seq.computed = seq._cached_upto = 0
        seq.preemptions += 1
        self.preemptions += 1
        heapq.heappush(self._waiting, (seq.priority, seq.order, seq))
