"""OpenAIClient's limit per replica from what the server says (``max_inflight="server"``).

The servers are httpx MockTransports: llama.cpp's ``GET /props`` (``total_slots``), vLLM's
``GET /inference/v1/config`` (``scheduler.max_num_seqs``), or neither. The real
``llama-server`` is in test_llama_server_native.py.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from alto.lineage import CallSite, fresh_slot
from alto.operators.llm import OpenAIClient
from alto.operators.llm.dispatch import DEFAULT_LIMIT, Dispatcher
from alto.operators.llm.observe import dispatch_table, stats_dict

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "Is the sky blue?"}]
ANSWER = {"choices": [{"message": {"content": "yes"}, "finish_reason": "stop"}]}


class Servers:
    """Scripted servers ``http://r0`` ...: what each answers to GETs, by path; POSTs answer
    after ``delay`` seconds, and the most POSTs in flight at once per host are counted."""

    def __init__(self, gets: dict[str, dict[str, Any]], delay: float = 0.0) -> None:
        self.gets = gets  # host -> {path: JSON body}; other paths 404
        self.delay = delay
        self.asked: list[tuple[str, str]] = []
        self.inflight: dict[str, int] = {}
        self.most: dict[str, int] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if request.method == "GET":
            self.asked.append((host, request.url.path))
            body = self.gets.get(host, {}).get(request.url.path)
            return httpx.Response(404, text="not found") if body is None else httpx.Response(
                200, json=body
            )
        json.loads(request.content)
        self.inflight[host] = self.inflight.get(host, 0) + 1
        self.most[host] = max(self.most.get(host, 0), self.inflight[host])
        try:
            await anyio.sleep(self.delay)
        finally:
            self.inflight[host] -= 1
        return httpx.Response(200, json=ANSWER)


def client(servers: Servers, n: int = 1, **kw: Any) -> OpenAIClient:
    urls: Any = "http://r0/v1" if n == 1 else [f"http://r{i}/v1" for i in range(n)]
    return OpenAIClient(
        urls, "m", api_key_env=None, transport=httpx.MockTransport(servers), **kw
    )


def in_stage(root: int) -> None:
    slot = fresh_slot()
    slot.site = CallSite("run", "check", {root: 10.0 + root})
    slot.one = (root, "claims", 0)


async def stage_call(llm: OpenAIClient, root: int = 0) -> str:
    in_stage(root)
    return await llm.chat(USER, max_tokens=4)


def limits(llm: OpenAIClient) -> list[tuple[int | None, str]]:
    return [(r.limit, r.limit_source) for r in llm.dispatch_stats().replicas]


async def test_llama_servers_slot_count_is_the_limit_asked_once_at_the_first_stage_call() -> None:
    servers = Servers({"r0": {"/props": {"total_slots": 3, "model_path": "x.gguf"}}})
    async with client(servers) as llm:
        assert limits(llm) == [(DEFAULT_LIMIT, "default")]  # not asked yet
        fresh_slot()  # outside a stage: held to no limit, so nothing is asked
        assert await llm.chat(USER) == "yes"
        assert servers.asked == []
        assert await stage_call(llm) == "yes"
        assert await stage_call(llm, 1) == "yes"
        assert servers.asked == [("r0", "/props")]  # the server root, once
        assert limits(llm) == [(3, "server")]


async def test_vllms_max_num_seqs_is_the_limit_when_there_is_no_props() -> None:
    config = {"scheduler": {"max_num_seqs": 48, "max_num_batched_tokens": 8192}}
    servers = Servers({"r0": {"/inference/v1/config": config}})
    async with client(servers) as llm:
        await stage_call(llm)
    assert servers.asked == [("r0", "/props"), ("r0", "/inference/v1/config")]
    assert limits(llm) == [(48, "server")]


async def test_a_server_that_says_nothing_keeps_the_default() -> None:
    servers = Servers({"r0": {"/props": {"total_slots": "4"}, "/inference/v1/config": {}}})
    async with client(servers) as llm:
        await stage_call(llm)
    assert limits(llm) == [(DEFAULT_LIMIT, "default")]


@pytest.mark.parametrize("slots", [0, -2, True, 2.0, None])
async def test_a_slot_count_that_is_no_positive_int_is_ignored(slots: Any) -> None:
    servers = Servers({"r0": {"/props": {"total_slots": slots}}})
    async with client(servers) as llm:
        await stage_call(llm)
    assert limits(llm) == [(DEFAULT_LIMIT, "default")]


async def test_an_int_given_wins_and_nothing_is_asked() -> None:
    servers = Servers({"r0": {"/props": {"total_slots": 1}}})
    async with client(servers, max_inflight=5) as llm:
        await stage_call(llm)
    assert servers.asked == []
    assert limits(llm) == [(5, "given")]
    async with client(servers, max_inflight=None) as llm:
        await stage_call(llm)
    assert servers.asked == [] and limits(llm) == [(None, "given")]


async def test_each_replica_gets_its_own_answer() -> None:
    servers = Servers({"r0": {"/props": {"total_slots": 1}}, "r2": {"/props": {"total_slots": 8}}})
    async with client(servers, n=3) as llm:
        await stage_call(llm)
        stats = llm.dispatch_stats()
    assert limits(llm) == [(1, "server"), (DEFAULT_LIMIT, "default"), (8, "server")]
    assert [r["limit_source"] for r in stats_dict(stats)["replicas"]] == [
        "server", "default", "server"
    ]
    last = dispatch_table(stats).splitlines()[-1]
    assert last == "limit from: http://r0/v1 server, http://r1/v1 default, http://r2/v1 server"


async def test_a_one_slot_server_gets_one_call_at_a_time() -> None:
    servers = Servers({"r0": {"/props": {"total_slots": 1}}}, delay=0.02)
    async with client(servers) as llm:

        async def one(root: int) -> None:
            await stage_call(llm, root)

        async with anyio.create_task_group() as tg:
            for root in range(6):  # all arrive before the server has been asked
                tg.start_soon(one, root)
    assert servers.asked == [("r0", "/props")]  # asked once, while the others waited
    assert servers.most == {"r0": 1}
    assert llm.dispatch_stats().over_limit == 0


async def test_a_four_slot_server_gets_four_calls_at_once() -> None:
    servers = Servers({"r0": {"/props": {"total_slots": 4}}}, delay=0.05)
    async with client(servers) as llm:
        async with anyio.create_task_group() as tg:
            for root in range(8):
                tg.start_soon(stage_call, llm, root)
    assert servers.most == {"r0": 4}


async def test_an_unreachable_replica_keeps_the_default_and_the_others_are_asked() -> None:
    servers = Servers({"r1": {"/props": {"total_slots": 2}}})

    def route(request: httpx.Request) -> Any:
        if request.url.host == "r0":
            msg = "connection refused"
            raise httpx.ConnectError(msg, request=request)
        return servers(request)

    llm = OpenAIClient(["http://r0/v1", "http://r1/v1"], "m", api_key_env=None,
                       transport=httpx.MockTransport(route), max_retries=0)
    async with llm:
        await llm.dispatcher.ask_limits()
    assert limits(llm) == [(DEFAULT_LIMIT, "default"), (2, "server")]


async def test_dispatcher_asks_once_and_an_error_counts_as_saying_nothing() -> None:
    asked: list[int] = []

    async def ask(replica: int) -> int | None:
        asked.append(replica)
        if replica == 1:
            msg = "no answer"
            raise RuntimeError(msg)
        return 2

    d = Dispatcher(["a", "b"], max_inflight="server", ask_limit=ask, default_limit=3)
    await d.ask_limits()
    await d.ask_limits()
    assert sorted(asked) == [0, 1]
    assert [(r.limit, r.limit_source) for r in d.stats().replicas] == [
        (2, "server"), (3, "default")
    ]


async def test_server_without_a_way_to_ask_keeps_the_default_and_auto_cannot_be_set() -> None:
    d = Dispatcher(["a"], max_inflight="server")
    await d.ask_limits()  # nothing to ask
    assert [(r.limit, r.limit_source) for r in d.stats().replicas] == [(DEFAULT_LIMIT, "default")]
    auto = Dispatcher(["a"], max_inflight="auto")
    assert auto.stats().replicas[0].limit_source == "auto"
    with pytest.raises(ValueError, match="learned"):
        auto.set_limit(0, 3)
    with pytest.raises(ValueError, match="default_limit must be an int >= 1"):
        Dispatcher(["a"], max_inflight="server", default_limit=0)
