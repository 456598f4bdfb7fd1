"""The dispatcher's policies as objects: orders and routes of one's own, the names they
report, what ``forget`` drops, the lineage re-entry API and the sharing seam.

Stage calls are made the way the engine makes them (a call slot per task), or with
:func:`alto.within_call`, which a process acting for a caller elsewhere uses.
"""

from __future__ import annotations

import pickle
from typing import Any

import anyio
import pytest

import alto
from alto.operators.llm import OpenAIClient
from alto.operators.llm.dispatch import (
    Dispatcher,
    DispatchStats,
    LeastAttained,
    Lineage,
    OrderPolicy,
    RootFirst,
    RootKey,
    RoutePolicy,
    sharing,
)
from alto.operators.llm.dispatch.replica import ServerReplica

pytestmark = pytest.mark.anyio


def info(root: int, *hops: Any, run: str = "run-1") -> alto.CallInfo:
    """The lineage of a call on fragment ``(root, *hops)``, its root submitted at ``root``."""
    return alto.CallInfo(run, "check", ((root, *hops),), (root,), (float(root),))


async def settle() -> None:
    for _ in range(20):
        await anyio.sleep(0)


async def served_in_order(d: Dispatcher, roots: list[int]) -> list[int]:
    """With one call holding the only slot, queue calls of ``roots`` in that order of
    arrival, then free the slot: the roots in the order they were admitted."""
    served: list[int] = []
    gate = anyio.Event()

    async def hold() -> None:
        with alto.within_call(info(9999)):
            async with d.lease():
                await gate.wait()

    async def call(root: int) -> None:
        with alto.within_call(info(root, "claims", 0)):
            async with d.lease() as lease:
                served.append(root)
                lease.done(output_tokens=1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await settle()
        for root in roots:
            tg.start_soon(call, root)
            await settle()
        assert d.stats().queued == len(roots)
        gate.set()
    return served


class NewestFirst(OrderPolicy):
    """The youngest root's calls first (a policy no knob names)."""

    name = "newest-first"

    def key(self, root: RootKey, submitted: float, seq: int) -> Any:
        return -submitted


class Always(RoutePolicy):
    """Every call waits for one replica."""

    name = "always"

    def __init__(self, index: int) -> None:
        self.index = index

    def prefer(self, replicas: Any, root: RootKey, ancestry: Any, prefix: str) -> ServerReplica:
        return replicas[self.index]


async def test_an_order_of_ones_own_ranks_the_waiting_calls() -> None:
    d = Dispatcher(["a"], max_inflight=1, order=NewestFirst())
    assert await served_in_order(d, [1, 3, 2, 3, 1]) == [3, 3, 2, 1, 1]
    assert d.stats().order == "newest-first"


async def test_the_named_orders_are_the_policy_objects() -> None:
    assert isinstance(Dispatcher(["a"]).order_policy, RootFirst)
    d = Dispatcher(["a"], max_inflight=1, order="least-attained", aging=7.0)
    assert isinstance(d.order_policy, LeastAttained) and d.order_policy.aging == 7.0
    assert (d.order, d.stats().order) == ("least-attained", "least-attained")


async def test_a_route_of_ones_own_places_every_stage_call() -> None:
    d = Dispatcher(["a", "b", "c"], max_inflight=4, route=Always(2))
    targets = []
    for root in range(5):
        with alto.within_call(info(root)):
            async with d.lease() as lease:
                targets.append(lease.target)
    assert targets == ["c"] * 5
    assert d.stats().route == "always"


async def test_a_call_outside_a_stage_goes_round_robin_whatever_the_route() -> None:
    d = Dispatcher(["a", "b"], max_inflight=1, route=Always(1))
    targets = []
    for _ in range(4):
        async with d.lease() as lease:
            targets.append(lease.target)
    assert targets == ["a", "b", "a", "b"]


async def test_forget_drops_a_roots_replica_and_service() -> None:
    d = Dispatcher(["a", "b"], max_inflight=4, order="least-attained")
    route = d.route_policy
    order = d.order_policy
    assert isinstance(route, Lineage) and isinstance(order, LeastAttained)
    with alto.within_call(info(5)):
        async with d.lease() as lease:
            lease.done(output_tokens=30)
    assert route.root_at == {("run-1", 5): lease.replica}
    assert order.service == {("run-1", 5): 30}
    d.forget("run-1", 5)
    assert not route.root_at and not order.service


async def test_a_knob_that_is_neither_a_name_nor_a_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="order must be one of .* or an OrderPolicy"):
        Dispatcher(["a"], order=RootFirst)  # type: ignore[arg-type]  # the class
    with pytest.raises(ValueError, match="route must be one of .* or a RoutePolicy"):
        Dispatcher(["a"], route=object())  # type: ignore[arg-type]


async def test_within_call_makes_current_call_say_what_it_was_given() -> None:
    given = alto.CallInfo("run-7", "verify", ((3, "claims", 1), (4, "claims", 0)), (3, 4),
                          (1.5, 2.5))  # fmt: skip
    seen: list[Any] = []

    async def child() -> None:
        seen.append(alto.current_call())

    assert alto.current_call() is None
    with alto.within_call(given):
        assert alto.current_call() == given
        async with anyio.create_task_group() as tg:  # a task it starts sees it too
            tg.start_soon(child)
        with alto.within_call(None):
            assert alto.current_call() is None
        assert alto.current_call() == given
    assert alto.current_call() is None
    assert seen == [given]


async def test_within_call_admits_by_the_lineage_it_carries() -> None:
    d = Dispatcher(["a"], max_inflight=1, order="root-first")
    assert await served_in_order(d, [2, 1, 0, 2]) == [0, 1, 2, 2]


class Recording:
    """A sharing that shares nothing but says what it was asked."""

    def __init__(self) -> None:
        self.shipped_ids: list[str] = []

    def shipped(self, client: Any) -> sharing.Adopt | None:
        self.shipped_ids.append(client._identity)
        return _mark_adopted

    def stats(self, client: Any) -> DispatchStats | None:
        return DispatchStats("shared", "root-first", "lineage", 0, 0, ())


def _mark_adopted(client: Any) -> None:
    client.adopted = True


def test_a_registered_sharing_is_asked_when_a_client_is_pickled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recording = Recording()
    monkeypatch.setattr(sharing, "_registered", [])
    sharing.share_with(recording)
    sharing.share_with(recording)  # once
    client = OpenAIClient("http://127.0.0.1:9/v1", "m")
    copy = pickle.loads(pickle.dumps(client))
    assert recording.shipped_ids == [client._identity]
    assert copy.adopted is True and copy._identity == client._identity
    assert client.dispatch_stats().name == "shared"


def test_with_no_sharing_a_copy_keeps_a_dispatcher_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sharing, "_registered", [])
    client = OpenAIClient(["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"], "m",
                          order="fifo", route="least-loaded")  # fmt: skip
    copy = pickle.loads(pickle.dumps(client))
    assert not hasattr(copy, "adopted")
    assert copy.dispatcher is not client.dispatcher
    assert (copy.dispatcher.order, copy.dispatcher.route) == ("fifo", "least-loaded")
    assert client.dispatch_stats().name == client.dispatcher.name


async def test_a_dispatcher_forgets_each_root_when_it_gets_its_outcome() -> None:
    d = Dispatcher(["a", "b"], max_inflight=4, order="least-attained")
    seen: list[int] = []

    @alto.stage
    async def call(x: int) -> int:
        async with d.lease() as lease:
            lease.done(output_tokens=x)
        seen.append(len(d.route_policy.root_at))  # type: ignore[attr-defined]
        return x

    @alto.flow
    def flow(x: int):
        return call(x)

    assert await flow.run(list(range(6))) == list(range(6))
    assert max(seen) >= 1  # remembered while the root was running
    assert not d.route_policy.root_at  # type: ignore[attr-defined]
    assert not d.order_policy.service  # type: ignore[attr-defined]


def test_an_order_without_a_key_is_refused_when_made() -> None:
    class Unranked(OrderPolicy):
        name = "unranked"

    with pytest.raises(TypeError, match="abstract method 'key'|abstract method key"):
        Unranked()  # type: ignore[abstract]
