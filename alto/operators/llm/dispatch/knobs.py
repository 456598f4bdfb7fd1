"""The dispatcher's knobs as users name them, their defaults, and the check of their values."""

from __future__ import annotations

from typing import Any, Literal, get_args

from alto.errors import UsageError

Order = Literal["root-first", "least-attained", "fifo"]
"""Which waiting call goes first (see :mod:`alto.operators.llm.dispatch.order`)."""

Route = Literal["lineage", "least-loaded", "round-robin"]
"""Which replica serves a call (see :mod:`alto.operators.llm.dispatch.route`)."""

Limit = int | Literal["auto", "server"] | None
"""Calls in flight per replica: an int, ``"auto"`` (learned), ``"server"`` (what the replica
says it serves at once) or ``None`` (no limit)."""

LimitSource = Literal["given", "auto", "server", "default"]
"""Where a replica's limit came from: ``"given"`` (an int or ``None`` passed as
``max_inflight``), ``"auto"`` (learned), ``"server"`` (the replica said) or ``"default"``
(``max_inflight="server"`` and the replica said nothing, or has not been asked yet)."""

ORDERS: tuple[str, ...] = get_args(Order)
ROUTES: tuple[str, ...] = get_args(Route)

DEFAULT_LIMIT = 16
"""The limit per replica under ``max_inflight="server"`` where a replica does not say how many
sequences it serves at once: where vLLM serving an 8B model on one GPU reached its peak
throughput in the sweep the emulator's defaults cite."""

AGING = 30.0
"""Seconds after which a waiting call goes before every call that has waited less
(``least-attained`` only; the other orders cannot starve a call)."""

STALL = 10.0
"""Seconds with calls waiting and none ending after which the oldest waiting call is let
through over the limit (the liveness guard)."""


def check_knobs(max_inflight: Any, order: Any, route: Any) -> None:
    """Raise ValueError naming a dispatcher knob outside its allowed values.

    An order or a route may also be a policy object.
    """
    from alto.operators.llm.dispatch.order import OrderPolicy
    from alto.operators.llm.dispatch.route import RoutePolicy

    if not (
        max_inflight is None
        or max_inflight in ("auto", "server")
        or (type(max_inflight) is int and max_inflight >= 1)
    ):
        msg = (
            f"max_inflight must be an int >= 1, 'auto', 'server' or None (no limit), "
            f"got {max_inflight!r}"
        )
        raise UsageError(msg)
    if order not in ORDERS and not isinstance(order, OrderPolicy):
        msg = (
            f"order must be one of {', '.join(map(repr, ORDERS))} or an OrderPolicy, "
            f"got {order!r}"
        )
        raise UsageError(msg)
    if route not in ROUTES and not isinstance(route, RoutePolicy):
        msg = (
            f"route must be one of {', '.join(map(repr, ROUTES))} or a RoutePolicy, "
            f"got {route!r}"
        )
        raise UsageError(msg)
