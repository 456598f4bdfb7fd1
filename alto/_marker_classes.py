"""The marker classes the compiler recognizes at run time (see :mod:`alto.markers`)."""

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
