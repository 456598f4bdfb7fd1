"""Type markers that tell the compiler where levels open and close.

They are Protocols over the types the runtime really passes, so type
checkers accept them:

* ``Split[T]``, the return annotation of a stage that opens a level: an async
  generator is an ``AsyncIterator[T]``. A plain ``async def`` annotated
  ``-> Split[T]`` may instead return any iterable of children.
* ``Gather[T]``, a parameter that closes a level: the stage receives the
  children of one parent as a ``list`` (a ``Sequence[T]``), in child order.
* ``GatherStream[T]``, a parameter that closes a level as the children
  arrive: the stage starts with the first child and receives them as an
  ``AsyncIterator[T]`` in arrival order.
"""

from __future__ import annotations

from typing import Iterator, Protocol, TypeVar, overload

T_co = TypeVar("T_co", covariant=True)


class Split(Protocol[T_co]):
    """Return annotation of a stage that yields many children per input."""

    def __aiter__(self) -> Split[T_co]: ...

    async def __anext__(self) -> T_co: ...


class Gather(Protocol[T_co]):
    """Parameter annotation: all children of one parent, as a list in child order."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[T_co]: ...

    @overload
    def __getitem__(self, i: int) -> T_co: ...

    @overload
    def __getitem__(self, i: slice) -> Gather[T_co]: ...

    def __getitem__(self, i: int | slice) -> T_co | Gather[T_co]: ...


class GatherStream(Protocol[T_co]):
    """Parameter annotation: the children of one parent as they arrive."""

    def __aiter__(self) -> GatherStream[T_co]: ...

    async def __anext__(self) -> T_co: ...
