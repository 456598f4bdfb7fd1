"""Checking a value against a parameter annotation, where that is checkable.

The compiler only rejects a wiring it can prove wrong: both sides annotated
with concrete classes (or generic aliases of them) that do not fit. Anything
it cannot decide (``Any``, type variables, protocols, unresolved strings)
passes, and the stage sees the value as is.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any

_NUMERIC_WIDENING = {int: (float, complex), float: (complex,), bool: (float, complex)}


def describe(tp: Any) -> str:
    """``tp`` for messages: a plain class's qualified name, else its repr without ``typing.``."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def fits(produced: Any, expected: Any) -> bool | None:
    """Whether values of type ``produced`` fit ``expected``; ``None`` when undecidable."""
    if produced is None or expected is None or produced is Any or expected is Any:
        return None
    if isinstance(produced, (str, typing.TypeVar)) or isinstance(expected, (str, typing.TypeVar)):
        return None
    if expected is object:
        return True
    if _is_union(expected):
        verdicts = [fits(produced, e) for e in typing.get_args(expected)]
        if any(v is True for v in verdicts):
            return True
        return None if any(v is None for v in verdicts) else False
    if _is_union(produced):
        verdicts = [fits(p, expected) for p in typing.get_args(produced)]
        if all(v is True for v in verdicts):
            return True
        return False if all(v is False for v in verdicts) else None
    p_origin = typing.get_origin(produced) or produced
    e_origin = typing.get_origin(expected) or expected
    if not (isinstance(p_origin, type) and isinstance(e_origin, type)):
        return None
    if _validated_at_run_time(e_origin, p_origin):
        return None
    if getattr(e_origin, "_is_protocol", False) and not getattr(
        e_origin, "_is_runtime_protocol", False
    ):
        return None
    try:
        ok = issubclass(p_origin, e_origin) or e_origin in _NUMERIC_WIDENING.get(p_origin, ())
    except TypeError:
        return None
    if not ok:
        return False
    p_args, e_args = typing.get_args(produced), typing.get_args(expected)
    if not p_args or not e_args or p_origin is not e_origin or len(p_args) != len(e_args):
        return True
    if Ellipsis in p_args or Ellipsis in e_args:
        return True
    verdicts = [fits(p, e) for p, e in zip(p_args, e_args)]
    return False if any(v is False for v in verdicts) else True


def _validated_at_run_time(expected: type, produced: type) -> bool:
    """A pydantic model parameter accepts mappings: they are validated when the stage runs."""
    try:
        import pydantic
    except ImportError:  # pragma: no cover - pydantic is a dependency
        return False
    return issubclass(expected, pydantic.BaseModel) and issubclass(
        produced, collections.abc.Mapping
    )


def value_fits(value: Any, expected: Any) -> bool | None:
    """Whether a constant fits ``expected``; only plain classes are checked."""
    if expected is None or expected is Any or isinstance(expected, (str, typing.TypeVar)):
        return None
    if _is_union(expected):
        verdicts = [value_fits(value, e) for e in typing.get_args(expected)]
        if any(v is True for v in verdicts):
            return True
        return None if any(v is None for v in verdicts) else False
    if expected is type(None):
        return value is None
    origin = typing.get_origin(expected) or expected
    if not isinstance(origin, type):
        return None
    if getattr(origin, "_is_protocol", False):
        return None
    if isinstance(value, collections.abc.Mapping) and _validated_at_run_time(origin, dict):
        return None
    try:
        return isinstance(value, origin) or origin in _NUMERIC_WIDENING.get(type(value), ())
    except TypeError:
        return None
