"""OpenAIClient through its dispatcher: replicas, priority, usage, failed replicas, pickling.

The servers are an httpx MockTransport (per replica host: answers, refusals, 503s), so every
request is seen and nothing depends on timing.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import httpx
import pytest

from alto.lineage import CallSite, fresh_slot
from alto.operators.llm import OpenAIClient
from alto.operators.llm.dispatch import DEFAULT_LIMIT, MAX_LIMIT

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "Is the sky blue?"}]
USAGE = {
    "prompt_tokens": 40, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 32}
}


class Replicas:
    """Scripted replicas ``http://r0`` ... : ``down`` refuse connections, ``busy`` answer 503."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.busy: set[str] = set()
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down:
            msg = "connection refused"
            raise httpx.ConnectError(msg, request=request)
        if request.method == "GET":
            return httpx.Response(503 if host in self.busy else 200, json={"data": []})
        body = json.loads(request.content)
        self.seen.append((host, body))
        if host in self.busy:
            return httpx.Response(503, text="overloaded")
        if body.get("stream"):
            chunks = [
                {"choices": [{"delta": {"content": "yes"}, "finish_reason": None}]},
                {"choices": [{"delta": {}, "finish_reason": "stop"}]},
                {"choices": [], "usage": USAGE},
            ]
            text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
        choice: dict[str, Any] = {"finish_reason": "stop"}
        if request.url.path.endswith("/chat/completions"):
            choice["message"] = {"content": "yes"}
        else:
            choice["text"] = "yes"
        return httpx.Response(200, json={"choices": [choice], "usage": USAGE})


def client(replicas: Replicas, n: int = 1, **kw: Any) -> OpenAIClient:
    urls: Any = "http://r0" if n == 1 else [f"http://r{i}" for i in range(n)]
    kw.setdefault("backoff", 0.001)
    kw.setdefault("max_backoff", 0.002)
    return OpenAIClient(
        urls, "m", api_key_env=None, transport=httpx.MockTransport(replicas), **kw
    )


def in_stage(root: int) -> None:
    slot = fresh_slot()
    slot.site = CallSite("run", "check", {0: 10.0, 1: 10.5, 2: 11.0})
    slot.one = (root, "claims", 0)


async def test_priority_is_sent_only_when_told_and_only_for_stage_calls() -> None:
    replicas = Replicas()
    told = client(replicas, send_priority=True)
    untold = client(replicas)
    fresh_slot()
    await told.chat(USER)  # outside a stage: no priority
    for root in (0, 2):
        in_stage(root)
        await told.chat(USER)
        await untold.chat(USER)
    bodies = [body for _, body in replicas.seen]
    assert "priority" not in bodies[0]
    assert [b.get("priority") for b in bodies[1:]] == [0, None, 1000, None]


async def test_usage_is_read_from_answers_and_streams() -> None:
    replicas = Replicas()
    llm = client(replicas)
    assert await llm.chat(USER) == "yes"
    assert await llm.complete("Is the sky blue?") == "yes"
    assert [p async for p in llm.stream(USER)] == ["yes"]
    assert replicas.seen[-1][1]["stream_options"] == {"include_usage": True}
    stats = llm.dispatch_stats()
    (replica,) = stats.replicas
    assert (replica.calls, replica.prompt_tokens, replica.cached_tokens) == (3, 120, 96)
    assert replica.output_tokens == 9 and stats.cached_share == 0.8 and replica.inflight == 0


async def test_structured_goes_through_the_dispatcher() -> None:
    import pydantic

    class Answer(pydantic.BaseModel):
        ok: bool

    replicas = Replicas()

    def handler(request: httpx.Request) -> httpx.Response:
        replicas.seen.append((request.url.host, json.loads(request.content)))
        answer = {"choices": [{"message": {"content": '{"ok": true}'}, "finish_reason": "stop"}]}
        return httpx.Response(200, json={**answer, "usage": USAGE})

    llm = OpenAIClient(
        ["http://r0", "http://r1"], "m", api_key_env=None, transport=httpx.MockTransport(handler)
    )
    assert (await llm.structured(USER, Answer)).ok is True
    assert sum(r.calls for r in llm.dispatch_stats().replicas) == 1


async def test_a_refusing_replica_is_skipped_and_comes_back() -> None:
    replicas = Replicas()
    replicas.down.add("r0")
    llm = client(replicas, n=2, route="round-robin")
    now = [0.0]
    llm.dispatcher.clock = lambda: now[0]
    fresh_slot()
    for _ in range(4):  # the first call's retry goes to r1; then r0 is out of rotation
        assert await llm.chat(USER) == "yes"
    assert {host for host, _ in replicas.seen} == {"r1"}
    r0, r1 = llm.dispatch_stats().replicas
    assert (r0.failures, r0.healthy, r1.healthy, r1.calls) == (1, False, True, 4)
    replicas.down.clear()
    now[0] += 60.0  # past its backoff: probed (GET /models) and back in rotation
    for _ in range(4):
        await llm.chat(USER)
    assert llm.dispatch_stats().replicas[0].healthy
    assert [host for host, _ in replicas.seen[4:]].count("r0") == 2


async def test_a_503_replica_is_taken_out_and_the_retry_goes_elsewhere() -> None:
    replicas = Replicas()
    replicas.busy.add("r0")
    llm = client(replicas, n=2, route="round-robin")
    fresh_slot()
    assert await llm.chat(USER) == "yes"
    assert [host for host, _ in replicas.seen] == ["r0", "r1"]
    r0, _ = llm.dispatch_stats().replicas
    assert (r0.failures, r0.healthy) == (1, False)


async def test_every_replica_down_surfaces_the_error() -> None:
    from alto.operators.llm import LLMConnectionError

    replicas = Replicas()
    replicas.down.update({"r0", "r1"})
    llm = client(replicas, n=2, max_retries=2)
    in_stage(0)
    with pytest.raises(LLMConnectionError):
        await llm.chat(USER)
    assert sum(r.failures for r in llm.dispatch_stats().replicas) == 3


def test_knobs_are_checked_and_pickled() -> None:
    with pytest.raises(ValueError, match="order must be one of .*got 'newest'"):
        OpenAIClient("http://a", "m", order="newest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="route must be one of .*got 'hash'"):
        OpenAIClient("http://a", "m", route="hash")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_inflight must be .*got -2"):
        OpenAIClient("http://a", "m", max_inflight=-2)
    with pytest.raises(ValueError, match="base_url must start with http"):
        OpenAIClient(["http://a", "ftp://b"], "m")
    llm = OpenAIClient(
        ["http://a:1", "http://b:2/v1"], "m", max_inflight=6, order="fifo",
        route="least-loaded", send_priority=True, max_concurrency=9,
    )
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.base_urls == ("http://a:1/v1", "http://b:2/v1") == llm.base_urls
    d = copy.dispatcher
    assert (d.order, d.route, d.max_inflight, copy.send_priority) == (
        "fifo", "least-loaded", 6, True)
    assert [r.limit for r in copy.dispatch_stats().replicas] == [6, 6]


def test_max_concurrency_follows_the_replicas_and_their_limit() -> None:
    four = [f"http://r{i}:1" for i in range(4)]
    # a user who passes only URLs gets every replica's default limit of stage calls
    assert OpenAIClient(four, "m").max_concurrency == 4 * DEFAULT_LIMIT
    assert OpenAIClient(four[:3], "m", max_inflight=2).max_concurrency == 6
    assert OpenAIClient(four[:1], "m", max_inflight=None).max_concurrency == DEFAULT_LIMIT
    auto = OpenAIClient(four[:1], "m", max_inflight="auto")
    assert auto.max_concurrency == MAX_LIMIT
    vegas = auto.dispatcher.stats().replicas[0]
    assert (vegas.limit, auto.dispatcher._replicas[0].vegas.max_limit) == (
        DEFAULT_LIMIT, MAX_LIMIT)
    # "auto" learns within each replica's share of the cap
    capped = OpenAIClient(four[:2], "m", max_inflight="auto", max_concurrency=8)
    assert [r.vegas.max_limit for r in capped.dispatcher._replicas] == [4, 4]
    assert [r.limit for r in capped.dispatch_stats().replicas] == [4, 4]
    with pytest.raises(ValueError, match="max_concurrency must be an int >= 1 or None, got 0"):
        OpenAIClient("http://a", "m", max_concurrency=0)
    copy = pickle.loads(pickle.dumps(capped))
    assert copy.max_concurrency == 8
