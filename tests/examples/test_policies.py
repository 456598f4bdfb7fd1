"""The dispatcher decides when and where a model call runs, never what it answers: every
order and route gives the same outputs on the apps that call an LLM, on both backends.

The LLM is the serving-timing emulator with no delays (its answers depend on the prompt only),
two replicas, and a limit of two calls per replica.
(ingest makes no LLM calls, so no policy touches it.)
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from alto.bench.emulator import EmulatorConfig, EmulatorServer
from alto.bench.endpoints import replica_urls
from alto.operators.llm import OpenAIClient
from examples.common import Operators, fake_operators

pytestmark = pytest.mark.anyio

APPS = ["factcheck", "multihop", "summarize"]
ORDERS = ["root-first", "least-attained", "fifo"]
ROUTES = ["lineage", "least-loaded", "round-robin"]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def urls() -> Iterator[list[str]]:
    config = EmulatorConfig(time_scale=0.0, fanout="varied")
    # the clients send the dispatcher's priority: the server must be started to honour it
    with EmulatorServer(config, replicas=2, scheduling_policy="priority") as server:
        yield replica_urls(server.base_url, 2)


@pytest.fixture(scope="module")
async def base() -> Operators:
    return await fake_operators()


def with_llm(base: Operators, urls: list[str], **knobs: Any) -> Operators:
    llm = OpenAIClient(urls, "emulated", api_key_env=None, send_priority=True, **knobs)
    return dataclasses.replace(base, llm=llm, labels={**base.labels, "llm": "emulated"})


@pytest.mark.parametrize("name", APPS)
async def test_every_order_and_route_gives_the_same_outputs(
    name: str, base: Operators, urls: list[str]
) -> None:
    app = importlib.import_module(f"examples.{name}")
    inputs = app.load_inputs(4)
    plain = with_llm(base, urls, max_inflight=None, route="round-robin")
    expected = await app.reference(plain, inputs)  # outside a stage: never queued
    # every pair on factcheck; each order and each route once on the others (the pairs of
    # the diagonal), which keeps the test short
    pairs = itertools.product(ORDERS, ROUTES) if name == "factcheck" else zip(ORDERS, ROUTES)
    for order, route in pairs:
        ops = with_llm(base, urls, max_inflight=2, order=order, route=route)
        out = await app.build(ops).run(inputs)
        assert out == expected, (order, route)
        assert sum(r.calls for r in ops.llm.dispatch_stats().replicas) > 0


@pytest.mark.ray
async def test_ray_gives_the_same_outputs_under_two_policies(
    base: Operators, urls: list[str]
) -> None:
    import ray

    from examples import factcheck

    inputs = factcheck.load_inputs(4)
    expected = await factcheck.reference(with_llm(base, urls, max_inflight=None), inputs)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False)  # one cluster for both runs
    try:
        for order, route in (("root-first", "lineage"), ("fifo", "round-robin")):
            ops = with_llm(base, urls, max_inflight=2, order=order, route=route)
            out = await factcheck.build(ops).run(inputs, backend="ray")
            assert out == expected, (order, route)
    finally:
        if started:
            ray.shutdown()
