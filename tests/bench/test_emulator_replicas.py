"""Replicas, the balancer, the prefix cache, priorities and answer lengths, over HTTP and in
the balancer's own terms (timing emulation: nothing here is a model)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from alto.bench.emulator import EmulatorConfig, EmulatorServer, serve_emulator

INSTANT = EmulatorConfig(time_scale=0.0)
# 200 characters = 50 tokens at 4 characters a token: three full blocks and a partial one
LONG = ("Rivers carry water to the sea and shape the land they cross. " * 4)[:200]


def _ask(url: str, content: str, **extra: Any) -> dict[str, Any]:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    response = httpx.post(f"{url}/chat/completions", json={**body, **extra}, timeout=30)
    response.raise_for_status()
    return dict(response.json())


# -- over HTTP ----------------------------------------------------------------------------------


def test_replica_urls_and_round_robin_over_http() -> None:
    with EmulatorServer(INSTANT, replicas=3, balancer="round-robin") as server:
        urls = server.replica_urls
        assert urls == [server.base_url.replace("/v1", f"/r/{i}/v1") for i in range(3)]
        served = [_ask(server.base_url, f"Question {i}?")["emulator"]["replica"] for i in range(6)]
        assert served == [0, 1, 2, 0, 1, 2]
        assert _ask(urls[2], "Direct?")["emulator"]["replica"] == 2
        missing = httpx.post(
            server.base_url.replace("/v1", "/r/7/v1") + "/completions",
            json={"model": "m", "prompt": "x"},
        )
        assert missing.status_code == 404
        stats = server.stats()
        assert stats["replicas"] == 3 and [r["requests"] for r in stats["per_replica"]] == [2, 2, 3]


def test_cached_tokens_for_repeated_and_shared_prefixes() -> None:
    with serve_emulator(INSTANT) as url:
        first = _ask(url, LONG)["usage"]
        again = _ask(url, LONG)["usage"]
        shared = _ask(url, LONG[:100] + "x" * 100)["usage"]  # 25 tokens in common
        assert first["prompt_tokens"] == 50
        assert first["prompt_tokens_details"]["cached_tokens"] == 0
        assert again["prompt_tokens_details"]["cached_tokens"] == 48  # 3 full blocks
        assert shared["prompt_tokens_details"]["cached_tokens"] == 16  # only the full block
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": LONG}],
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.stream("POST", f"{url}/chat/completions", json=body) as response:
            events = [ln.removeprefix("data: ") for ln in response.iter_lines() if ln]
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        assert last["choices"] == [] and last["usage"]["prompt_tokens_details"] == {
            "cached_tokens": 48
        }
    with serve_emulator(EmulatorConfig(time_scale=0.0, prefix_caching=False)) as url:
        _ask(url, LONG)
        assert _ask(url, LONG)["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_prefix_aware_balancer_sends_a_repeated_prompt_where_it_is_cached() -> None:
    with EmulatorServer(INSTANT, replicas=2, balancer="prefix-aware") as server:
        a = _ask(server.base_url, LONG)
        b = _ask(server.base_url, "Something else entirely, with no shared words at all?")
        again = _ask(server.base_url, LONG)
    assert (a["emulator"]["replica"], b["emulator"]["replica"]) == (0, 1)
    assert again["emulator"]["replica"] == 0
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == 48


@pytest.mark.anyio
async def test_least_loaded_over_http_avoids_the_busy_replica() -> None:
    config = EmulatorConfig(ttft_s=0.01, tpot_s=0.02, output_tokens=60)
    async with EmulatorServer(config, replicas=2, balancer="least-loaded") as server:
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": "Long answer, please?"}],
            "max_tokens": 60,
            "stream": True,
        }
        async with httpx.AsyncClient(timeout=30) as client:
            async with client.stream(
                "POST", f"{server.base_url}/chat/completions", json=body
            ) as busy:
                lines = busy.aiter_lines()
                await anext(lines)  # the long answer is under way on replica 0
                reply = await client.post(
                    f"{server.base_url}/chat/completions",
                    json={**body, "stream": False, "max_tokens": 2},
                )
                assert reply.json()["emulator"]["replica"] == 1


def test_fcfs_refuses_a_nonzero_priority_as_vllm_does_and_accepts_zero() -> None:
    with EmulatorServer(INSTANT, replicas=2) as server:  # fcfs: vLLM's default
        refused = httpx.post(
            f"{server.base_url}/completions",
            json={"model": "m", "prompt": "x", "priority": 5},
            timeout=30,
        )
        direct = httpx.post(
            f"{server.replica_urls[1]}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}], "priority": -1},
            timeout=30,
        )
        zero = _ask(server.base_url, "Zero is always fine.", priority=0)
        stats = server.stats()
    assert refused.status_code == 400 and direct.status_code == 400
    assert refused.json() == {
        "error": {
            "message": "Got priority 5 but Priority scheduling is not enabled.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    }
    assert direct.json()["error"]["message"] == (
        "Got priority -1 but Priority scheduling is not enabled."
    )
    assert zero["choices"][0]["finish_reason"] in ("stop", "length")
    assert stats["scheduling_policy"] == "fcfs" and stats["refused_priority"] == 2
    assert stats["requests"] == 1  # the refused requests never reached a replica
    with pytest.raises(ValueError, match="scheduling_policy"):
        EmulatorServer(INSTANT, scheduling_policy="lifo")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_priority_reorders_the_waiting_queue() -> None:
    config = EmulatorConfig(ttft_s=0.01, tpot_s=0.01, max_num_seqs=1, output_tokens=40)
    async with (
        EmulatorServer(config, scheduling_policy="priority") as server,
        httpx.AsyncClient(timeout=30) as client,
    ):
        started: dict[str, float] = {}

        async def ask(name: str, priority: int | None, tokens: int) -> None:
            body: dict[str, Any] = {
                "model": "m",
                "prompt": f"Request {name}.",
                "max_tokens": tokens,
            }
            if priority is not None:
                body["priority"] = priority
            reply = await client.post(f"{server.base_url}/completions", json=body)
            started[name] = reply.json()["emulator"]["started_at_s"]

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "running", None, 40)  # holds the only slot ~0.4 s
            await anyio.sleep(0.1)
            tg.start_soon(ask, "early", 0, 2)
            await anyio.sleep(0.05)
            tg.start_soon(ask, "late-but-urgent", -1, 2)
        bad = await client.post(
            f"{server.base_url}/completions", json={"model": "m", "prompt": "x", "priority": "high"}
        )
    assert started["running"] < started["late-but-urgent"] < started["early"]
    assert bad.status_code == 400 and "priority" in bad.json()["error"]["message"]


def test_heavy_tailed_answer_lengths_are_deterministic_and_capped() -> None:
    config = EmulatorConfig(time_scale=0.0, output_lengths="lognormal")
    with serve_emulator(config) as url:

        def length(i: int, cap: int = 4000) -> int:
            data = _ask(url, f"Tell me about topic {i}. It matters.", max_tokens=cap)
            return int(data["usage"]["completion_tokens"])

        lengths = [length(i) for i in range(40)]
        assert lengths == [length(i) for i in range(40)]  # the same prompt, the same length
        assert len(set(lengths)) > 20 and max(lengths) > 3 * sorted(lengths)[20]
        capped = _ask(url, "Tell me about topic 0. It matters.", max_tokens=5)
        assert capped["usage"]["completion_tokens"] == min(5, lengths[0])
        assert capped["choices"][0]["finish_reason"] == ("length" if lengths[0] > 5 else "stop")


def test_process_mode_serves_replicas_from_the_command_line() -> None:
    with EmulatorServer(
        INSTANT,
        mode="process",
        replicas=2,
        balancer="prefix-aware",
        scheduling_policy="priority",
        eviction_interval_s=30.0,
    ) as server:
        assert _ask(server.replica_urls[1], "Hello?", priority=3)["emulator"]["replica"] == 1
        stats = server.stats()
    assert stats["balancer"] == "prefix-aware" and stats["scheduling_policy"] == "priority"
    assert stats["balancer_settings"]["eviction_interval_s"] == 30.0
