"""The emulator's batcher on its modeled clock: the fitted step time, the prefix cache, the KV
capacity, priorities. No wall clock: every time here is the batcher's own."""

from __future__ import annotations

import statistics

import pytest

from alto.bench.emulator import BLOCK_TOKENS, ContinuousBatcher, EmulatorConfig
from alto.bench.emulator.prefix_cache import BlockPool, block_hashes, token_ids
from alto.bench.emulator.text import count_tokens, drawn_length

# the source's rows (config.py): concurrency -> (TPOT p50 s, throughput tokens/s)
SOURCE = {1: (0.00648, 122.2), 4: (0.00659, 580.3), 16: (0.01094, 1384.2), 64: (0.04691, 1312.3)}


def _prompt(k: int, n: int = 32) -> list[int]:
    return [k * 100_000 + j for j in range(n)]


def closed_loop(config: EmulatorConfig, concurrency: int, rounds: int = 6) -> tuple[float, float]:
    """Median TPOT and steady-state throughput of ``concurrency`` clients, each sending its
    next request when the last is answered (outputs of 64..192 tokens, distinct prompts)."""
    batcher = ContinuousBatcher(config)
    total = concurrency * rounds
    added = 0

    def add() -> None:
        nonlocal added
        length = 64 + (added * 37) % 129
        batcher.add(_prompt(added), list(range(length)))
        added += 1

    for _ in range(concurrency):
        add()
    finished = []
    emitted: list[tuple[float, int]] = []
    full_until = 0.0  # the last moment every client still had a request in the batcher
    while batcher.busy:
        step = batcher.step()
        assert step is not None
        emitted.append((step.end, len(step.emitted)))
        for seq in step.finished:
            finished.append(seq)
            if added < total:
                add()
                full_until = step.end
    warm = sorted(s.finished_at for s in finished)[concurrency - 1]  # every first request done
    tokens = sum(n for end, n in emitted if warm < end <= full_until)
    tpots = [
        (s.finished_at - s.first_token_at) / (len(s.output) - 1)
        for s in finished
        if s.first_token_at is not None and s.first_token_at >= warm
    ]
    return statistics.median(tpots), tokens / (full_until - warm)


@pytest.mark.parametrize("concurrency", sorted(SOURCE))
def test_step_time_reproduces_the_source_rows(concurrency: int) -> None:
    tpot, throughput = closed_loop(EmulatorConfig(), concurrency)
    want_tpot, want_throughput = SOURCE[concurrency]
    assert tpot == pytest.approx(want_tpot, rel=0.10)
    if concurrency > 1:
        assert throughput == pytest.approx(want_throughput, rel=0.10)
    else:
        # not reproducible from the source's own row: 122.2 tokens/s is 79% of 1 / TPOT p50
        # (154 tokens/s), far below what its 14 ms TTFT per request allows for any answer
        # length that fits its other rows; one sequence decodes at 1 / TPOT here
        assert throughput == pytest.approx(1 / want_tpot, rel=0.10)
        assert throughput > want_throughput * 1.10


def test_throughput_saturates_past_sixteen_sequences() -> None:
    config = EmulatorConfig()
    rate = {n: n / config.step_s(n) for n in (1, 4, 16, 64, 256)}
    assert rate[1] < rate[4] < rate[16]
    assert rate[64] < rate[16] * 1.0 and rate[256] < 1400  # a ceiling, as the source shows


def test_formulas() -> None:
    c = EmulatorConfig(time_scale=2.0)
    assert c.ttft(100, 1) == pytest.approx(2 * (0.014 + 100 / 16_000))
    assert c.ttft(100, 1, cached_tokens=96) == pytest.approx(2 * (0.014 + 4 / 16_000))
    assert c.tpot(1) == pytest.approx(2 * 0.00648)
    assert c.tpot(64) == pytest.approx(2 * 0.00648 * (1 + 63 * 0.00566 + 53.5 * 0.11))
    # a prompt over the step's token budget is prefilled in chunks, one step each
    long = c.ttft(20_000, 1) / 2
    assert long == pytest.approx(0.014 + 2 * 0.00648 + 20_000 / 16_000)


# -- prefix cache ---------------------------------------------------------------------------------


def _run(batcher: ContinuousBatcher, prompt: list[int], output: int = 2) -> tuple[float, int]:
    """Time to first token (modeled, from entering) and cached tokens of one request alone."""
    seq = batcher.add(prompt, list(range(output)))
    while batcher.busy:
        batcher.step()
    assert seq.first_token_at is not None
    return seq.first_token_at - seq.entered_at, seq.cached_tokens


def test_cached_prefill_is_cheaper_by_the_modeled_amount() -> None:
    config = EmulatorConfig()
    batcher = ContinuousBatcher(config)
    prompt = _prompt(1, 160)  # 10 full blocks
    cold, cached_cold = _run(batcher, prompt)
    warm, cached_warm = _run(batcher, prompt)
    assert cached_cold == 0 and cached_warm == 144  # the last block holds the last token
    assert cold == pytest.approx(config.step_s(1, 160))
    assert cold - warm == pytest.approx(144 / config.prefill_tokens_per_s)
    off = ContinuousBatcher(EmulatorConfig(prefix_caching=False))
    _run(off, prompt)
    assert _run(off, prompt)[1] == 0


def test_only_full_blocks_of_a_shared_prefix_are_cached() -> None:
    batcher = ContinuousBatcher(EmulatorConfig())
    _run(batcher, _prompt(1, 40) + [7] * 20)
    # shares 40 tokens: two full blocks (32 tokens); the third block differs
    assert _run(batcher, _prompt(1, 40) + [8] * 20)[1] == 32
    # shares 15 tokens: not one full block
    assert _run(batcher, _prompt(1, 15) + [9] * 40)[1] == 0


def test_blocks_are_a_hash_chain() -> None:
    a = block_hashes([1] * 16 + [2] * 16)
    b = block_hashes([3] * 16 + [2] * 16)
    assert len(a) == 2 and a[1] != b[1]  # same tokens, different parent: different block
    assert block_hashes([1] * 31) == a[:1]  # a partial block has no hash


def test_unreferenced_blocks_are_evicted_lru_under_kv_pressure() -> None:
    small = EmulatorConfig(kv_cache_tokens=4 * BLOCK_TOKENS)
    batcher = ContinuousBatcher(small)
    first = _prompt(1, 33)  # two full blocks and one partial
    _run(batcher, first, output=1)
    assert batcher.pool.cached_blocks == 2
    _run(batcher, _prompt(2, 60), output=1)  # needs all four blocks
    assert batcher.pool.evictions >= 2
    assert _run(batcher, first, output=1)[1] == 0  # gone
    roomy = ContinuousBatcher(EmulatorConfig())
    _run(roomy, first, output=1)
    _run(roomy, _prompt(2, 60), output=1)
    assert _run(roomy, first, output=1)[1] == 32  # kept when there is room


def test_a_full_kv_cache_preempts_and_every_request_still_finishes() -> None:
    config = EmulatorConfig(kv_cache_tokens=8 * BLOCK_TOKENS, prefix_caching=False)
    batcher = ContinuousBatcher(config)
    seqs = [batcher.add(_prompt(k, 40), list(range(40))) for k in range(2)]
    while batcher.busy:
        batcher.step()
    assert batcher.preemptions > 0
    assert all(s.emitted == 40 and s.finished_at is not None for s in seqs)
    assert batcher.pool.free_blocks == batcher.pool.num_blocks
    with pytest.raises(ValueError, match="kv_cache_tokens"):
        batcher.add(_prompt(3, 200), [1])


def test_pool_laws() -> None:
    pool = BlockPool(4)
    got = pool.allocate(3)
    assert got is not None and pool.free_blocks == 1 and pool.allocate(2) is None
    pool.cache(got[0], 11)
    pool.free(got)
    assert pool.free_blocks == 4 and pool.lookup([11], 17) == [got[0]]


def test_token_ids_count_like_the_prompt_estimate_and_share_prefixes() -> None:
    a = "The quick brown fox jumps over the lazy dog. " * 3
    for text in (a, "hi", a + "And then some."):
        assert len(token_ids(text, 4.0)) == count_tokens(text, 4.0)
    longer = token_ids(a + "And then some more words.", 4.0)
    assert longer[: len(token_ids(a, 4.0)) - 1] == token_ids(a, 4.0)[:-1]


# -- scheduling --------------------------------------------------------------------------------


def test_lower_priority_value_enters_first() -> None:
    batcher = ContinuousBatcher(EmulatorConfig(max_num_seqs=1))
    first = batcher.add(_prompt(1), [1, 2, 3])
    batcher.step()  # the first is running
    early = batcher.add(_prompt(2), [1, 2], priority=0)
    late = batcher.add(_prompt(3), [1, 2], priority=-1)
    while batcher.busy:
        batcher.step()
    assert first.finished_at is not None
    assert late.admitted_at is not None and early.admitted_at is not None
    assert first.finished_at <= late.admitted_at < early.admitted_at
    # equal priorities: arrival order
    batcher = ContinuousBatcher(EmulatorConfig(max_num_seqs=1))
    a, b = batcher.add(_prompt(1), [1]), batcher.add(_prompt(2), [1])
    while batcher.busy:
        batcher.step()
    assert a.admitted_at is not None and b.admitted_at is not None
    assert a.admitted_at < b.admitted_at


def test_a_prefill_chunk_slows_the_decodes_it_shares_a_step_with() -> None:
    config = EmulatorConfig(max_num_batched_tokens=512)
    batcher = ContinuousBatcher(config)
    decoding = batcher.add(_prompt(1), list(range(50)))
    for _ in range(3):
        batcher.step()
    batcher.add(_prompt(2, 2000), [1])
    step = batcher.step()
    assert step is not None and step.sequences == 2
    assert step.prefill_tokens == 511  # the budget left after one decode token
    assert step.end - step.start == pytest.approx(config.step_s(2, 511))
    assert step.end - step.start > 5 * config.step_s(1)
    assert decoding in step.emitted


def test_heavy_tailed_lengths_are_deterministic_per_prompt() -> None:
    lengths = [drawn_length(f"prompt {i}", 0, 214.5, 1.0) for i in range(4000)]
    assert lengths[:50] == [drawn_length(f"prompt {i}", 0, 214.5, 1.0) for i in range(50)]
    assert statistics.mean(lengths) == pytest.approx(214.5, rel=0.1)
    median = statistics.median(lengths)
    assert median == pytest.approx(214.5 / 1.6487, rel=0.1)  # mean / median = e^(sigma^2/2)
    assert max(lengths) > 10 * median  # a heavy tail


def test_the_former_name_engine_still_imports_with_a_deprecation_warning() -> None:
    import alto.bench.emulator as emulator

    with pytest.warns(DeprecationWarning, match="renamed ContinuousBatcher"):
        assert emulator.Engine is ContinuousBatcher
    with pytest.raises(AttributeError, match="Engines"):
        _ = emulator.Engines
