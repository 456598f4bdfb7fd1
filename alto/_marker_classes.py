"""The marker classes the compiler recognizes at run time (see :mod:`alto.markers`)."""

from __future__ import annotations

from typing import Iterator, Protocol, TypeVar, overload

T_co = TypeVar("T_co", covariant=True)


class Split(Protocol[T_co]):
    """Return annotation of a stage that yields many children per input.

    The stage is an async generator: each ``yield`` emits one child, as soon as
    it is known. A plain ``async def`` that returns its children is a
    :class:`~alto.CompileError` where the stage is defined.
    """

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
    """Parameter annotation: the children of one parent as they arrive.

    The stage starts with the parent's first child and iterates the children
    (``async for``) in arrival order. A streaming gather must be the stage's
    only flow value: a stage cannot combine a ``GatherStream`` with other flow
    values (a join, or a broadcast from an outer level); constants are fine.
    Doing so is a :class:`~alto.CompileError` when the flow is traced. To use
    other values, gather with ``Gather[T]`` (all children at once, then joined),
    or join the children with those values in a stage of their own first. A
    ``GatherStream`` stage also cannot be batched (``batch=``) or yield children.

    Example:
        >>> import alto
        >>> from alto import GatherStream
        >>> @alto.stage
        ... async def count(words: GatherStream[str], minimum: int = 1) -> int:
        ...     return sum([1 async for w in words if len(w) >= minimum])
    """

    def __aiter__(self) -> GatherStream[T_co]: ...

    async def __anext__(self) -> T_co: ...
