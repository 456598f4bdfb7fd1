"""Tracing a flow into a :class:`~alto.compiler.plan.Plan`.

Inside a flow, stages are called on symbolic :class:`Handle` s. Each call is
checked at once, so a :class:`~alto.errors.CompileError` points at the
user's line: the compiler binds the arguments to the stage's parameters,
infers the level each runs at and how every input relates to it (join,
broadcast or gather), and checks annotations where both sides are concrete.
"""

from __future__ import annotations

import inspect
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterator

from alto.compiler.plan import INPUT_PREFIX, Node, Plan, Port, PortMode
from alto.compiler.spec import (
    OutputKind,
    ParamKind,
    ParamSpec,
    StageSpec,
    check_batch_param,
    element_type_for_batch,
    where_called,
)
from alto.compiler.typecheck import describe, fits, value_fits
from alto.errors import CompileError

_current: ContextVar[Tracer | None] = ContextVar("alto_tracer", default=None)


def current_tracer() -> Tracer | None:
    """The tracer of the flow being traced, if any."""
    return _current.get()


@dataclass(slots=True, eq=False)
class Handle:
    """A symbolic stage output inside a flow: what a stage call returns while tracing."""

    tracer: Tracer
    source: str
    scope: tuple[str, ...]
    type: Any
    where: str

    @property
    def level(self) -> int:
        """How many splits are open where the value lives (0: one value per root input)."""
        return len(self.scope)

    def __repr__(self) -> str:
        return f"<alto value of {self.source!r} at level {self.level}>"

    def __bool__(self) -> bool:
        msg = (
            f"the flow tests the truth of {self.source!r}'s output, which does not exist "
            "while the flow is traced"
        )
        raise CompileError(
            msg,
            stage=self.source,
            where=where_called(),
            fix="move the decision into a stage (a split stage can drop or keep fragments)",
        )

    def __iter__(self) -> Iterator[Any]:
        msg = (
            f"the flow iterates over {self.source!r}'s output, which does not exist "
            "while the flow is traced"
        )
        raise CompileError(
            msg,
            stage=self.source,
            where=where_called(),
            fix="make the stage a split (annotate it -> Split[T] and yield each item)",
        )


def _level_text(scope: tuple[str, ...]) -> str:
    if not scope:
        return "level 0"
    return f"level {len(scope)} (inside split {' > '.join(repr(s) for s in scope)})"


def _contains_handle(value: Any, depth: int = 0) -> bool:
    if isinstance(value, Handle):
        return True
    if depth > 2:
        return False
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_contains_handle(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_contains_handle(v, depth + 1) for v in value.values())
    return False


class Tracer:
    """Collects the stage calls of one flow while its function runs."""

    def __init__(self, flow_name: str) -> None:
        self.flow_name = flow_name
        self.nodes: list[Node] = []
        self.node_where: dict[str, str] = {}
        self._names: dict[str, int] = {}

    def input(self, name: str, annotation: Any) -> Handle:
        """The handle of flow parameter ``name`` (annotated ``annotation``), at level 0."""
        return Handle(self, INPUT_PREFIX + name, (), annotation, "")

    def _unique(self, base: str) -> str:
        n = self._names.get(base, 0) + 1
        self._names[base] = n
        return base if n == 1 else f"{base}_{n}"

    def _bind(
        self, spec: StageSpec, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], where: str
    ) -> dict[str, Any]:
        def err(message: str, param: str | None, fix: str) -> CompileError:
            return CompileError(message, stage=name, parameter=param, where=where, fix=fix)

        positional = [p for p in spec.params if not p.keyword_only]
        if len(args) > len(positional):
            msg = (
                f"stage {name!r} takes {_count(len(positional), 'positional argument')} "
                f"but {len(args)} {'was' if len(args) == 1 else 'were'} given"
            )
            raise err(
                msg,
                None,
                f"call it as {name}({', '.join(p.name for p in spec.params)})",
            )
        bound: dict[str, Any] = {p.name: v for p, v in zip(positional, args)}
        for key, value in kwargs.items():
            if spec.param(key) is None:
                known = ", ".join(repr(p.name) for p in spec.params) or "none"
                msg = f"stage {name!r} has no parameter {key!r} (its parameters: {known})"
                raise err(
                    msg,
                    key,
                    "check the spelling, or add the parameter to the stage",
                )
            if key in bound:
                msg = f"stage {name!r} got parameter {key!r} twice (by position and by name)"
                raise err(
                    msg,
                    key,
                    "pass it once",
                )
            bound[key] = value
        for p in spec.params:
            if p.name not in bound and not p.has_default:
                msg = f"stage {name!r} is missing argument {p.name!r}"
                raise err(
                    msg,
                    p.name,
                    f"pass {p.name}=... or give the parameter a default",
                )
        return bound

    def call(
        self, spec: StageSpec, args: tuple[Any, ...], kwargs: dict[str, Any], where: str
    ) -> Handle:
        """Wire one call of the stage ``spec`` describes into the flow; returns its output's handle.

        ``args`` and ``kwargs`` are the call's arguments (handles and constants), ``where``
        the user's line that made it. A wiring that cannot run raises :class:`CompileError`.
        """
        name = self._unique(spec.name)
        bound = self._bind(spec, name, args, kwargs, where)

        def err(message: str, param: str | None, fix: str) -> CompileError:
            return CompileError(message, stage=name, parameter=param, where=where, fix=fix)

        handles: dict[str, Handle] = {}
        consts: dict[str, Any] = {}
        for pname, value in bound.items():
            if isinstance(value, Handle):
                if value.tracer is not self:
                    msg = (
                        f"stage {name!r}: parameter {pname!r} got a value from another flow "
                        f"({value.tracer.flow_name!r})"
                    )
                    raise err(
                        msg,
                        pname,
                        "call the stages that produce it inside this flow",
                    )
                handles[pname] = value
            elif _contains_handle(value):
                msg = (
                    f"stage {name!r}: parameter {pname!r} got a container holding stage "
                    "outputs; a stage takes each flow value as its own argument"
                )
                raise err(
                    msg,
                    pname,
                    "pass each value as its own parameter, or gather them in a stage",
                )
            else:
                consts[pname] = value
        if spec.options.batch:
            for pname in bound:
                p = spec.param(pname)
                if p is not None and p.has_default:  # passed: it becomes a list too
                    check_batch_param(name, spec.options.batch, p, where)
        if not handles:
            msg = (
                f"stage {name!r} gets no value from the flow (only constants), so it "
                "would never run"
            )
            raise err(
                msg,
                None,
                "pass it a flow parameter or another stage's output",
            )

        port_scopes: dict[str, tuple[str, ...]] = {}
        for pname, h in handles.items():
            p = spec.param(pname)
            assert p is not None
            if p.kind is ParamKind.VALUE:
                port_scopes[pname] = h.scope
                continue
            if not h.scope:
                marker = "Gather" if p.kind is ParamKind.GATHER else "GatherStream"
                msg = (
                    f"stage {name!r}: parameter {pname!r} is {marker}[...] but "
                    f"{_source_text(h)} is at level 0, where no split is open to close"
                )
                raise err(
                    msg,
                    pname,
                    "pass the output of a split stage (one annotated -> Split[T]) or of a "
                    f"stage downstream of one; or drop {marker}[...] to take the value as is",
                )
            port_scopes[pname] = h.scope[:-1]

        scope = max(port_scopes.values(), key=len)
        deepest = next(p for p, s in port_scopes.items() if s == scope)
        for pname, s in port_scopes.items():
            if scope[: len(s)] != s:
                msg = (
                    f"stage {name!r} joins {pname!r} at {_level_text(s)} with {deepest!r} at "
                    f"{_level_text(scope)}; streams opened by different splits cannot be joined"
                )
                raise err(
                    msg,
                    pname,
                    "gather one of them back to a level both share (a stage taking "
                    "Gather[T]), or derive both from the same split",
                )
        ports: list[Port] = []
        for pname, h in handles.items():
            p = spec.param(pname)
            assert p is not None
            s = port_scopes[pname]
            if p.kind is not ParamKind.VALUE and s != scope:
                msg = (
                    f"stage {name!r}: parameter {pname!r} gathers {_source_text(h)} back to "
                    f"{_level_text(s)}, but the stage runs at {_level_text(scope)} because of "
                    f"{deepest!r}"
                )
                raise err(
                    msg,
                    pname,
                    "gather in a stage of its own and pass its output on; an outer-level "
                    "value then reaches every fragment below it",
                )
            if p.kind is ParamKind.GATHER:
                mode = PortMode.GATHER
            elif p.kind is ParamKind.GATHER_STREAM:
                mode = PortMode.GATHER_STREAM
            else:
                mode = PortMode.SAME if s == scope else PortMode.BROADCAST
            self._check_type(spec, name, p, h, where)
            ports.append(Port(pname, h.source, mode, len(h.scope), len(s)))
        for pname, value in consts.items():
            p = spec.param(pname)
            assert p is not None
            self._check_const(spec, name, p, value, where)
        streams = [p for p in ports if p.mode is PortMode.GATHER_STREAM]
        if streams and len(ports) > 1:
            msg = (
                f"stage {name!r} reads {streams[0].param!r} as a GatherStream together with "
                "other flow values; a streaming gather takes the children and constants only"
            )
            raise err(
                msg,
                streams[0].param,
                "use Gather[T] to join the children with other values, or join them in a "
                "stage of their own first",
            )
        primary = next(
            (i for i, p in enumerate(ports) if p.mode is PortMode.SAME),
            next(i for i, p in enumerate(ports) if p.level == len(scope)),
        )
        node = Node(
            name=name,
            spec=spec,
            ports=tuple(ports),
            consts=MappingProxyType(consts),
            scope=scope,
            primary=primary,
            where=where,
        )
        self.nodes.append(node)
        self.node_where[name] = where
        out_type = spec.output_annotation
        if spec.options.batch and spec.output is OutputKind.VALUE:
            out_type = element_type_for_batch(out_type)
        return Handle(self, name, node.out_scope, out_type, where)

    def _expected(self, spec: StageSpec, p: ParamSpec) -> Any:
        if spec.options.batch:
            return element_type_for_batch(p.annotation)
        return p.annotation

    def _check_type(self, spec: StageSpec, name: str, p: ParamSpec, h: Handle, where: str) -> None:
        expected = self._expected(spec, p)
        if fits(h.type, expected) is False:
            what = "elements of type" if p.kind is not ParamKind.VALUE else "a value of type"
            msg = (
                f"stage {name!r}: parameter {p.name!r} expects {what} {describe(expected)}, "
                f"but {_source_text(h)} produces {describe(h.type)}"
            )
            raise CompileError(
                msg,
                stage=name,
                parameter=p.name,
                where=where,
                fix="convert the value in a stage between them, or correct the annotation",
            )

    def _check_const(
        self, spec: StageSpec, name: str, p: ParamSpec, value: Any, where: str
    ) -> None:
        if p.kind is not ParamKind.VALUE:
            msg = (
                f"stage {name!r}: parameter {p.name!r} gathers children but got the constant "
                f"{value!r}"
            )
            raise CompileError(
                msg,
                stage=name,
                parameter=p.name,
                where=where,
                fix="pass the output of a split stage",
            )
        expected = self._expected(spec, p)
        if value_fits(value, expected) is False:
            msg = (
                f"stage {name!r}: parameter {p.name!r} expects {describe(expected)}, "
                f"got the constant {value!r} ({type(value).__name__})"
            )
            raise CompileError(
                msg,
                stage=name,
                parameter=p.name,
                where=where,
                fix="pass a value of the annotated type, or correct the annotation",
            )


def _source_text(h: Handle) -> str:
    if h.source.startswith(INPUT_PREFIX):
        return f"flow parameter {h.source[len(INPUT_PREFIX):]!r}"
    return f"stage {h.source!r}"


def compile_flow(name: str, fn: Callable[..., Any], where: str) -> Plan:
    """Trace ``fn`` once and compile it; raises :class:`CompileError` before any data moves."""
    tracer = Tracer(name)
    sig = inspect.signature(fn)
    hints = _flow_hints(fn)
    handles: list[Handle] = []
    defaults: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            msg = (
                f"flow {name!r} takes {'*' if p.kind is p.VAR_POSITIONAL else '**'}{p.name}; "
                "flow inputs must be named parameters"
            )
            raise CompileError(
                msg,
                stage=name,
                parameter=p.name,
                where=where,
                fix="list each input as its own parameter",
            )
        handles.append(tracer.input(p.name, hints.get(p.name)))
        if p.default is not p.empty:
            defaults[p.name] = p.default
    token = _current.set(tracer)
    try:
        returned = fn(*handles)
    finally:
        _current.reset(token)
    if inspect.iscoroutine(returned):
        returned.close()
        msg = f"flow {name!r} is an 'async def'; a flow only wires stages and runs nothing"
        raise CompileError(
            msg,
            stage=name,
            where=where,
            fix="write the flow as a plain 'def'",
        )

    outputs, as_tuple = _outputs(name, tracer, returned, where)
    used = _ancestors(tracer, outputs)
    for node in tracer.nodes:
        if node.name not in used:
            msg = (
                f"flow {name!r}: the output of stage {node.name!r} is never used, so the "
                "stage would never run"
            )
            raise CompileError(
                msg,
                stage=node.name,
                where=node.where,
                fix="pass it to another stage or return it from the flow",
            )
    consumers: dict[str, list[tuple[str, int]]] = {INPUT_PREFIX + p: [] for p in sig.parameters}
    for node in tracer.nodes:
        consumers.setdefault(node.name, [])
        for i, port in enumerate(node.ports):
            consumers[port.source].append((node.name, i))
    return Plan(
        name=name,
        inputs=tuple(sig.parameters),
        defaults=MappingProxyType(defaults),
        nodes=tuple(tracer.nodes),
        outputs=outputs,
        output_tuple=as_tuple,
        consumers=MappingProxyType({k: tuple(v) for k, v in consumers.items()}),
        annotations=MappingProxyType(
            {p: hints[p] for p in sig.parameters if hints.get(p) is not None}
        ),
    )


def _flow_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    from alto.compiler.spec import _resolve_hints

    return _resolve_hints(fn)


def _outputs(
    name: str, tracer: Tracer, returned: Any, where: str
) -> tuple[tuple[str, ...], bool]:
    items = returned if isinstance(returned, tuple) else (returned,)
    as_tuple = isinstance(returned, tuple)
    if as_tuple and not items:
        msg = f"flow {name!r} returns an empty tuple"
        raise CompileError(
            msg,
            stage=name,
            where=where,
            fix="return a stage's output",
        )
    sources: list[str] = []
    for item in items:
        if not isinstance(item, Handle) or item.tracer is not tracer:
            what = "None (no return statement?)" if item is None else f"{item!r}"
            msg = (
                f"flow {name!r} returns {what}; a flow must return the output of a stage "
                "(or a tuple of them)"
            )
            raise CompileError(
                msg,
                stage=name,
                where=where,
                fix="return the value of the last stage call, e.g. 'return score(...)'",
            )
        if item.source.startswith(INPUT_PREFIX):
            msg = (
                f"flow {name!r} returns its parameter "
                f"{item.source[len(INPUT_PREFIX):]!r} unchanged; a flow must return the "
                "output of a stage"
            )
            raise CompileError(
                msg,
                stage=name,
                where=where,
                fix="pass the parameter through a stage, or return a stage's output",
            )
        if item.level:
            msg = (
                f"flow {name!r} returns stage {item.source!r}'s output at "
                f"{_level_text(item.scope)}; each input needs one output at level 0"
            )
            raise CompileError(
                msg,
                stage=item.source,
                where=item.where,
                fix="collect it with a stage that takes Gather[T] and return that stage's output",
            )
        sources.append(item.source)
    return tuple(sources), as_tuple


def _ancestors(tracer: Tracer, outputs: tuple[str, ...]) -> set[str]:
    by_name = {n.name: n for n in tracer.nodes}
    seen: set[str] = set()
    todo = list(outputs)
    while todo:
        name = todo.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        todo.extend(p.source for p in by_name[name].ports)
    return seen


def _count(n: int, noun: str) -> str:
    """``"1 positional argument"``, ``"2 positional arguments"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
