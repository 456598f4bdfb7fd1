"""The service's other routes and options: the plan, health, metrics, bad bodies,
deadlines, the one-run-per-request baseline, and mounting in another app."""

from __future__ import annotations

import contextlib

import anyio
import httpx
import pytest

import alto
from alto.serve import Service
from tests.runtime.conftest import Shared
from tests.serve.conftest import serving
from tests.serve.test_service import letters_flow

pytestmark = pytest.mark.anyio


@alto.stage(replicas=4)
async def slow(text: str, seconds: float) -> str:
    await anyio.sleep(seconds)
    return text


@alto.flow
def sleepy(text: str, seconds: float = 0.0):
    return slow(text, seconds)


async def test_plan_health_and_metrics():
    async with serving(letters_flow(Shared())) as served:
        async with served.client() as http:
            await http.post("/v1/runs", json={"inputs": [{"text": "a bb"}, {"text": "boom"}]})
            plan = (await http.get("/v1/flow")).json()
            health = await http.get("/health")
            metrics = (await http.get("/metrics")).text
    assert plan["name"] == "letters" and plan["levels"] == 2
    assert plan["parameters"] == [{"name": "text", "type": "str"}]
    assert [(s["name"], s["level"]) for s in plan["stages"]] == [
        ("words", 0), ("size", 1), ("total", 0)]
    assert plan["mermaid"].startswith("flowchart")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    lines = metrics.splitlines()
    assert 'alto_serve_requests_total{route="/v1/runs",status="200"} 1' in lines
    assert 'alto_serve_inputs_total{outcome="ok"} 1' in lines
    assert 'alto_serve_inputs_total{outcome="error"} 1' in lines
    assert 'alto_stage_calls_total{stage="size"} 3' in lines
    assert 'alto_stage_errors_total{stage="size"} 1' in lines
    assert 'alto_stage_queue_depth{stage="size"} 0' in lines
    assert "alto_serve_request_seconds_count 1" in lines
    assert 'alto_serve_request_seconds_bucket{le="+Inf"} 1' in lines
    # every sample line belongs to a family declared once
    declared = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(declared) == len(set(declared))


async def test_bodies_that_do_not_fit_are_refused_before_anything_runs():
    async with serving(letters_flow(Shared())) as served:
        async with served.client() as http:
            not_json = await http.post("/v1/runs", content=b"{inputs")
            wrong_type = await http.post("/v1/runs/stream", json={"inputs": [{"text": 3}]})
            missing = await http.post("/v1/runs", json={"inputs": [{}]})
        calls = served.service.pipeline.stats.stages["size"].calls
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "InvalidJSON"
    assert wrong_type.status_code == 422
    assert wrong_type.json()["error"]["field"] == "inputs[0].text"
    assert missing.status_code == 422
    assert "missing parameter" in missing.json()["error"]["message"]
    assert calls == 0


async def test_an_input_past_its_deadline_fails_alone():
    async with serving(sleepy, deadline=0.5) as served:
        async with served.client() as http:
            response = await http.post("/v1/runs", json={"inputs": [
                {"text": "late", "seconds": 60}, {"text": "on time"}]})
    late, on_time = response.json()["results"]
    assert late["error"]["type"] == "DeadlineExceeded" and late["error"]["deadline"] == 0.5
    assert on_time == {"index": 1, "output": "on time"}


async def test_one_run_per_request_answers_the_same():
    async with serving(letters_flow(Shared()), per_request=True) as served:
        async with served.client() as http:
            response = await http.post("/v1/runs", json={"inputs": [
                {"text": "a bb"}, {"text": "boom"}, {"text": "ccc dddd"}]})
            assert served.service.pipeline.inflight == 0
    first, failed, third = response.json()["results"]
    assert (first, third) == ({"index": 0, "output": 3}, {"index": 2, "output": 7})
    assert failed["error"]["stage"] == "size"


async def test_mounted_in_another_app_with_its_lifespan():
    from starlette.applications import Starlette
    from starlette.routing import Mount

    service = Service(sleepy)
    outer = Starlette(routes=[Mount("/alto", service.asgi(lifespan=False))],
                      lifespan=service.lifespan)
    transport = httpx.ASGITransport(app=outer)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(_lifespan(outer))
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://test"))
        response = await http.post("/alto/v1/runs", json={"inputs": [{"text": "hi"}]})
    assert response.json() == {"results": [{"index": 0, "output": "hi"}]}
    assert service.pipeline.closing  # drained when the outer app stopped


@contextlib.asynccontextmanager
async def _lifespan(app):
    """Run an ASGI app's lifespan, as a server would."""
    to_app = anyio.create_memory_object_stream(4)
    from_app = anyio.create_memory_object_stream(4)

    async def run():
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                  to_app[1].receive, from_app[0].send)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await to_app[0].send({"type": "lifespan.startup"})
        assert (await from_app[1].receive())["type"] == "lifespan.startup.complete"
        try:
            yield
        finally:
            await to_app[0].send({"type": "lifespan.shutdown"})
            assert (await from_app[1].receive())["type"] == "lifespan.shutdown.complete"
