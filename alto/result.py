"""The outcome of one root input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from alto.errors import AltoError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    """One root input's outcome, as ``Flow.stream`` yields it.

    Attributes:
        index: position of the input in the inputs given to the run.
        value: the flow's output for it (``None`` when it failed).
        error: why it failed (a :class:`~alto.StageError` or
            :class:`~alto.InputError`), or ``None``.
    """

    index: int
    value: T | None = None
    error: AltoError | None = None

    @property
    def ok(self) -> bool:
        """Whether the input got an output (``error`` is ``None``)."""
        return self.error is None

    def unwrap(self) -> T:
        """The value, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]
