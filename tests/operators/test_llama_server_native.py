"""llama.cpp's own server (``llama-server``, built by ``bash install.sh llama-server``) on
loopback, with the embedded SmolLM2: answers, streams, its counters, several slots decoding
at once, and OpenAIClient taking its slot count as the limit per replica.

Skipped only when the binary is not built (``bash install.sh all`` builds it, so CI runs
these); the command-line test of a missing binary always runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

import alto
from alto.bench.llama_native import (
    INSTALL_COMMAND,
    LlamaServerMissing,
    NativeLlamaServer,
    missing,
    parse_metrics,
)
from alto.lineage import CallSite, fresh_slot
from alto.operators.llm import OpenAIClient

MISSING = missing()

needs_binary = pytest.mark.skipif(bool(MISSING), reason=MISSING or "built")
pytestmark = [pytest.mark.server, pytest.mark.models]

USER = [{"role": "user", "content": "Name three colours, one per line."}]
LONG = {  # a request that decodes exactly max_tokens tokens
    "messages": [{"role": "user", "content": "Count from one to one hundred."}],
    "max_tokens": 300,
    "ignore_eos": True,
    "stream": True,
}


@pytest.fixture(scope="module")
def server() -> Iterator[NativeLlamaServer]:
    if MISSING:
        pytest.skip(MISSING)
    with NativeLlamaServer(slots=2, threads=2) as running:
        yield running


def in_stage(root: int) -> None:
    slot = fresh_slot()
    slot.site = CallSite("run", "answer", {root: 100.0 + root})
    slot.one = (root, "claims", 0)


def client(url: str, **kw: Any) -> OpenAIClient:
    return OpenAIClient(url, "smollm2", api_key_env=None, **kw)


@needs_binary
def test_props_and_slots_say_how_many_sequences_it_serves(server: NativeLlamaServer) -> None:
    assert server.props()["total_slots"] == 2
    states = server.slot_states()
    assert [s["id"] for s in states] == [0, 1]
    assert all(s["n_ctx"] == server.ctx_per_slot for s in states)
    assert httpx.get(f"{server.base_url}/models", timeout=10).json()["data"][0]["id"] == "smollm2"


@needs_binary
@pytest.mark.anyio
async def test_answers_and_streams_and_its_counters_match_the_usage(
    server: NativeLlamaServer,
) -> None:
    before = server.metrics()
    async with client(server.base_url) as llm:
        answer = await llm.chat(USER, max_tokens=24)
        pieces = [piece async for piece in llm.stream(USER, max_tokens=24)]
        again = await llm.chat(USER, max_tokens=24)  # the same prompt: served from a slot's cache
        (replica,) = llm.dispatch_stats().replicas
    assert answer.strip() and again.strip()
    assert len(pieces) > 1 and "".join(pieces).strip()
    after = server.metrics()

    def grew(name: str) -> int:
        return round(after[f"llamacpp:{name}"] - before[f"llamacpp:{name}"])

    # what the client counted from the answers' usage is what the server counted
    assert replica.calls == 3 and replica.failures == 0
    assert replica.output_tokens == grew("tokens_predicted_total") > 0
    assert replica.cached_tokens == grew("prompt_tokens_cached_total") > 0
    assert replica.prompt_tokens == grew("prompt_tokens_total") + replica.cached_tokens


@needs_binary
def test_two_slots_decode_two_streams_at_once(server: NativeLlamaServer) -> None:
    with httpx.Client(timeout=120) as http:
        with http.stream("POST", f"{server.base_url}/chat/completions", json=LONG) as first:
            lines = first.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            with http.stream("POST", f"{server.base_url}/chat/completions", json=LONG) as second:
                more = second.iter_lines()
                next(line for line in more if line.startswith("data: "))
                # both are decoding: neither can end before its 300 tokens
                busy = [s["id"] for s in server.slot_states() if s["is_processing"]]
                assert sorted(busy) == [0, 1]
                assert server.metrics()["llamacpp:requests_processing"] == 2
    assert server.metrics()["llamacpp:n_busy_slots_per_decode"] > 1


@needs_binary
@pytest.mark.parametrize("slots", [1, 4])
@pytest.mark.anyio
async def test_the_clients_limit_per_replica_is_the_servers_slot_count(slots: int) -> None:
    async with NativeLlamaServer(slots=slots, threads=2, ctx_per_slot=1024) as server:
        async with client(server.base_url) as llm:
            llm.dispatcher.record(True)

            async def call(root: int) -> None:
                in_stage(root)
                assert (await llm.chat(USER, max_tokens=8)).strip()

            async with anyio.create_task_group() as tg:
                for root in range(slots + 2):
                    tg.start_soon(call, root)
            stats = llm.dispatch_stats()
    (replica,) = stats.replicas
    assert (replica.limit, replica.limit_source) == (slots, "server")
    most = max(inflight for _, r, inflight, _ in stats.timeline() if r == 0)
    assert most == slots and stats.over_limit == 0 and replica.calls == slots + 2


@needs_binary
@pytest.mark.ray
@pytest.mark.anyio
async def test_on_ray_the_actors_share_the_limit_the_server_gave() -> None:
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        async with NativeLlamaServer(slots=1, threads=1, ctx_per_slot=1024) as server:
            llm = client(server.base_url)
            llm.dispatcher.record(True)

            @alto.stage(replicas=2)
            async def ask(word: str) -> str:
                return await llm.chat([{"role": "user", "content": f"Say {word}."}], max_tokens=4)

            @alto.flow
            def asking(word: str) -> Any:
                return ask(word)

            words = ["yes", "no", "maybe", "later", "never", "soon"]
            answers = await asking.run(words, backend="ray")
            stats = llm.dispatch_stats()  # the actors' shared dispatcher, read by the driver
    finally:
        if started:
            ray.shutdown()
    assert len(answers) == len(words) and all(isinstance(a, str) for a in answers)
    (replica,) = stats.replicas
    assert (replica.limit, replica.limit_source) == (1, "server")
    assert replica.calls == len(words) and stats.over_limit == 0
    assert max(inflight for _, r, inflight, _ in stats.timeline() if r == 0) == 1


@needs_binary
@pytest.mark.slow
def test_alto_run_starts_and_stops_it(tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alto.cli", "run", "summarize", "--n", "1", "--embedder", "hash",
         "--llm", "llama-server-native", "--llm-slots", "3", "--llm-threads", "2", "--json"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "ALTO_CACHE": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert "llama-server" in data["operators"]["llm"] and "3 slots" in data["operators"]["llm"]
    (endpoint,) = data["endpoints"]
    (replica,) = endpoint["replicas"]
    assert replica["calls"] > 0 and replica["failures"] == 0
    assert (replica["limit"], replica["limit_source"]) == (3, "server")
    port = replica["target"].rsplit(":", 1)[1].split("/")[0]
    with pytest.raises(httpx.ConnectError):  # stopped after the run
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)


def test_alto_run_names_the_install_command_when_it_is_not_built(tmp_path: Any) -> None:
    missing = tmp_path / "llama-server"
    result = subprocess.run(
        [sys.executable, "-m", "alto.cli", "run", "summarize", "--n", "1", "--embedder", "hash",
         "--llm", "llama-server-native"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "ALTO_LLAMA_SERVER": str(missing)},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("alto: error: --llm llama-server-native:")
    assert INSTALL_COMMAND in result.stderr and str(missing) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_binary_is_reported_before_anything_starts(monkeypatch: Any) -> None:
    monkeypatch.setenv("ALTO_LLAMA_SERVER", "/nonexistent/llama-server")
    with pytest.raises(LlamaServerMissing, match=INSTALL_COMMAND):
        NativeLlamaServer(slots=1).start()
    with pytest.raises(ValueError, match="slots must be an int >= 1"):
        NativeLlamaServer(slots=0)


def test_metrics_text_is_read_by_name() -> None:
    text = (
        "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n"
        "# TYPE llamacpp:prompt_tokens_total counter\n"
        "llamacpp:prompt_tokens_total 36\n"
        'llamacpp:requests_processing{slot="all"} 2\n'
        "llamacpp:tokens_predicted_total 4.5e+01\n"
    )
    assert parse_metrics(text) == {
        "llamacpp:prompt_tokens_total": 36.0,
        "llamacpp:requests_processing": 2.0,
        "llamacpp:tokens_predicted_total": 45.0,
    }
