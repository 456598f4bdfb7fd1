"""Which waiting call goes first: the order policies.

A policy gives every waiting call a key (lower goes first; ties go by arrival). A batched
call with several roots counts as its oldest root. ``aging`` is how long a call may wait
before it goes ahead of every call that has waited less (``None``: the policy cannot starve
a call, so no aging is needed).

* :class:`RootFirst` (``"root-first"``): the call whose root input was submitted first: the
  application-level FIFO of Parrot (OSDI'24). A waiting call is passed only by calls of roots
  submitted before its own (its key never changes and every later root's is larger), so no
  stream of new roots can hold it back.
* :class:`LeastAttained` (``"least-attained"``): the call whose root has received the fewest
  output tokens so far: Autellix's program-level least-attained service (PLAS, 2025). New
  roots (no service yet) would pass an old root for ever, so it ages calls (default 30 s).
* :class:`Fifo` (``"fifo"``): arrival order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any

from alto.operators.llm.dispatch.knobs import AGING, ORDERS

RootKey = tuple[str, int]
"""A root input: ``(run, root index)``."""


class OrderPolicy(ABC):
    """The base of the order policies: a key per waiting call, lower first.

    Subclass it for an order of your own and pass an instance as ``order=``; one instance
    serves one dispatcher.

    Attributes:
        name: what stats and traces call it.
        aging: seconds after which a waiting call goes before every call that has waited
            less; ``None`` where the order cannot starve a call.
    """

    name = "order"
    aging: float | None = None

    @abstractmethod
    def key(self, root: RootKey, submitted: float, seq: int) -> Any:
        """The rank of a call of ``root`` (submitted at ``submitted``).

        The call is the ``seq``-th the dispatcher saw.
        """

    def served(self, root: RootKey, tokens: int) -> None:  # noqa: B027 (optional hook)
        """A call of ``root`` ended with ``tokens`` output tokens."""

    def forget(self, root: RootKey) -> None:  # noqa: B027 (optional hook)
        """``root`` has its outcome: drop what is kept of it."""


class RootFirst(OrderPolicy):
    """The oldest root input's calls first."""

    name = "root-first"

    def key(self, root: RootKey, submitted: float, seq: int) -> Any:
        """When ``root`` was submitted: the oldest root ranks first."""
        return submitted


class Fifo(OrderPolicy):
    """Arrival order."""

    name = "fifo"

    def key(self, root: RootKey, submitted: float, seq: int) -> Any:
        """The call's arrival number ``seq``: calls rank in arrival order."""
        return seq


class LeastAttained(OrderPolicy):
    """The calls of the root that has received the fewest output tokens first.

    A call that has waited ``aging`` seconds first of all. ``remember``: roots whose service
    is kept, least recently served forgotten first.
    """

    name = "least-attained"

    def __init__(self, aging: float = AGING, remember: int = 4096) -> None:
        self.aging = aging
        self.remember = remember
        self.service: OrderedDict[RootKey, int] = OrderedDict()

    def key(self, root: RootKey, submitted: float, seq: int) -> Any:
        """The output tokens ``root`` has received so far (0 for a root not served yet)."""
        return self.service.get(root, 0)

    def served(self, root: RootKey, tokens: int) -> None:
        """Add ``tokens`` to ``root``'s service; past ``remember`` roots, the least recent goes."""
        service = self.service
        service[root] = service.get(root, 0) + tokens
        service.move_to_end(root)
        if len(service) > self.remember:
            service.popitem(last=False)

    def forget(self, root: RootKey) -> None:
        """Drop ``root``'s service: it has its outcome."""
        self.service.pop(root, None)


def order_policy(order: str | OrderPolicy, *, aging: float, remember: int) -> OrderPolicy:
    """The policy ``order`` names (a policy object is taken as it is)."""
    if isinstance(order, OrderPolicy):
        return order
    if order == "least-attained":
        return LeastAttained(aging, remember)
    if order == "fifo":
        return Fifo()
    assert order == "root-first", f"not one of {ORDERS}: {order!r}"
    return RootFirst()
