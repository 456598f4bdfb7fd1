"""The Ray backend on a two-node cluster (both nodes on this machine).

Placement by resources, actors that crash mid-run, and per-actor state. A
stage actor is crashed with ``os._exit`` on a chosen fragment, once (a marker
file remembers it happened): the run must end with the reference outputs, or
with the affected inputs failed by a clear error, and never hang.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections import Counter
from typing import Iterator

import anyio
import pytest

import alto
from alto import Gather, Split

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from alto.runtime.ray.stage import ActorLostError  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.ray]

HANG = 120  # seconds: only reached when a crash leaves the run waiting


@pytest.fixture(scope="module")
def cluster():
    """A head node (2 CPUs) and a second node that alone has the custom resource ``far``."""
    if ray.is_initialized():
        ray.shutdown()  # the shared local instance of the other tests; they start it again
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    far = c.add_node(num_cpus=1, resources={"far": 2})
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="WARNING")
    try:
        yield c, far
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture
def on_cluster(cluster, test_code_by_value):
    return cluster


@alto.stage
async def numbers(n: int) -> Split[int]:
    for i in range(n):
        yield i


@alto.stage
async def total(xs: Gather[int]) -> int:
    return sum(xs)


def reference(n: int) -> int:
    return sum(i * i for i in range(n))


@alto.stage
async def node_of(n: int) -> tuple[int, str]:
    return n + 1, ray.get_runtime_context().get_node_id()


@alto.flow
def locate(n: int):
    return node_of(n)


@contextlib.contextmanager
def disconnected(address: str) -> Iterator[None]:
    """This process without a Ray connection (the cluster keeps running); reconnect after."""
    ray.shutdown()
    try:
        yield
    finally:
        if not ray.is_initialized():
            ray.init(address=address, logging_level="WARNING")


async def test_connects_by_address_and_disconnects_after_the_run(on_cluster, monkeypatch):
    c, far = on_cluster
    nodes = {c.head_node.node_id, far.node_id}
    with anyio.fail_after(HANG), disconnected(c.address):
        out = await locate.run([1, 2], backend="ray", address=c.address)
        assert [v for v, _ in out] == [2, 3] and {n for _, n in out} <= nodes
        assert not ray.is_initialized()  # it disconnected, as it connected
        monkeypatch.setenv("RAY_ADDRESS", c.address)
        out = await locate.run([3], backend="ray")
        assert out[0][0] == 4 and out[0][1] in nodes
        assert not ray.is_initialized()
    ((value, node),) = await locate.run([4], backend="ray")  # the cluster is still there
    assert value == 5 and node in nodes


LOCAL_RUN = """
import asyncio, ray, alto

@alto.stage
async def node_of(n: int) -> tuple[int, str]:
    return n + 1, ray.get_runtime_context().get_node_id()

@alto.flow
def locate(n: int):
    return node_of(n)

async def main():
    ((value, node),) = await locate.run([1], backend="ray", init={"num_cpus": 1})
    print(value, node, ray.is_initialized())

asyncio.run(main())
"""


def test_starts_a_local_ray_when_there_is_none_and_stops_it(on_cluster):
    # In a process of its own: Ray cannot reconnect a process to a cluster after it
    # started and stopped a local instance in it.
    c, far = on_cluster
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_RUN], env=env, capture_output=True, text=True, timeout=HANG
    )
    assert done.returncode == 0, done.stderr[-2000:]
    value, node, initialized = done.stdout.split()[-3:]
    assert value == "2"
    assert node not in {c.head_node.node_id, far.node_id}  # a Ray of its own
    assert initialized == "False"  # and it shut that down


async def test_stage_pinned_by_a_custom_resource_runs_on_that_node(on_cluster):
    _, far = on_cluster

    @alto.stage(replicas=2, resources={"far": 1})
    async def where(i: int) -> tuple[int, str]:
        return i * i, ray.get_runtime_context().get_node_id()

    @alto.stage
    async def collect(xs: Gather[tuple[int, str]]) -> tuple[int, list[str]]:
        return sum(x for x, _ in xs), sorted({node for _, node in xs})

    @alto.flow
    def f(n: int):
        return collect(where(numbers(n)))

    inputs = [5, 0, 12, 7]
    with anyio.fail_after(HANG):
        out = await f.run(inputs, backend="ray")
    assert [value for value, _ in out] == [reference(n) for n in inputs]
    assert {node for _, nodes in out for node in nodes} == {far.node_id}
    head = ray.get_runtime_context().get_node_id()
    assert head != far.node_id


async def test_actor_crash_in_a_value_stage_is_replayed(on_cluster, tmp_path):
    marker = str(tmp_path / "crashed")

    @alto.stage(replicas=2)
    async def square(i: int) -> tuple[int, int]:
        if i == 7 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the actor process dies with fragment 7 (and whatever it holds)
        return i * i, os.getpid()

    @alto.stage
    async def add(xs: Gather[tuple[int, int]]) -> tuple[int, int]:
        return sum(x for x, _ in xs), len(xs)

    @alto.flow
    def f(n: int):
        return add(square(numbers(n)))

    inputs = [3, 10, 20, 9, 0, 15]
    stats = alto.RunStats()
    with anyio.fail_after(HANG):
        out = await f.run(inputs, backend="ray", stats=stats)
    assert os.path.exists(marker)  # the crash happened
    assert out == [(reference(n), n) for n in inputs]  # nothing lost, nothing twice
    assert stats.stages["square"].fragments_out == sum(inputs)


async def test_split_that_crashes_after_sending_children_fails_its_input(on_cluster, tmp_path):
    marker = str(tmp_path / "crashed")

    @alto.stage
    async def parts(n: int) -> Split[int]:
        for i in range(n):
            yield i
            if n == 6 and i == 2 and not os.path.exists(marker):
                await anyio.sleep(0.2)  # children 0-2 are on their way downstream
                open(marker, "w").close()
                os._exit(1)

    @alto.stage(replicas=2)
    async def square(i: int) -> int:
        return i * i

    @alto.flow
    def f(n: int):
        return total(square(parts(n)))

    inputs = [4, 6, 3, 8]
    with anyio.fail_after(HANG):
        with pytest.raises(alto.PipelineError) as err:
            await f.run(inputs, backend="ray")
    e = err.value
    assert [e.results[i] for i in (0, 2, 3)] == [reference(n) for n in (4, 3, 8)]
    (failure,) = e.failures
    assert isinstance(failure, alto.StageError)
    assert failure.stage == "parts" and failure.ancestry == (1,) and failure.index == 1
    assert isinstance(failure.cause, ActorLostError)
    assert "3 of its children had already gone downstream" in str(failure)


async def test_fragment_that_always_crashes_its_actor_fails_alone(on_cluster):
    @alto.stage(replicas=2)
    async def poison(i: int) -> int:
        if i == 3:
            os._exit(1)
        return i * i

    @alto.flow
    def f(n: int):
        return total(poison(numbers(n)))

    with anyio.fail_after(HANG):
        with pytest.raises(alto.PipelineError) as err:
            await f.run([3, 5, 2], backend="ray", restarts=1)
    e = err.value
    assert e.results[0] == reference(3) and e.results[2] == reference(2)
    (failure,) = e.failures
    assert failure.stage == "poison" and failure.ancestry == (1, "numbers", 3)
    assert failure.attempts == 2  # run, crash, run again, crash: then it fails
    assert isinstance(failure.cause, ActorLostError) and "died" in str(failure.cause)


_client = None


async def test_state_created_lazily_is_made_once_per_actor(on_cluster):
    @alto.stage(replicas=2)
    async def tag(i: int) -> tuple[int, str]:
        global _client
        if _client is None:
            _client = uuid.uuid4().hex  # stands for a model or a client: made on first use
        return os.getpid(), _client

    @alto.stage
    async def seen(xs: Gather[tuple[int, str]]) -> list[tuple[int, str]]:
        return list(xs)

    @alto.flow
    def f(n: int):
        return seen(tag(numbers(n)))

    with anyio.fail_after(HANG):
        out = await f.run([30, 30], backend="ray")
    calls = Counter(pair for pairs in out for pair in pairs)
    assert sum(calls.values()) == 60
    pids = {pid for pid, _ in calls}
    assert 1 <= len(pids) <= 2 and len(calls) == len(pids)  # one client per actor process


async def test_stage_asking_for_resources_no_node_has_is_named(on_cluster):
    @alto.stage(resources={"nowhere": 1})
    async def lost(i: int) -> int:
        return i

    @alto.flow
    def f(n: int):
        return total(lost(numbers(n)))

    with anyio.fail_after(HANG):
        with pytest.raises(ActorLostError, match=r"'lost' \(resources \{'nowhere': 1\}\)"):
            await f.run([2], backend="ray", start_timeout=3)
