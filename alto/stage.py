"""``@alto.stage``: turning an ``async def`` into a stage."""

from __future__ import annotations

import functools
from types import MappingProxyType
from typing import Any, Callable, Mapping, cast, overload

from alto.compiler.compiler import current_tracer
from alto.compiler.spec import StageOptions, StageSpec, read_stage, where_called
from alto.errors import CompileError


class Stage:
    """A decorated stage function. Inside a flow, calling it wires it in.

    The undecorated function stays available as ``.fn`` (for tests, or to call
    it directly with ``await stage.fn(...)``).
    """

    def __init__(self, spec: StageSpec) -> None:
        self.spec = spec
        functools.update_wrapper(self, spec.fn)

    @property
    def name(self) -> str:
        """The stage's name in plans, errors and statistics."""
        return self.spec.name

    @property
    def fn(self) -> Callable[..., Any]:
        """The decorated function itself."""
        return self.spec.fn

    @property
    def options(self) -> StageOptions:
        """The stage's execution options (see :func:`stage`)."""
        return self.spec.options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Wire a call of this stage into the flow being traced; returns its output's handle.

        Called outside a flow, it raises :class:`~alto.CompileError`.
        """
        tracer = current_tracer()
        if tracer is None:
            msg = (
                f"stage {self.name!r} was called outside a flow; calling a stage wires it "
                "into the flow being defined"
            )
            raise CompileError(
                msg,
                stage=self.name,
                where=where_called(),
                fix=f"call it inside an @alto.flow function, or run the function itself "
                f"with 'await {self.name}.fn(...)'",
            )
        return tracer.call(self.spec, args, kwargs, where_called())

    def __repr__(self) -> str:
        return f"<alto.stage {self.name!r}>"

    def __reduce__(self) -> Any:
        # Pickled by reference: the stage is a module global, like its function.
        return (_stage_by_name, (self.spec.fn.__module__, self.spec.fn.__qualname__))


def _stage_by_name(module: str, qualname: str) -> Stage:
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return cast(Stage, obj)  # the name Stage.__reduce__ gave: the stage it was pickled from


@overload
def stage(fn: Callable[..., Any], /) -> Stage: ...


@overload
def stage(
    *,
    replicas: int = 1,
    batch: int | None = None,
    batch_timeout: float = 0.0,
    buffer: int = 8,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    retry_backoff: float = 0.05,
    resources: Mapping[str, float] | None = None,
    name: str | None = None,
) -> Callable[[Callable[..., Any]], Stage]: ...


def stage(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    replicas: int = 1,
    batch: int | None = None,
    batch_timeout: float = 0.0,
    buffer: int = 8,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    retry_backoff: float = 0.05,
    resources: Mapping[str, float] | None = None,
    name: str | None = None,
) -> Stage | Callable[[Callable[..., Any]], Stage]:
    """Make an ``async def`` a stage, bare (``@alto.stage``) or with options.

    Args:
        fn: the function, when the decorator is used bare (``@alto.stage``); ``None`` when
            it is called with options, and returns the decorator.
        replicas: how many calls of this stage run at once (workers).
        batch: call the function on lists of up to ``batch`` inputs (from any
            parents); it then takes a list per parameter and returns a list, and
            its annotations say so (``list[T]``, ``Sequence[T]``: a non-list
            annotation is a :class:`~alto.CompileError`). A batched call that
            fails is bisected: its halves are called again, down to single
            fragments, so only the fragments that fail alone fail their roots
            (:attr:`~alto.StageError.bisected`; ``RunStats`` counts the extra
            calls as ``bisections``).
        batch_timeout: at most how many seconds a partial batch waits for more
            inputs, and only while a stage upstream is still working (when none
            is, nothing more can come before the next input, so it runs at once).
            Under steady load a stage upstream is nearly always working, so a
            partial batch waits the whole timeout; batches still fill while the
            stage is busy. 0 (the default): take whatever has arrived.
        buffer: capacity of the stage's input, in chunks of up to 64 fragments.
        timeout: seconds one call may take before it fails with
            :class:`~alto.StageTimeout` (a split's whole run).
        retries: how many times a failed call is tried again, with exponential
            backoff from ``retry_backoff`` seconds. Each call a bisection makes
            (see ``batch``) is retried the same way.
        retry_on: which exceptions are worth a retry (default: any ``Exception``).
        retry_backoff: seconds before the first retry; each later one waits twice as long as
            the one before, each wait scaled by a random factor from 0.5 to 1.5.
        resources: what a replica needs on a distributed backend, e.g.
            ``{"num_cpus": 1, "num_gpus": 0.5}`` or a custom resource.
        name: the stage's name in plans, errors and statistics (default: the
            function's name).

    Example:
        >>> import alto
        >>> @alto.stage(replicas=4, timeout=30)
        ... async def answer(question: str) -> str:
        ...     return question.upper()
    """
    retry = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    options = StageOptions(
        replicas=replicas,
        batch=batch,
        batch_timeout=batch_timeout,
        buffer=buffer,
        timeout=timeout,
        retries=retries,
        retry_on=retry,
        retry_backoff=retry_backoff,
        resources=MappingProxyType(dict(resources or {})),
    )

    def decorate(f: Callable[..., Any]) -> Stage:
        if isinstance(f, Stage):
            f = f.fn
        return Stage(read_stage(f, name, options))

    if fn is not None:
        return decorate(fn)
    return decorate
