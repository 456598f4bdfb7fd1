"""Checking the values bound to parameters: a flow's inputs and a stage's arguments.

One place for both. A value bound to a parameter annotated with a pydantic model is
validated (a dict becomes the model); a flow input is also checked against its plain
annotation. A flow input that does not fit fails its root alone with an
:class:`~alto.errors.InputError` (see :func:`check_inputs`). A stage's arguments are
checked per call, and for a batched stage per fragment (see :func:`argument_check`): a
value that does not validate raises :class:`ArgumentError` naming the stage and the
parameter, which fails that fragment alone (never retried) and never the others of its
batch.
"""

from __future__ import annotations

from typing import Any, Callable

import pydantic

from alto.compiler.plan import Node, Plan
from alto.compiler.spec import ParamKind, element_type_for_batch
from alto.compiler.typecheck import describe, value_fits
from alto.errors import AltoError, InputError, UsageError


class ArgumentError(AltoError, TypeError):
    """A value does not validate against a stage parameter's pydantic model.

    It is the ``cause`` of the fragment's :class:`~alto.errors.StageError`; never retried.
    """

    code = "argument"


def is_model(tp: Any) -> bool:
    """Whether annotation ``tp`` is a pydantic model."""
    return isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


def _validated(model: type[pydantic.BaseModel], value: Any) -> Any:
    """``value`` as a ``model``; raises :class:`ValueError` saying what is wrong."""
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        msg = f"is not a valid {model.__name__}: {problems}"
        raise UsageError(msg) from None


def check_inputs(plan: Plan, index: int, args: dict[str, Any]) -> dict[str, Any]:
    """Root input ``index``'s arguments checked against the flow's annotations.

    Pydantic models are validated from dicts, in place; raises :class:`InputError`.
    """
    for name, expected in plan.annotations.items():
        value = args[name]
        if is_model(expected):
            try:
                args[name] = _validated(expected, value)
            except ValueError as exc:
                raise InputError(index, f"parameter {name!r} {exc}", parameter=name) from None
        elif value_fits(value, expected) is False:
            raise InputError(
                index,
                f"parameter {name!r} expects {describe(expected)}, got {type(value).__name__} "
                f"{_clip(value)}",
                parameter=name,
            )
    return args


def argument_check(node: Node) -> Callable[[Any], Any] | None:
    """What validates the assembled arguments of one call of ``node``, or ``None``.

    For a batched stage, the arguments are one fragment's: a value, or a tuple of values for
    a keyed stage. It returns them validated. ``None`` when no parameter of ``node`` is a
    pydantic model (``list[Model]`` for a batched stage).

    The function raises :class:`ArgumentError` naming the stage, the parameter and what
    pydantic found wrong.
    """
    batched = bool(node.spec.options.batch)
    models = {}
    for p in node.spec.params:
        if p.kind is ParamKind.VALUE:
            # a batched stage annotates list[Model]: each fragment's value is a Model
            model = element_type_for_batch(p.annotation) if batched else p.annotation
            if is_model(model):
                models[p.name] = model
    names = tuple(p.param for p in node.ports)
    checked = [(i, n, models[n]) for i, n in enumerate(names) if n in models]
    if not checked:
        return None
    stage = node.name

    def check(name: str, model: type[pydantic.BaseModel], value: Any) -> Any:
        try:
            return _validated(model, value)
        except ValueError as exc:
            msg = f"parameter {name!r} of stage {stage!r} {exc}"
            raise ArgumentError(msg) from None

    if not node.is_keyed:
        ((_, name, model),) = checked
        return lambda value: check(name, model, value)

    def check_all(values: tuple[Any, ...]) -> tuple[Any, ...]:
        fixed = list(values)
        for i, name, model in checked:
            fixed[i] = check(name, model, fixed[i])
        return tuple(fixed)

    return check_all


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
