"""What the compiler knows of a stage: read once from its signature and hints.

A :class:`StageSpec` is the frozen description of one decorated function:
its parameters (plain values, ``Gather[T]`` or ``GatherStream[T]``), whether
it opens a level (``-> Split[T]``) and its options. Both the compiler and
the runtimes read it; neither looks at the function again.
"""

from __future__ import annotations

import collections.abc
import enum
import inspect
import math
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from alto._marker_classes import Gather, GatherStream, Split
from alto.compiler.typecheck import describe, fits
from alto.errors import CompileError

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class ParamKind(enum.Enum):
    """How a stage parameter takes its values.

    One value per call, or the children of a level gathered (as a list, or as a stream).
    """

    VALUE = "value"
    GATHER = "gather"
    GATHER_STREAM = "gather_stream"


class OutputKind(enum.Enum):
    """What a call of a stage produces: one value, or (a split) one child per yield."""

    VALUE = "value"  # one output per call
    SPLIT = "split"  # async generator: one child per yield


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter of a stage."""

    name: str
    kind: ParamKind
    annotation: Any  # element type for gathers; ``None`` when not annotated
    has_default: bool
    default: Any = None
    keyword_only: bool = False


@dataclass(frozen=True, slots=True)
class StageOptions:
    """Execution options of a stage; see :func:`alto.stage` for their meaning."""

    replicas: int = 1
    batch: int | None = None
    batch_timeout: float = 0.0
    buffer: int = 8
    timeout: float | None = None
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    retry_backoff: float = 0.05
    resources: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True, eq=False)
class StageSpec:
    """The frozen description of one stage function."""

    name: str
    fn: Callable[..., Any]
    params: tuple[ParamSpec, ...]
    output: OutputKind
    output_annotation: Any  # element type for splits; ``None`` when not annotated
    options: StageOptions
    where: str

    @property
    def is_split(self) -> bool:
        """Whether the stage opens a level (a split: one child per yield)."""
        return self.output is not OutputKind.VALUE

    def param(self, name: str) -> ParamSpec | None:
        """The parameter named ``name``, or ``None`` when the stage has none."""
        for p in self.params:
            if p.name == name:
                return p
        return None


def where_defined(fn: Callable[..., Any]) -> str:
    """``file:line`` where ``fn`` was defined (``"<unknown>"`` when it has no code object)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return "<unknown>"
    return f"{code.co_filename}:{code.co_firstlineno}"


def where_called() -> str:
    """``file:line`` of the first frame outside the ``alto`` package."""
    frame = sys._getframe(1)
    alto_dir = os.path.dirname(os.path.dirname(__file__))  # this file is alto/compiler/spec.py
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(alto_dir):
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "<unknown>"


def _resolve_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """Type hints with string annotations evaluated where possible."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    globalns = getattr(fn, "__globals__", {})
    for name, ann in getattr(fn, "__annotations__", {}).items():
        if isinstance(ann, str):
            try:
                ann = eval(ann, globalns)  # noqa: S307 - the user's own annotation text
            except Exception:
                pass
        hints[name] = ann
    return hints


def _marker(ann: Any) -> tuple[Any, Any]:
    """Split an annotation into (marker class or None, element type)."""
    if isinstance(ann, str):  # unresolvable forward reference: read the text
        m = re.match(r"^\s*(?:alto\.)?(Split|Gather|GatherStream)\s*\[(.*)\]\s*$", ann)
        if m:
            marker = {"Split": Split, "Gather": Gather, "GatherStream": GatherStream}[m.group(1)]
            return marker, None
        return None, None
    origin = typing.get_origin(ann)
    if origin in (Split, Gather, GatherStream):
        args = typing.get_args(ann)
        return origin, (args[0] if args else None)
    if ann in (Split, Gather, GatherStream):
        return ann, None
    return None, ann


def _check_options(name: str, where: str, options: StageOptions) -> None:
    def bad(opt: str, value: Any, expected: str) -> CompileError:
        return CompileError(
            f"stage {name!r}: option {opt}={value!r} is invalid; expected {expected}",
            stage=name,
            parameter=opt,
            where=where,
        )

    if not isinstance(options.replicas, int) or options.replicas < 1:
        msg = "replicas"
        raise bad(msg, options.replicas, "an int >= 1")
    if options.batch is not None and (not isinstance(options.batch, int) or options.batch < 1):
        msg = "batch"
        raise bad(msg, options.batch, "None or an int >= 1")
    if not isinstance(options.buffer, int) or options.buffer < 1:
        msg = "buffer"
        raise bad(msg, options.buffer, "an int >= 1")
    if options.timeout is not None and not (options.timeout > 0 and math.isfinite(options.timeout)):
        msg = "timeout"
        raise bad(msg, options.timeout, "None or a finite number of seconds > 0")
    if not isinstance(options.retries, int) or options.retries < 0:
        msg = "retries"
        raise bad(msg, options.retries, "an int >= 0")
    if not options.batch_timeout >= 0:
        msg = "batch_timeout"
        raise bad(msg, options.batch_timeout, "a number of seconds >= 0")
    if not options.retry_backoff >= 0:
        msg = "retry_backoff"
        raise bad(msg, options.retry_backoff, "a number of seconds >= 0")
    for exc in options.retry_on:
        if not (isinstance(exc, type) and issubclass(exc, BaseException)):
            msg = "retry_on"
            raise bad(msg, options.retry_on, "exception classes")


def read_stage(fn: Callable[..., Any], name: str | None, options: StageOptions) -> StageSpec:
    """Build the spec of ``fn``; raises :class:`CompileError` on what cannot run."""
    where = where_defined(fn)
    stage_name = name if name is not None else getattr(fn, "__name__", None)
    if not isinstance(stage_name, str) or not _NAME_RE.match(stage_name):
        msg = f"stage name {stage_name!r} is invalid; expected letters, digits, '_' or '-'"
        raise CompileError(
            msg,
            stage=str(stage_name),
            where=where,
            fix="pass name='my_stage' to @alto.stage",
        )
    _check_options(stage_name, where, options)

    is_agen = inspect.isasyncgenfunction(fn)
    if not (is_agen or inspect.iscoroutinefunction(fn)):
        kind = "generator" if inspect.isgeneratorfunction(fn) else "plain function"
        msg = f"stage {stage_name!r} is a {kind}; stages must be 'async def' functions"
        raise CompileError(
            msg,
            stage=stage_name,
            where=where,
            fix=f"write 'async def {getattr(fn, '__name__', stage_name)}(...)'"
            + (" and keep the 'yield'" if kind == "generator" else ""),
        )

    hints = _resolve_hints(fn)
    out_marker, out_elem = _marker(hints.get("return"))
    if out_marker is Split and not is_agen:
        fn_name = getattr(fn, "__name__", stage_name)
        msg = (
            f"stage {stage_name!r} is annotated -> Split[...] but returns instead of "
            "yielding; expected an async generator that yields each child, found an "
            "'async def' that returns a value"
        )
        raise CompileError(
            msg,
            stage=stage_name,
            where=where,
            fix=f"use `yield` for each child, e.g. 'for child in ...: yield child' in "
            f"{fn_name}; or, for one output per input, annotate the return with its type",
        )
    output = OutputKind.SPLIT if is_agen else OutputKind.VALUE
    if out_marker in (Gather, GatherStream):
        msg = (
            f"stage {stage_name!r} is annotated to return {out_marker.__name__}[...]; "
            "Gather marks a parameter that closes a level, not a return value"
        )
        raise CompileError(
            msg,
            stage=stage_name,
            where=where,
            fix="annotate the return as the gathered result's type, e.g. -> list[str]",
        )
    if output is OutputKind.SPLIT and out_marker is None and hints.get("return") is not None:
        out_elem = None  # AsyncIterator[T] and friends: element type not checked

    params: list[ParamSpec] = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            msg = (
                f"stage {stage_name!r} takes {'*' if p.kind is p.VAR_POSITIONAL else '**'}"
                f"{p.name}; stage inputs must be named parameters"
            )
            raise CompileError(
                msg,
                stage=stage_name,
                parameter=p.name,
                where=where,
                fix="list each input as its own parameter",
            )
        marker, elem = _marker(hints.get(p.name))
        if marker is Split:
            msg = (
                f"stage {stage_name!r}: parameter {p.name!r} is annotated Split[...]; "
                "Split marks the return of a stage that yields children"
            )
            raise CompileError(
                msg,
                stage=stage_name,
                parameter=p.name,
                where=where,
                fix="annotate the parameter with the child type; to collect children use Gather[T]",
            )
        if marker is Gather:
            param_kind = ParamKind.GATHER
        elif marker is GatherStream:
            param_kind = ParamKind.GATHER_STREAM
        else:
            param_kind = ParamKind.VALUE
        params.append(
            ParamSpec(
                name=p.name,
                kind=param_kind,
                annotation=elem,
                has_default=p.default is not p.empty,
                default=None if p.default is p.empty else p.default,
                keyword_only=p.kind is p.KEYWORD_ONLY,
            )
        )

    if options.batch is not None:
        if output is not OutputKind.VALUE:
            msg = (
                f"stage {stage_name!r} has batch={options.batch} and yields children; "
                "batching applies to stages that return one value per input"
            )
            raise CompileError(
                msg,
                stage=stage_name,
                where=where,
                fix="split in one stage and batch the next one",
            )
        if any(p.kind is ParamKind.GATHER_STREAM for p in params):
            msg = f"stage {stage_name!r} has batch={options.batch} and a GatherStream parameter"
            raise CompileError(
                msg,
                stage=stage_name,
                where=where,
                fix="use Gather[T] (a list per parent) in a batched stage",
            )
        for spec in params:
            if not spec.has_default:  # a default is a list only if the flow passes it
                check_batch_param(stage_name, options.batch, spec, where)
        returned = hints.get("return")
        verdicts = {fits(list, returned), fits(tuple, returned)}  # a list or a tuple is taken
        if returned is not None and verdicts == {False}:
            msg = (
                f"stage {stage_name!r} has batch={options.batch}, so it returns a list with "
                f"one result per input; expected a list annotation, found -> {describe(returned)}"
            )
            raise CompileError(
                msg,
                stage=stage_name,
                where=where,
                fix=f"annotate the return -> list[{describe(returned)}] and return one result "
                "per input, or drop batch=",
            )
    if output is not OutputKind.VALUE and any(p.kind is ParamKind.GATHER_STREAM for p in params):
        msg = f"stage {stage_name!r} both reads a GatherStream and yields children"
        raise CompileError(
            msg,
            stage=stage_name,
            where=where,
            fix="gather in one stage and split in the next one",
        )
    return StageSpec(
        name=stage_name,
        fn=fn,
        params=tuple(params),
        output=output,
        output_annotation=out_elem,
        options=options,
        where=where,
    )


def check_batch_param(stage: str, batch: int, p: ParamSpec, where: str) -> None:
    """A batched stage receives each parameter as a list (one value per fragment).

    Raises :class:`CompileError` when ``p`` is annotated with a type a list is
    clearly not (``str``, ``int``, a model class ...): the function would be
    written for one value and called with many. ``Gather[T]`` parameters receive
    a list with one group of children per parent, so ``T`` is a list type too.
    Unannotated parameters, ``Any`` and what cannot be decided pass.
    """
    if p.kind is ParamKind.GATHER_STREAM or fits(list, p.annotation) is not False:
        return
    shown = describe(p.annotation)
    if p.kind is ParamKind.GATHER:
        what = (
            f"receives a list with one group of children per parent; expected "
            f"Gather[list[...]], found Gather[{shown}]"
        )
        fix = f"annotate it Gather[list[{shown}]], or drop batch="
    else:
        what = (
            f"receives a list with one value per fragment; expected a list annotation, "
            f"found {shown}"
        )
        fix = f"annotate it list[{shown}] and return a list with one result per input, " + (
            "or drop batch="
        )
    msg = f"stage {stage!r} has batch={batch}, so parameter {p.name!r} {what}"
    raise CompileError(
        msg,
        stage=stage,
        parameter=p.name,
        where=where,
        fix=fix,
    )


def element_type_for_batch(ann: Any) -> Any:
    """A batched stage annotates ``list[T]`` parameters and returns: the element ``T``."""
    if typing.get_origin(ann) in (list, collections.abc.Sequence):
        args = typing.get_args(ann)
        return args[0] if args else None
    return None
