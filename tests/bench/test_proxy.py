"""The balancer proxy in front of real OpenAI-compatible servers (here: emulator replicas)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from alto.bench.emulator import EmulatorConfig, EmulatorServer
from alto.bench.loopback import bind
from alto.bench.proxy import BalancerProxy, request_text


@pytest.fixture(scope="module")
def replicas() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(time_scale=0.01), replicas=2) as server:
        yield server


def chat(base_url: str, text: str, *, stream: bool = False) -> httpx.Response:
    body = {
        "model": "emulated",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 4,
        "stream": stream,
    }
    return httpx.post(f"{base_url}/chat/completions", json=body, timeout=30)


def per_replica(server: EmulatorServer) -> list[int]:
    return [r["requests"] for r in server.stats()["per_replica"]]


def test_request_text_is_what_a_prefix_aware_router_matches() -> None:
    chat_body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Is it true?"}]},
        ]
    }
    assert request_text(json.dumps(chat_body).encode()) == "Be brief.\nIs it true?"
    assert request_text(json.dumps({"prompt": "Once upon"}).encode()) == "Once upon"
    assert request_text(b"not json") == ""
    assert request_text(b"[1, 2]") == ""


def test_round_robin_spreads_requests_and_answers_pass_through(
    replicas: EmulatorServer,
) -> None:
    before = per_replica(replicas)
    with BalancerProxy(replicas.replica_urls, "round-robin") as proxy:
        answers = [chat(proxy.base_url, f"question {i}") for i in range(4)]
        streamed = chat(proxy.base_url, "a streamed one", stream=True)
        stats = proxy.stats()
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.json()["choices"][0]["message"]["content"] for a in answers)
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    after = per_replica(replicas)
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 2]
    assert [u["requests"] for u in stats["upstreams"]] == [3, 2]
    assert [u["in_flight"] for u in stats["upstreams"]] == [0, 0]


def test_prefix_aware_sends_a_shared_prefix_back_to_its_replica(
    replicas: EmulatorServer,
) -> None:
    shared = "You check facts carefully against the evidence given. " * 4
    with BalancerProxy(replicas.replica_urls, "prefix-aware") as proxy:
        chat(proxy.base_url, shared + "Claim one.")
        chat(proxy.base_url, "Something else entirely, with no shared text at all.")
        chat(proxy.base_url, shared + "Claim two.")
        stats = proxy.stats()
    assert [u["requests"] for u in stats["upstreams"]] == [2, 1]
    assert [u["decisions"] for u in stats["upstreams"]] == [
        {"cache_match": 1, "imbalance": 0, "smallest_tree": 1},
        {"cache_match": 0, "imbalance": 0, "smallest_tree": 1},
    ]
    assert stats["settings"]["cache_threshold"] == 0.3 and stats["eviction_passes"] == 0


def test_an_upstream_that_refuses_gets_a_502_naming_it(replicas: EmulatorServer) -> None:
    with bind("127.0.0.1", 0) as sock:
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # nothing listens once closed
    with BalancerProxy([dead, replicas.replica_urls[0]], "round-robin") as proxy:
        refused = chat(proxy.base_url, "first goes to the dead one")
        served = chat(proxy.base_url, "second goes to the live one")
        stats = proxy.stats()
    assert refused.status_code == 502
    assert dead in refused.json()["error"]["message"]
    assert served.status_code == 200
    assert [u["failures"] for u in stats["upstreams"]] == [1, 0]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="policy must be one of"):
        BalancerProxy(["http://127.0.0.1:9/v1"], "random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one upstream"):
        BalancerProxy([])
    with pytest.raises(ValueError, match="eviction_interval_s"):
        BalancerProxy(["http://127.0.0.1:9/v1"], "prefix-aware", eviction_interval_s=-1)
