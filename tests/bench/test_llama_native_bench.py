"""``alto bench --llm llama-server-native``: its settings, the servers' own counters, and
the deployment the bench opens on llama.cpp's ``llama-server``.

Only the last test starts servers; it is skipped when the binary is not built
(``bash install.sh all`` builds it, so CI runs it).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import httpx
import pytest

from alto.bench.cli import add_arguments, settings_from
from alto.bench.endpoints import client_plan, replica_deltas
from alto.bench.errors import BenchError
from alto.bench.llama_native import (
    INSTALL_COMMAND,
    ServerCounts,
    missing,
    parse_metrics,
)
from alto.bench.settings import Settings

MISSING = missing()

NATIVE = "llama-server-native"

# GET /metrics of the llama-server that bash install.sh builds (version 0.5.0-dev, commit
# 0c1e570), after the same 101-token prompt twice: the second took 100 tokens from the
# slot's cache and evaluated one (the server evaluates at least one token of a prompt)
METRICS = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 102
# HELP llamacpp:prompt_tokens_cached_total Number of prompt tokens reused from the cache
# TYPE llamacpp:prompt_tokens_cached_total counter
llamacpp:prompt_tokens_cached_total 100
# HELP llamacpp:prompt_seconds_total Total time spent processing prompts
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 2.85245
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 6
# HELP llamacpp:tokens_predicted_seconds_total Total time spent generating tokens
# TYPE llamacpp:tokens_predicted_seconds_total counter
llamacpp:tokens_predicted_seconds_total 4.79979
# HELP llamacpp:n_decode_total Total number of llama_decode() calls
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 6
# HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s
# TYPE llamacpp:prompt_tokens_seconds gauge
llamacpp:prompt_tokens_seconds 35.7588
# HELP llamacpp:requests_processing Number of requests processing
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 0
# HELP llamacpp:requests_deferred Number of requests deferred
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 0
# HELP llamacpp:n_busy_slots_per_decode Average number of busy slots per llama_decode() call
# TYPE llamacpp:n_busy_slots_per_decode gauge
llamacpp:n_busy_slots_per_decode 1
"""


def parsed(*argv: str) -> Settings:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return settings_from(p.parse_args(list(argv)))


def native(**given: Any) -> Settings:
    return Settings(**{"apps": ["factcheck"], "llm": NATIVE, **given})


# -- settings and command line (no server) ----------------------------------------------


@pytest.mark.parametrize(
    ("deployment", "servers", "slots", "threads"),
    [
        ("single", 1, 4, 2),
        ("rr2", 2, 2, 1),
        ("prefix2", 2, 2, 1),
        ("ll4", 4, 1, 1),
    ],
)
def test_by_default_every_deployment_has_four_slots_and_two_threads_in_all(
    deployment: str, servers: int, slots: int, threads: int
) -> None:
    settings = native(deployment=deployment)
    assert (settings.servers(), settings.llm_slots, settings.llm_threads) == (
        servers,
        slots,
        threads,
    )
    assert settings.native_cap() == 4  # the default cap: every slot of the deployment
    assert Settings(**settings.as_dict()) == settings  # checking again changes nothing


def test_the_flags_set_each_servers_slots_and_threads() -> None:
    settings = parsed(
        "factcheck", "--llm", NATIVE, "--deployment", "rr2", "--llm-slots", "3",
        "--llm-threads", "2", "--embedder", "hash",
    )  # fmt: skip
    assert (settings.llm_slots, settings.llm_threads, settings.native_cap()) == (3, 2, 6)
    assert settings.embedder == "hash"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"llm": "llama-server", "llm_slots": 2}, "--llm-slots is for llama.cpp's own servers"),
        (
            {"llm": "emulated", "llm_slots": 2, "llm_threads": 1},
            "--llm-slots and --llm-threads are for llama.cpp's own servers only: pass --llm "
            "llama-server-native, or leave --llm-slots and --llm-threads out",
        ),
        ({"llm_slots": 0}, "--llm-slots must be at least 1 (per server), got 0"),
        ({"llm_threads": -1}, "--llm-threads must be at least 1 (per server), got -1"),
        ({"llm_url": "http://127.0.0.1:8000/v1"}, "leave --llm-url out, or pass --llm openai"),
        ({"llm_model": "/nonexistent/model.gguf"}, "the GGUF file the servers load"),
        (
            {"deployment": "rr4", "llm_concurrency": 3},
            "--llm-concurrency 3 cannot give each of the 4 servers of --deployment rr4 one "
            "call: pass at least 4",
        ),
        ({"max_inflight": "5"}, "exceeds the shared cap of 4 LLM calls: at most 4"),
        ({"deployment": "rr2", "max_inflight": "3"}, "shared cap of 4 LLM calls: at most 2"),
    ],
)
def test_combinations_that_make_no_sense_say_what_to_pass(
    given: dict[str, Any], message: str
) -> None:
    with pytest.raises(BenchError, match=re.escape(message)):
        native(**given)


def test_what_fits_the_servers_is_accepted() -> None:
    native(max_inflight="4")  # one server of 4 slots
    native(deployment="rr2", alto_endpoint="balancer", max_inflight="4")  # the proxy: all 4
    native(deployment="rr2", llm_concurrency=16, max_inflight="8")  # more than the slots
    native(systems=["alto", "alto-no-lineage", "asyncio-reference+client"])  # the controls


def test_a_missing_binary_is_a_bench_error_naming_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALTO_LLAMA_SERVER", "/nonexistent/llama-server")
    with pytest.raises(BenchError, match=re.escape(INSTALL_COMMAND)) as raised:
        parsed("factcheck", "--llm", NATIVE)
    assert str(raised.value).startswith("--llm llama-server-native: ")


# -- the clients' limits (no server) ----------------------------------------------------

SERVERS = ["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"]
PROXY = "http://127.0.0.1:8000/v1"


def plan(**kw: Any) -> Any:
    args: dict[str, Any] = dict(
        base_url=PROXY, replicas=SERVERS, cap=4, endpoint=None, max_inflight=None,
        order=None, route=None, send_priority=False,
    )  # fmt: skip
    return client_plan(**{**args, **kw})


def test_alto_takes_each_servers_slot_count_where_it_fits_the_cap() -> None:
    on_servers = plan(server_limit=2)
    assert on_servers.targets == tuple(SERVERS) and on_servers.max_inflight == "server"
    assert "slot count per replica" in on_servers.describe()
    one = plan(base_url=SERVERS[0], replicas=SERVERS[:1], server_limit=4)
    assert (one.endpoint, one.max_inflight) == ("balancer", "server")
    # more slots than its share of the cap, the proxy's URL, or no known slots: the share
    assert plan(server_limit=3).max_inflight == 2
    assert plan(endpoint="balancer", server_limit=2).max_inflight == 4
    assert plan().max_inflight == 2
    assert plan(max_inflight="1", server_limit=2).max_inflight == 1  # given: as given


# -- the counters (no server) ---------------------------------------------------------


def test_the_servers_metrics_text_gives_its_counts() -> None:
    counts = ServerCounts.from_metrics(parse_metrics(METRICS), requests=2)
    assert counts == ServerCounts(
        requests=2, evaluated_tokens=102, cached_tokens=100, predicted_tokens=6
    )
    assert counts.prompt_tokens == 202  # 2 x 101 received


def test_a_build_without_the_cached_counter_counts_every_prompt_token_as_evaluated() -> None:
    text = "\n".join(line for line in METRICS.splitlines() if "cached" not in line)
    counts = ServerCounts.from_metrics(parse_metrics(text), requests=2)
    assert (counts.prompt_tokens, counts.cached_tokens, counts.evaluated_tokens) == (102, 0, 102)


def test_missing_counters_are_named() -> None:
    with pytest.raises(RuntimeError, match="lacks llamacpp:prompt_tokens_total"):
        ServerCounts.from_metrics(parse_metrics("llamacpp:tokens_predicted_total 3\n"), 1)


def test_the_counts_read_as_the_emulators_per_replica_stats() -> None:
    before = ServerCounts(requests=1, evaluated_tokens=101, cached_tokens=0, predicted_tokens=3)
    after = ServerCounts.from_metrics(parse_metrics(METRICS), requests=2)
    (delta,) = replica_deltas([before.as_stats(0)], [after.as_stats(0)])
    assert delta == {
        "replica": 0,
        "requests": 1,
        "prompt_tokens": 101,
        "cached_tokens": 100,
        "cached_share": round(100 / 101, 4),
    }


# -- real servers, opened by the bench ---------------------------------------------------


@pytest.mark.server
@pytest.mark.models
@pytest.mark.skipif(bool(MISSING), reason=MISSING or "built")
@pytest.mark.anyio
async def test_the_bench_opens_two_servers_behind_the_proxy_and_counts_what_they_did() -> None:
    from alto.apps import load_app
    from alto.bench.operators import open_bench_operators

    settings = native(
        apps=["summarize"], deployment="rr2", llm_slots=1, llm_threads=1, embedder="hash",
        systems=["alto", "asyncio-reference"],
    )  # fmt: skip
    text = "You are a careful summarizer. Summarize in one word: " + "rivers and hills. " * 12
    prompt = [{"role": "user", "content": text}]
    async with open_bench_operators(load_app("summarize"), settings) as bench:
        deployment = bench.deployment
        assert deployment is not None
        alto = bench.plans["alto"]
        urls = list(alto.targets)
        counters = bench.counters
        await counters.reset_cache()
        before = await counters.read()
        for _ in range(4):  # round-robin: two calls on each server, the second from its cache
            assert (await bench.ops.llm.chat(prompt, max_tokens=2)).strip()
        warm = await counters.read()
        await counters.reset_cache()
        assert (await bench.ops.llm.chat(prompt, max_tokens=2)).strip()
        cold = await counters.read()
    assert (deployment["servers"], deployment["replicas"], deployment["balancer"]) == (
        "llama-server",
        2,
        "round-robin",
    )
    assert (deployment["slots_per_server"], deployment["threads_per_server"]) == (1, 1)
    assert deployment["version"] and deployment["version"].startswith("version:")
    # Alto's client is on the servers themselves, its limit per server their slot count
    assert len(urls) == 2 and (alto.max_inflight, alto.ceiling) == ("server", 1)
    assert bench.cap == 2
    with pytest.raises(httpx.ConnectError):  # stopped after the bench
        httpx.get(urls[0].removesuffix("/v1") + "/health", timeout=5)

    requests, received, cached = (warm[i] - before[i] for i in range(3))
    per_server = replica_deltas(before[3], warm[3])
    assert requests == 4 and [r["requests"] for r in per_server] == [2, 2]
    length = received // 4
    assert received == 4 * length and length > 50
    # each server's second call found the prompt in its slot (all but the one token the
    # server always evaluates)
    assert [r["cached_tokens"] for r in per_server] == [length - 1, length - 1]
    # erased: the same prompt again finds nothing cached
    requests, received, cached = (cold[i] - warm[i] for i in range(3))
    assert (requests, received, cached) == (1, length, 0)
