"""The dispatcher of one model endpoint: admission, order, routing and health of its calls.

A :class:`Dispatcher` stands in front of the replicas of one model endpoint (the base URLs of an
:class:`~alto.operators.llm.openai.OpenAIClient`, the instances of a
:class:`~alto.operators.llm.local.LocalLLM`). Every call takes a :class:`Lease` for the time it
is on a replica::

    async with dispatcher.lease(prefix) as lease:
        answer = await send(lease.target, priority=lease.priority)
        lease.done(prompt_tokens=..., cached_tokens=..., output_tokens=...)

It uses what only Alto knows about a call, its lineage (:func:`alto.current_call`):

* **Admission** (``max_inflight``): at most so many calls in flight per replica; an int, ``None``
  (no limit), ``"auto"``, learned online by :class:`VegasLimit` from the observed time per
  output token versus calls in flight, to keep each replica near its throughput knee, or
  ``"server"``: what each replica says it serves at once, asked once before the first stage
  call (an ``ask_limit`` coroutine; ``DEFAULT_LIMIT`` where a replica says nothing). Each replica's
  :attr:`ReplicaStats.limit_source` says where its limit came from.
* **Order** of the calls waiting for admission (``order``, :mod:`.order`): ``"root-first"``,
  ``"least-attained"`` or ``"fifo"``, or an :class:`OrderPolicy` of your own.
* **Routing** across replicas (``route``, :mod:`.route`): ``"lineage"``, ``"least-loaded"`` or
  ``"round-robin"``, or a :class:`RoutePolicy` of your own; when no replica has room, a call
  waits for whichever frees first.
* **Priority**: :attr:`Lease.priority` orders the calls on servers that honour a request
  ``priority`` (vLLM's, lower first): the milliseconds from the first root submission this
  dispatcher saw to the call's root's submission, so older roots come first.
* **Health**: a replica whose call fails with a connection failure or HTTP 5xx is taken out of
  rotation, probed after a backoff (by a ``probe`` coroutine, or by letting one call through)
  and brought back when it answers.

Calls made outside a stage call (``current_call()`` is ``None``: LangGraph, plain asyncio) are
never queued: they go at once, round-robin over the healthy replicas, as without a dispatcher.

Liveness: a limit can deadlock a pipeline whose calls hold their slots while they wait on
each other, e.g. streams whose consumer, a later stage, waits for a slot on the same endpoint
while every slot is held by such streams. When calls wait and no call has ended for ``stall``
seconds (default 10), the oldest waiting call is let through over the limit, and counted.

The modules: :mod:`.dispatcher` (admission and health), :mod:`.order` and :mod:`.route` (the
policies), :mod:`.replica` (per-replica state and the queues), :mod:`.lease`, :mod:`.stats`,
:mod:`.knobs` (the knobs' names, defaults and checks).

Example:
    >>> import anyio
    >>> d = Dispatcher(["http://a:8000/v1", "http://b:8000/v1"], max_inflight=2)
    >>> async def one() -> str:
    ...     async with d.lease("You are a careful fact checker.") as lease:
    ...         lease.done(prompt_tokens=20, output_tokens=5)
    ...         return lease.target
    >>> anyio.run(one)
    'http://a:8000/v1'
    >>> d.stats().replicas[0].calls
    1
"""

from __future__ import annotations

from alto.operators.llm.dispatch.dispatcher import AskLimit, Dispatcher, Probe
from alto.operators.llm.dispatch.knobs import (
    AGING,
    DEFAULT_LIMIT,
    ORDERS,
    ROUTES,
    STALL,
    Limit,
    LimitSource,
    Order,
    Route,
    check_knobs,
)
from alto.operators.llm.dispatch.lease import Lease
from alto.operators.llm.dispatch.order import (
    Fifo,
    LeastAttained,
    OrderPolicy,
    RootFirst,
    RootKey,
)
from alto.operators.llm.dispatch.route import LeastLoaded, Lineage, RoundRobin, RoutePolicy
from alto.operators.llm.dispatch.stats import DispatchStats, ReplicaStats, Sample
from alto.operators.llm.limit import MAX_LIMIT, VegasLimit

__all__ = [
    "AGING",
    "AskLimit",
    "DEFAULT_LIMIT",
    "DispatchStats",
    "Dispatcher",
    "Fifo",
    "Lease",
    "LeastAttained",
    "LeastLoaded",
    "Limit",
    "LimitSource",
    "Lineage",
    "MAX_LIMIT",
    "ORDERS",
    "Order",
    "OrderPolicy",
    "Probe",
    "ROUTES",
    "ReplicaStats",
    "RootFirst",
    "RootKey",
    "RoundRobin",
    "Route",
    "RoutePolicy",
    "STALL",
    "Sample",
    "VegasLimit",
    "check_knobs",
]
