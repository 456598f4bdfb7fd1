"""``alto.serve`` end to end: a real service on loopback, real HTTP clients.

Each test runs under every backend (``backend`` fixture): on ``ray`` the stage calls run in
actors and report what they do through ``shared``.
"""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

import alto
from alto import Gather, Split
from tests.serve.conftest import serving, wait_for

pytestmark = pytest.mark.anyio


def letters_flow(probe) -> alto.Flow:
    """``letters(text)``: the sum of the text's word lengths. The word ``boom`` fails its
    input; the word ``hold`` blocks until ``probe``'s event ``release`` is set."""

    @alto.stage
    async def words(text: str) -> Split[str]:
        for word in text.split():
            yield word

    @alto.stage(replicas=8)
    async def size(word: str) -> int:
        await probe.add("calls")
        if word == "boom":
            msg = "a word that fails"
            raise ValueError(msg)
        if word == "hold":
            await probe.add("held")
            try:
                await probe.wait("release")
            except anyio.get_cancelled_exc_class():
                await probe.add("cancelled")
                raise
        return len(word)

    @alto.stage
    async def total(sizes: Gather[int]) -> int:
        return sum(sizes)

    @alto.flow
    def letters(text: str):
        return total(size(words(text)))

    return letters


def expected(text: str) -> int:
    return sum(len(w) for w in text.split())


async def held(probe, n: int) -> None:
    async def enough() -> bool:
        return await probe.get("held") >= n

    await wait_for(enough, 120)


async def cancelled(probe, n: int) -> None:
    """Wait until ``n`` held stage calls have seen their cancellation. Under Ray a
    cancelled actor call learns of it a moment after the driver has let go of its input,
    so the count is awaited, not read."""

    async def seen() -> bool:
        return await probe.get("cancelled") >= n

    await wait_for(seen, 60)
    assert await probe.get("cancelled") == n


async def test_concurrent_clients_get_their_own_results(backend, shared):
    texts = [[f"client {c} input {i} " + "x" * (c * 3 + i) for i in range(3)] for c in range(8)]
    answers: dict[int, dict] = {}
    async with serving(letters_flow(shared), backend=backend) as served:

        async def client(c: int) -> None:
            async with served.client() as http:
                body = {"inputs": [{"text": t} for t in texts[c]]}
                response = await http.post("/v1/runs", json=body)
                assert response.status_code == 200, response.text
                answers[c] = response.json()

        async with anyio.create_task_group() as tg:
            for c in range(8):
                tg.start_soon(client, c)
        calls = served.service.pipeline.stats.stages["size"].calls
    for c in range(8):
        assert answers[c] == {"results": [{"index": i, "output": expected(t)}
                                          for i, t in enumerate(texts[c])]}
    # every request's inputs went through the one pipeline
    assert calls == sum(len(t.split()) for ts in texts for t in ts)


async def test_stream_sends_each_input_then_an_end_event(backend, shared):
    async with serving(letters_flow(shared), backend=backend) as served:
        async with served.client() as http:
            body = {"inputs": [{"text": "a bb"}, {"text": "boom x"}, {"text": "ccc"}]}
            async with http.stream("POST", "/v1/runs/stream", json=body) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                text = (await response.aread()).decode()
    events = [block for block in text.split("\n\n") if block]
    data = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert sorted(d["index"] for d in data) == [0, 1, 2]
    by_index = {d["index"]: d for d in data}
    assert by_index[0] == {"index": 0, "output": 3}
    assert by_index[2] == {"index": 2, "output": 3}
    assert by_index[1]["error"]["stage"] == "size"
    assert events[-1] == 'event: end\ndata: {"inputs": 3, "failed": 1}'


async def test_a_failing_input_leaves_the_others_intact(backend, shared):
    async with serving(letters_flow(shared), backend=backend) as served:
        async with served.client() as http:
            bad, good = await _both(
                http.post("/v1/runs", json={"inputs": [{"text": "aa boom"}, {"text": "bbb"}]}),
                http.post("/v1/runs", json={"inputs": [{"text": "c dd"}]}),
            )
    assert bad.status_code == good.status_code == 200
    first, second = bad.json()["results"]
    assert second == {"index": 1, "output": 3}
    error = first["error"]
    assert first["index"] == 0
    assert error["type"] == "StageError" and error["stage"] == "size"
    assert error["cause"] == "ValueError" and error["attempts"] == 1
    assert error["ancestry"][1:] == ["words", 1]  # (root, split stage, child index)
    assert "a word that fails" in error["message"]
    assert good.json() == {"results": [{"index": 0, "output": 3}]}


@pytest.mark.parametrize("route", ["/v1/runs", "/v1/runs/stream"])
async def test_a_disconnect_cancels_that_roots_stage_calls(backend, shared, route):
    async with serving(letters_flow(shared), backend=backend) as served:
        async with served.client() as http:
            async with anyio.create_task_group() as tg:
                async def staying_then_leaving() -> None:
                    await http.post(route, json={"inputs": [{"text": "a hold"}]})

                tg.start_soon(staying_then_leaving)

                async def leaving() -> None:
                    async with served.client() as other:
                        await other.post(route, json={"inputs": [{"text": "zz hold"}]})

                tg.start_soon(leaving)
                await held(shared, 2)
                tg.cancel_scope.cancel()  # both clients go away mid-request

            async def freed() -> bool:
                return served.service.pipeline.inflight == 0

            await wait_for(freed)
            await cancelled(shared, 2)
            # the service goes on serving
            response = await http.post("/v1/runs", json={"inputs": [{"text": "abc"}]})
            assert response.json() == {"results": [{"index": 0, "output": 3}]}
            metrics = (await http.get("/metrics")).text
    assert 'alto_serve_inputs_total{outcome="cancelled"} 2' in metrics


async def test_429_past_max_inflight_then_admitted_once_slots_free(backend, shared):
    async with serving(letters_flow(shared), backend=backend, max_inflight=2) as served:
        async with served.client() as http, anyio.create_task_group() as tg:
            answers = []

            async def holding() -> None:
                body = {"inputs": [{"text": "hold"}, {"text": "hold x"}]}
                answers.append(await http.post("/v1/runs", json=body))

            tg.start_soon(holding)
            await held(shared, 2)
            refused = await http.post("/v1/runs", json={"inputs": [{"text": "abc"}]})
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["error"]["type"] == "Overloaded"
            too_many = await http.post("/v1/runs", json={"inputs": [{"text": "a"}] * 3})
            assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "inputs"
            await shared.set("release")
        assert answers[0].json() == {"results": [{"index": 0, "output": 4},
                                                 {"index": 1, "output": 5}]}
        async with served.client() as http:
            again = await http.post("/v1/runs", json={"inputs": [{"text": "abc"}]})
    assert again.status_code == 200


async def test_graceful_shutdown_answers_every_accepted_request(backend, shared):
    answers: list[httpx.Response] = []
    async with serving(letters_flow(shared), backend=backend, grace=60) as served:
        async with served.client() as http, anyio.create_task_group() as tg:

            async def holding(text: str) -> None:
                answers.append(await http.post("/v1/runs", json={"inputs": [{"text": text}]}))

            for text in ("hold", "hold yy", "hold zzz"):
                tg.start_soon(holding, text)
            await held(shared, 3)
            served.server.should_exit = True  # shutdown starts with three requests in flight

            async def draining() -> bool:
                return served.service.pipeline.closing

            await wait_for(draining)
            refused = await http.post("/v1/runs", json={"inputs": [{"text": "late"}]})
            assert refused.status_code == 503
            await shared.set("release")
    assert sorted(r.json()["results"][0]["output"] for r in answers) == [4, 6, 7]
    assert all(r.status_code == 200 for r in answers)


async def test_shutdown_past_its_grace_answers_the_rest_as_cancelled(backend, shared):
    async with serving(letters_flow(shared), backend=backend, grace=0.5) as served:
        async with served.client() as http:
            answers = []

            async def holding() -> None:
                answers.append(await http.post("/v1/runs", json={"inputs": [{"text": "hold"},
                                                                            {"text": "ab"}]}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(holding)
                await held(shared, 1)
                served.server.should_exit = True
    (answer,) = answers
    assert answer.status_code == 200
    first, second = answer.json()["results"]
    assert first["error"]["type"] == "InputCancelled"
    assert second == {"index": 1, "output": 2}
    await cancelled(shared, 1)


async def _both(a, b):
    out = [None, None]

    async def put(i, coro):
        out[i] = await coro

    async with anyio.create_task_group() as tg:
        tg.start_soon(put, 0, a)
        tg.start_soon(put, 1, b)
    return out
