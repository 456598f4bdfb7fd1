"""Type markers that tell the compiler where levels open and close.

Type checkers see them as the types the runtime really passes, so they
accept stages annotated with them:

* ``Split[T]``, the return annotation of a stage that opens a level: an async
  generator (an ``AsyncIterator[T]``) that yields each child. A plain
  ``async def`` that returns is a :class:`~alto.CompileError` where it is defined.
* ``Gather[T]``, a parameter that closes a level: the stage receives the
  children of one parent as a ``list`` (a ``Sequence[T]``), in child order.
* ``GatherStream[T]``, a parameter that closes a level as the children
  arrive: the stage starts with the first child and receives them as an
  ``AsyncIterator[T]`` in arrival order. It must be the stage's only flow
  value (constants are fine); to combine children with other flow values,
  use ``Gather[T]`` or join them in a stage of their own first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers see: the types the runtime really passes
    from collections.abc import AsyncIterator as GatherStream
    from collections.abc import AsyncIterator as Split
    from collections.abc import Sequence as Gather
else:  # what the compiler recognizes in annotations
    from alto._marker_classes import Gather, GatherStream, Split

__all__ = ["Gather", "GatherStream", "Split"]
