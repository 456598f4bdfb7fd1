"""Real llama.cpp servers for ``alto bench --llm llama-server``, and the prompt tokens their
logs say they evaluated."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from alto.bench.llama_servers import LlamaServers, PromptLog

# llama-cpp-python 0.3's verbose log, as one server printed it (other lines between left out)
HIT = "Llama.generate: 28 prefix-match hit, remaining 9 prompt tokens to eval\n"
EVAL_9 = "llama_perf_context_print: prompt eval time =      59.90 ms /     9 tokens (...)\n"
EVAL_35 = "llama_perf_context_print: prompt eval time =       0.04 ms /    35 tokens (...)\n"
DECODE = "llama_perf_context_print:        eval time =     128.77 ms /     7 runs   (...)\n"


def test_a_prompt_without_a_hit_is_evaluated_whole() -> None:
    log = PromptLog()
    for line in (EVAL_35, DECODE, 'INFO: 127.0.0.1 - "POST /v1/chat/completions" 200 OK\n'):
        log.feed(line)
    c = log.counts
    assert (c.requests, c.prompt_tokens, c.cached_tokens, c.evaluated_tokens) == (1, 35, 0, 35)


def test_a_prefix_hit_counts_its_tokens_as_cached() -> None:
    log = PromptLog()
    for line in (EVAL_35, DECODE, HIT, EVAL_9, DECODE):
        log.feed(line)
    c = log.counts
    assert (c.requests, c.prompt_tokens, c.cached_tokens, c.evaluated_tokens) == (2, 72, 28, 44)


def test_a_one_token_remainder_is_counted_from_the_hit_line() -> None:
    # llama.cpp counts a one-token prompt batch as a decode step: prompt eval shows 0 tokens
    log = PromptLog()
    log.feed("Llama.generate: 40 prefix-match hit, remaining 1 prompt tokens to eval\n")
    log.feed("llama_perf_context_print: prompt eval time =       0.00 ms /     0 tokens\n")
    c = log.counts
    assert (c.prompt_tokens, c.cached_tokens, c.evaluated_tokens) == (41, 40, 1)


def test_a_prompt_found_whole_is_counted_as_such() -> None:
    log = PromptLog()
    log.feed("Llama.generate: full prompt already cached, skipping reset\n")
    log.feed("llama_perf_context_print: prompt eval time =       0.00 ms /     0 tokens\n")
    assert (log.counts.requests, log.counts.full_hits, log.counts.evaluated_tokens) == (1, 1, 0)


needs_server = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("fastapi") is None,
    reason="needs llama-cpp-python's server: pip install 'alto[models]'",
)


def ask(url: str, text: str) -> dict[str, int]:
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": 2}
    answer = httpx.post(f"{url}/chat/completions", json=body, timeout=120)
    answer.raise_for_status()
    usage: dict[str, int] = answer.json()["usage"]
    return usage


@needs_server
@pytest.mark.server
@pytest.mark.models
def test_servers_count_what_they_evaluated_and_what_came_from_the_cache() -> None:
    shared = "You are a careful fact checker. Question: is the sky blue at noon? "
    with LlamaServers(2) as servers:
        first = ask(servers.urls[0], shared + "Claim: it is.")
        second = ask(servers.urls[0], shared + "Claim: it is not.")
        other = ask(servers.urls[1], "Hello there.")
        servers.settle()
        counts = servers.counts()
        servers.flush()
        servers.settle()
        flushed = servers.counts()
    one, two = counts
    assert one.requests == 2 and two.requests == 1
    assert one.prompt_tokens == first["prompt_tokens"] + second["prompt_tokens"]
    assert two.prompt_tokens == other["prompt_tokens"]
    # the second prompt re-read the first's shared text from the cache
    assert one.cached_tokens > len(shared.split())
    assert one.evaluated_tokens == one.prompt_tokens - one.cached_tokens
    assert [f.requests for f in flushed] == [3, 2]


@needs_server
@pytest.mark.server
@pytest.mark.models
@pytest.mark.slow
def test_bench_on_two_llama_servers_records_their_counts(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    run = subprocess.run(
        [
            sys.executable, "-m", "alto.cli", "bench", "factcheck", "--llm", "llama-server",
            "--deployment", "rr2", "--embedder", "hash", "--systems", "alto,langgraph-flat",
            "--concurrency", "1", "--closed-inputs", "2", "--queries", "2", "--no-progress",
            "--out", str(out),
        ],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    app = json.loads((out / "results.json").read_text())["apps"]["factcheck"]
    assert app["deployment"]["servers"] == "llama_cpp.server"
    assert app["deployment"]["replicas"] == 2
    for r in app["runs"]:
        assert r["failed"] == 0 and r["mismatched"] == 0
        assert r["requests"] == r["llm_calls"] > 0
        assert 0 < r["cached_tokens"] < r["prompt_tokens"]
        assert sum(x["requests"] for x in r["emulator_replicas"]) == r["requests"]
    alto_run = next(r for r in app["runs"] if r["system"] == "alto")
    assert len(alto_run["endpoint"]["replicas"]) == 2  # Alto went to the servers directly
