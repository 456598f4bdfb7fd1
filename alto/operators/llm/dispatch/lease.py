"""One call's slot on one replica: what a caller holds while its call is on the replica."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from alto.ancestry.ancestry import Ancestry
from alto.operators.llm.errors import LLMConnectionError, LLMServerError

if TYPE_CHECKING:
    from alto.operators.llm.dispatch.dispatcher import Dispatcher

NO_ROOT = ("", -1)
"""The root of a call made outside a stage call."""


@dataclass(slots=True)
class Lease:
    """One call's slot on one replica, from admission until its block exits.

    ``async with dispatcher.lease(prefix) as lease`` waits for admission; inside, send the call
    to ``lease.target`` and report how it went with :meth:`done` or :meth:`failed`. An exception
    leaving the block that is a connection failure or an HTTP 5xx counts as
    ``failed(replica_down=True)`` unless one of them was called.

    Attributes:
        replica: the replica's index in the dispatcher's targets.
        target: the replica's label (``targets[replica]``).
        priority: what to send as the request's ``priority`` (lower first); ``None`` outside
            a stage call.
    """

    replica: int = -1
    target: str = ""
    priority: int | None = None
    _d: Dispatcher | None = field(default=None, repr=False)
    _prefix: str = field(default="", repr=False)
    _root: tuple[str, int] = field(default=NO_ROOT, repr=False)
    _ancestry: Ancestry | tuple[()] = field(default=(), repr=False)  # () while _root is NO_ROOT
    _start: float = field(default=0.0, repr=False)
    _inflight: int = field(default=0, repr=False)
    _tokens: int = field(default=-1, repr=False)  # output tokens once done; -1: not done
    _failed: bool = field(default=False, repr=False)
    _down: bool = field(default=False, repr=False)

    def done(
        self, *, prompt_tokens: int = 0, cached_tokens: int = 0, output_tokens: int = 0
    ) -> None:
        """The call succeeded, with this usage.

        The usage feeds the ``"auto"`` limit, ``least-attained`` and the stats.
        """
        d = self._d
        assert d is not None, "a Lease is made by Dispatcher.lease()"
        d._served(self, prompt_tokens, cached_tokens, output_tokens)

    def failed(self, replica_down: bool) -> None:
        """The call failed; ``replica_down`` for a connection failure or HTTP 5xx.

        The replica then leaves rotation until it answers again.
        """
        self._failed = True
        self._down = self._down or replica_down

    async def __aenter__(self) -> Lease:
        d = self._d
        assert d is not None, "a Lease is made by Dispatcher.lease()"
        await d._acquire(self)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ended(exc)
        await self._give_back()

    async def _give_back(self) -> None:
        """Give the slot back to the dispatcher that made the lease."""
        d = self._d
        assert d is not None
        d._release(self)

    def _ended(self, exc: BaseException | None) -> None:
        """The call left its block with ``exc``.

        An exception not reported by :meth:`done` or :meth:`failed` is a failure (a
        cancellation or a closed generator is none).
        """
        if isinstance(exc, Exception) and not self._failed and self._tokens < 0:
            self._failed = True
            self._down = is_down(exc)


def is_down(exc: BaseException) -> bool:
    """Whether an exception says the replica is down: refused or broken connections, 5xx."""
    if isinstance(exc, LLMServerError):
        return exc.status >= 500
    if isinstance(exc, (LLMConnectionError, ConnectionError)):
        return True
    return type(exc).__name__ in ("ConnectError", "RemoteProtocolError")  # httpx's
