"""The serving-timing emulator's settings: its timing model, capacity, text and faults.

Timing emulation, not a model. Every modeled constant below cites where it comes from; the
ones that are estimates say so.

The source of the timing defaults: vLLM 0.21.0 serving Llama-3.1-8B-Instruct (fp16) on one
H100-80GB-HBM3, the InferenceBench "concurrency sweep" recipe
(yobitelcomm.github.io/bench/recipes/concurrency-sweep, workload llm.inference.chatbot-short,
2026-05-16)::

    concurrency  throughput tok/s  TTFT p50 ms  TPOT p50 ms
    1              122.2            13.98         6.48
    4              580.3            22.75         6.59
    16           1,384.2            41.69        10.94
    64           1,312.3            86.92        46.91

Throughput peaks near 16 sequences: past that each extra sequence costs almost as much step
time as it adds tokens. The step-time curve below is fitted to all four TPOT rows.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BLOCK_TOKENS = 16
"""Tokens per KV-cache block: vLLM's default ``--block-size`` on CUDA (16), which is also the
granularity of its automatic prefix caching (only full blocks are cached)."""


class FaultConfig(BaseModel):
    """Faults the emulator injects, for fault-tolerance tests. All off by default.

    Rates are per request, drawn from a generator seeded with ``seed`` in arrival order, so a
    run with the same requests in the same order sees the same faults.
    """

    model_config = ConfigDict(extra="forbid")

    fail_first: int = Field(
        default=0, ge=0, description="the first N requests fail with fail_status"
    )
    fail_status: int = Field(default=503, ge=400, le=599)
    rate_limit_rate: float = Field(
        default=0.0, ge=0, le=1, description="fraction answered HTTP 429"
    )
    retry_after_s: float = Field(default=0.05, ge=0, description="Retry-After sent with 429")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="fraction answered HTTP 500")
    stall_rate: float = Field(default=0.0, ge=0, le=1, description="fraction that stall stall_s")
    stall_s: float = Field(default=30.0, ge=0)
    stall_after_tokens: int = Field(
        default=0, ge=0, description="0: stall before answering; k: after k streamed tokens"
    )
    drop_rate: float = Field(default=0.0, ge=0, le=1, description="fraction whose connection drops")
    malformed_rate: float = Field(
        default=0.0, ge=0, le=1, description="fraction sending a malformed SSE event (or JSON body)"
    )
    break_after_tokens: int = Field(
        default=2, ge=0, description="tokens sent before a drop/malformed"
    )
    seed: int = 0


class EmulatorConfig(BaseModel):
    """The timing model, capacity and text of one emulated replica (timing emulation).

    Each replica batches continuously, as vLLM's scheduler does: every step runs
    the running sequences (one decode token each, or a chunk of a prompt) within a budget of
    ``max_num_batched_tokens`` tokens, admits waiting requests (lowest ``priority`` first,
    then by arrival) while there are fewer than ``max_num_seqs`` and KV blocks to hold them,
    and preempts the last-admitted, lowest-priority sequence when the KV cache is full. A step
    with ``n`` sequences and ``p`` uncached prompt tokens takes::

        step(n, p) = tpot_s * (1 + seq_slowdown * (n - 1)
                                 + batch_slowdown * max(0, n - batch_knee))
                     + p / prefill_tokens_per_s

    A request's first token comes at the end of the step that finishes its prompt, plus a
    fixed ``ttft_s - tpot_s`` (the server's own work on the request: HTTP, tokenizing,
    detokenizing), so the unloaded time to first token is ``ttft_s + prompt / prefill rate``.
    Every modeled time is multiplied by ``time_scale``.

    Defaults (see the module docstring for the source table):

    * ``tpot_s`` 6.48 ms: TPOT p50 at 1 sequence.
    * ``seq_slowdown`` 0.00566: TPOT 6.48 -> 6.59 ms from 1 to 4 sequences (0.11 ms / 3 /
      6.48 ms); the memory-bound regime, where a step mostly reads the weights once.
    * ``batch_knee`` 10.5 and ``batch_slowdown`` 0.11: the saturation term, fitted to TPOT
      10.94 ms at 16 and 46.91 ms at 64 (each sequence past the knee adds 0.71 ms, a ceiling
      of ~1,330 tokens/s, as the source's throughput flattens at 1,384 then 1,312).
    * ``ttft_s`` 14.0 ms: TTFT p50 at 1 sequence (13.98 ms).
    * ``prefill_tokens_per_s`` 16,000: an estimate, not a measurement (8B parameters = 16
      GFLOP per prompt token; ~25% of the H100's dense BF16 peak gives ~16k tokens/s).
    * ``max_num_seqs`` 1024 and ``max_num_batched_tokens`` 8192: vLLM's defaults for its
      OpenAI server on GPUs with >= 70 GiB (vllm/engine/arg_utils.py, get_batch_defaults).
    * ``kv_cache_tokens`` 430,000: derived, not measured. Llama-3.1-8B stores 2 (K, V) x 32
      layers x 8 KV heads x 128 dims x 2 bytes = 128 KiB per token; vLLM's default
      gpu_memory_utilization 0.9 of 80 GiB, less ~15 GiB of weights and ~4 GiB of
      activations, leaves ~53 GiB, about 430k tokens.
    * ``prefix_caching`` on: vLLM V1 enables automatic prefix caching by default.
    * ``output_lengths="lognormal"``: lengths drawn from a log-normal with mean
      ``output_length_mean`` 214.5 tokens, the mean response length of LMSYS-Chat-1M (Zheng
      et al., ICLR 2024, Table 1); ``output_length_sigma`` 1.0 is an assumption (a heavy
      tail: mean / median = e^0.5 = 1.65), not a fitted value. The default ``"sentences"``
      is the emulator's first behaviour (``answer_sentences`` sentences, or
      ``output_tokens``), kept so that earlier reports reproduce.
    * ``fanout="varied"``: the number of sentences of a text answer (one a line, so the
      claims, queries or sub-questions a pipeline splits it into) is drawn per prompt,
      uniformly from 1-8, and a JSON array's length from 1-6 (within the schema's
      ``minItems``/``maxItems``), the same for the same prompt and seed. Real answers vary
      that way; the default ``"uniform"`` (``answer_sentences``, ``array_items``) keeps
      earlier reports reproducible.
    """

    model_config = ConfigDict(extra="forbid")

    ttft_s: float = Field(default=0.014, ge=0, description="time to first token of a short prompt")
    prefill_tokens_per_s: float = Field(default=16_000.0, gt=0)
    tpot_s: float = Field(default=0.00648, ge=0, description="decode step time, one sequence")
    seq_slowdown: float = Field(
        default=0.00566, ge=0, description="step time growth per extra sequence (memory-bound)"
    )
    batch_knee: float = Field(default=10.5, ge=1, description="sequences before saturation")
    batch_slowdown: float = Field(
        default=0.11, ge=0, description="step time growth per sequence past the knee"
    )
    max_num_seqs: int = Field(default=1024, ge=1, description="sequences in a step at most")
    max_num_batched_tokens: int = Field(
        default=8192, ge=1, description="tokens per step (chunked prefill splits prompts)"
    )
    kv_cache_tokens: int = Field(
        default=430_000, ge=BLOCK_TOKENS, description="KV-cache capacity, in tokens"
    )
    prefix_caching: bool = Field(default=True, description="vLLM's automatic prefix caching")
    time_scale: float = Field(default=1.0, ge=0, description="multiplies every modeled time")
    chars_per_token: float = Field(default=4.0, gt=0, description="prompt length estimate")
    answer_sentences: int = Field(default=3, ge=1, description="sentences per text answer")
    output_tokens: int | None = Field(
        default=None, ge=1, description="fixed answer length in tokens (max_tokens still applies)"
    )
    output_lengths: Literal["sentences", "lognormal"] = Field(
        default="sentences", description="answer lengths: as first emulated, or heavy-tailed"
    )
    output_length_mean: float = Field(default=214.5, gt=0)
    output_length_sigma: float = Field(default=1.0, ge=0)
    array_items: int = Field(default=3, ge=0, description="items per JSON array answer")
    fanout: Literal["uniform", "varied"] = Field(
        default="uniform",
        description="uniform: every text answer has answer_sentences sentences and every JSON "
        "array array_items items; varied: per prompt, 1-8 sentences and 1-6 items",
    )
    seed: int = 0
    faults: FaultConfig = Field(default_factory=FaultConfig)

    def step_s(self, sequences: int, prefill_tokens: int = 0) -> float:
        """Modeled (unscaled) seconds of one batcher step with ``sequences`` sequences in it.

        Of its tokens, ``prefill_tokens`` are prompt tokens not found in the prefix cache.
        """
        n = max(1, sequences)
        growth = self.seq_slowdown * (n - 1) + self.batch_slowdown * max(0.0, n - self.batch_knee)
        return self.tpot_s * (1 + growth) + prefill_tokens / self.prefill_tokens_per_s

    @property
    def overhead_s(self) -> float:
        """Modeled (unscaled) server time per request outside the batcher's steps."""
        return max(0.0, self.ttft_s - self.tpot_s)

    def ttft(self, prompt_tokens: int, running: int = 1, cached_tokens: int = 0) -> float:
        """Modeled time to first token, in seconds.

        Assuming the prompt's steps each hold ``running`` sequences (this one included) and no
        request waits.

        With ``running=1`` and nothing cached this is ``(ttft_s + prompt_tokens /
        prefill_tokens_per_s) * time_scale`` for prompts within one step's token budget;
        longer prompts are prefilled in chunks, one step each.
        """
        uncached = max(1, prompt_tokens - cached_tokens)
        steps = math.ceil(uncached / self.max_num_batched_tokens)
        prefill = uncached / self.prefill_tokens_per_s
        total = self.overhead_s + steps * self.step_s(running) + prefill
        return total * self.time_scale

    def tpot(self, running: int) -> float:
        """Modeled time per output token, in seconds, with ``running`` sequences decoding."""
        return self.step_s(running) * self.time_scale
