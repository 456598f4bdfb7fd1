"""The critical-path lower bound of a query's latency under the serving-timing emulator.

With the emulated LLM an LLM call cannot finish faster than its unloaded service time,
which the emulator's own timing model gives (:class:`~alto.bench.emulator.config.
EmulatorConfig`): time to first token for the prompt with one sequence running, plus
one per-token time for each further token. A query cannot finish before its longest
chain of dependent calls has run, so the sum along that chain is a lower bound on its
latency under *any* orchestration of the same calls.

The chain comes from one unloaded run of the asyncio reference per query, recorded with
causal dependencies (:func:`alto.bench.record.tracking_dependencies`): every call lists
the calls whose results its code had read, and for a token stream how many tokens (a
claim depends on the answer stream only up to the token that ended it). On that graph
the earliest finish of every call is evaluated with

* an LLM call's **modeled unloaded service time** (a stream read up to token *k* is
  ready after the time to first token plus *k - 1* per-token times), and
* every other operator call's (embedding, index search, rerank) **measured** duration
  in that same unloaded run,

and the query's bound is the latest finish among the calls its result depends on. Pure
Python between calls (parsing, merging evidence) is left out, and so is the HTTP time
of the emulated calls: both belong to orchestration, which the bound must not assume.

The LLM part is exact under the emulator. The measured part bounds orchestrations that
make the same non-LLM calls (a system that batches embeddings differently may do that
part faster, and calls that queue for the one embedding model include their wait); the
**LLM-only bound** (``other=False``: non-LLM calls cost nothing) holds for any of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alto.bench.emulator.config import BLOCK_TOKENS
from alto.bench.record import FULL, Call
from alto.errors import UsageError


@dataclass(frozen=True, slots=True)
class Bound:
    """A query's critical-path lower bound.

    Attributes:
        seconds: the bound.
        llm_s: the part of it spent in LLM calls (modeled).
        other_s: the part spent in other operator calls (measured).
        chain: the calls on the critical path, first to last, as ``step`` labels (a
            stream read partly is written ``step[:k]`` with ``k`` tokens).
    """

    seconds: float
    llm_s: float
    other_s: float
    chain: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The bound as a dict for JSON (seconds rounded to microseconds)."""
        return {
            "bound_s": round(self.seconds, 6),
            "llm_s": round(self.llm_s, 6),
            "other_s": round(self.other_s, 6),
            "chain": list(self.chain),
        }


def prompt_tokens(prompt_chars: int, chars_per_token: float) -> int:
    """The emulator's prompt length estimate (``emulator.text.count_tokens``): at least 1 token."""
    return max(1, round(prompt_chars / chars_per_token))


def llm_service_time(call: Call, config: Any, tokens: int = FULL) -> float:
    """Unloaded time for the emulator to deliver ``tokens`` tokens of ``call`` (all: FULL).

    ``config`` is the emulator's :class:`EmulatorConfig`: ``ttft(prompt_tokens, 1)`` plus
    ``tpot(1)`` for every token after the first. No tokens take no time (the emulator
    answers an empty completion at once). With prefix caching on, the prompt is taken as
    cached as far as the cache could ever serve it (every full block but the one holding
    the last token), since any earlier call, of any query, may have left it there.
    """
    n = call.tokens if tokens == FULL else min(tokens, call.tokens)
    if n <= 0:
        return 0.0
    prompt = prompt_tokens(call.prompt_chars, config.chars_per_token)
    cached = BLOCK_TOKENS * ((prompt - 1) // BLOCK_TOKENS) if config.prefix_caching else 0
    first = config.ttft(prompt, 1, cached_tokens=cached)
    return float(first + (n - 1) * config.tpot(1))


def critical_path(
    calls: Sequence[Call],
    result_deps: Mapping[int, int] | Iterable[tuple[int, int]],
    config: Any,
    *,
    other: bool = True,
) -> Bound:
    """The lower bound of one query from its recorded calls and its result's dependencies.

    Args:
        calls: the calls of one unloaded run, recorded with dependencies.
        result_deps: ``call id -> tokens`` (or pairs) the query's result depends on.
        config: the emulator's timing model.
        other: count the other operator calls at their measured duration; with False they
            cost nothing, which gives the LLM-only bound (no measurement in it at all).

    Raises:
        UsageError: a dependency names a call that is not among ``calls``.
    """
    by_id = {c.id: c for c in calls}
    start: dict[int, float] = {}  # earliest start of each call
    via: dict[int, tuple[int, int] | None] = {}

    def weight(call: Call, tokens: int) -> float:
        if call.operator == "llm":
            return llm_service_time(call, config, tokens)
        return call.duration if other else 0.0

    def ready(dep: tuple[int, int]) -> float:
        call_id, tokens = dep
        if call_id not in start:
            msg = f"dependency on call {call_id}, which was not recorded"
            raise UsageError(msg)
        return start[call_id] + weight(by_id[call_id], tokens)

    def latest(deps: Iterable[tuple[int, int]]) -> tuple[float, tuple[int, int] | None]:
        best: tuple[float, tuple[int, int] | None] = (0.0, None)
        for dep in deps:
            t = ready(dep)
            if t > best[0]:
                best = (t, dep)
        return best

    for call in sorted(calls, key=lambda c: c.id):
        begin, prev = latest(d for d in call.deps if d[0] in by_id)
        start[call.id] = begin
        via[call.id] = prev
    deps = list(result_deps.items()) if isinstance(result_deps, Mapping) else list(result_deps)
    total, last = latest(deps)

    chain: list[str] = []
    llm_s = other_s = 0.0
    link = last
    while link is not None:
        call = by_id[link[0]]
        spent = weight(call, link[1])
        partial = link[1] != FULL and link[1] < call.tokens
        chain.append(f"{call.step}[:{link[1]}]" if partial else call.step)
        if call.operator == "llm":
            llm_s += spent
        else:
            other_s += spent
        link = via[call.id]
    return Bound(total, llm_s, other_s, tuple(reversed(chain)))


def peak_decode_tokens_per_s(config: Any) -> float:
    """The most tokens per second one emulated replica can decode.

    That is ``n / tpot(n)`` at its best batch size ``n`` (within ``max_num_seqs``).

    Total decode work over this rate bounds any system's throughput from above (prompts
    cost extra prefill time, so the true ceiling is lower): ``peak / decode tokens per
    input`` is the *rate ceiling*, and with ``c`` inputs kept in flight, mean latency is at
    least ``c x tokens / peak`` (Little's law).
    """
    best = 0.0
    for n in range(1, int(config.max_num_seqs) + 1):
        step = config.tpot(n)
        if step > 0:
            best = max(best, n / step)
    return best
