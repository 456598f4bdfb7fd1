"""``@alto.flow``: wiring stages into a plan, and running it."""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Any, AsyncIterable, AsyncIterator, Callable, Iterable

import anyio

from alto.compiler.compiler import compile_flow, current_tracer
from alto.compiler.plan import Plan
from alto.compiler.spec import where_called, where_defined
from alto.errors import CompileError, PipelineError, StageError, StateError, UsageTypeError
from alto.result import Result
from alto.runtime import get_backend
from alto.runtime.metrics import RunStats
from alto.runtime.run import RunControl
from alto.runtime.spans import traced_run

Inputs = Iterable[Any] | AsyncIterable[Any]


class Flow:
    """A traced composition of stages. Calling it runs nothing; ``run`` and ``stream`` do.

    Attributes:
        name: the flow's name.
        fn: the wiring function.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "flow"))
        self.where = where_defined(fn)
        self._plan: Plan | None = None
        functools.update_wrapper(self, fn)
        try:
            self._plan = compile_flow(self.name, fn, self.where)
        except NameError:
            pass  # a stage defined further down the module: compile on first use

    @property
    def plan(self) -> Plan:
        """The frozen plan (compiled on first access if the flow was defined early)."""
        if self._plan is None:
            self._plan = compile_flow(self.name, self.fn, self.where)
        return self._plan

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Inside another flow being traced, wire this flow's stages into it (the flow is inlined).

        Called anywhere else, it raises :class:`CompileError`: a flow runs through
        :meth:`run` or :meth:`stream`.
        """
        if current_tracer() is None:
            msg = f"flow {self.name!r} was called directly; a flow runs through run() or stream()"
            raise CompileError(
                msg,
                stage=self.name,
                where=where_called(),
                fix=f"await {self.name}.run([...]) or alto.run({self.name}, [...]); calling a "
                "flow inside another flow inlines it",
            )
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<alto.flow {self.name!r}>"

    async def run(
        self,
        inputs: Inputs,
        *,
        backend: str = "local",
        concurrency: int | None = None,
        stats: RunStats | None = None,
        trace: bool = False,
        dead_letters: list[StageError] | None = None,
        deadline: float | None = None,
        progress: bool = False,
        otel: Any = None,
        **options: Any,
    ) -> list[Any]:
        """Run every input through the flow; the outputs in input order.

        Args:
            inputs: one item per root input: the value of a one-parameter flow,
                else a tuple (positional) or a dict (by name). Any iterable, or
                an async iterable of inputs that arrive over time.
            backend: ``"local"`` (this process) or ``"ray"``.
            concurrency: most root inputs in flight at once (default: no limit
                beyond the stages' own).
            stats: a :class:`RunStats` to fill with per-stage counters and
                per-root timings.
            trace: also record every stage call in ``stats.spans``.
            dead_letters: a list to collect failed fragments in, instead of
                failing their root input: the gather sees the surviving siblings.
            deadline: seconds each input may take from when it enters the run;
                an input past it fails with :class:`DeadlineExceeded` and its
                stage calls are stopped.
            progress: show a progress bar.
            otel: OpenTelemetry export: the URL of an OTLP/HTTP traces endpoint (e.g.
                ``"http://127.0.0.1:6006/v1/traces"``; needs ``alto[otel]``) or a tracer
                provider. By default the run is traced only if the program configured a
                global tracer provider (see ``docs/otel.md``).
            options: options of the backend (e.g. ``address=`` for Ray).

        Raises:
            PipelineError: some inputs failed; raised after all others finished,
                with every input's outcome in ``.results``.
        """
        _check_inputs(inputs, self.name)
        outcomes: dict[int, Result[Any]] = {}
        bar = _progress_bar(inputs, self.name) if progress else None
        try:
            async with traced_run(self.plan, backend, otel):
                await get_backend(backend)(
                    self.plan,
                    inputs,
                    lambda result: outcomes.__setitem__(result.index, result),
                    concurrency=concurrency,
                    stats=stats,
                    trace=trace,
                    dead_letters=dead_letters,
                    progress=bar,
                    **({"deadline": deadline} if deadline is not None else {}),
                    **options,
                )
        finally:
            if bar is not None:
                bar.close()
        ordered = [outcomes[i] for i in range(len(outcomes))]
        failures = [r.error for r in ordered if r.error is not None]
        if failures:
            raise PipelineError([r.value if r.ok else r.error for r in ordered], failures)
        return [r.value for r in ordered]

    def stream(self, inputs: Inputs, *, backend: str = "local", **options: Any) -> ResultStream:
        """Outcomes as each root input completes: ``async for result in flow.stream(...)``.

        Takes the options of :meth:`run`. Leaving the loop early (or
        ``aclose()``, or ``async with``) cancels everything the run started.
        """
        _check_inputs(inputs, self.name)
        return ResultStream(self, inputs, backend, options)


class ResultStream:
    """An async iterator of :class:`~alto.Result` s, in completion order.

    Attributes:
        stats: the run's :class:`RunStats`, filled as it goes.
    """

    def __init__(self, flow: Flow, inputs: Inputs, backend: str, options: dict[str, Any]) -> None:
        self.flow = flow
        self.plan = flow.plan
        self._inputs = inputs
        self._run = get_backend(backend)
        self._backend = backend
        self._options = options
        self.stats: RunStats = options.pop("stats", None) or RunStats()
        self._control = RunControl()
        if getattr(self._run, "cancels_inputs", False):
            options["control"] = self._control
        self._send, self._receive = anyio.create_memory_object_stream[Result[Any]](math.inf)
        self._task: asyncio.Task[None] | None = None

    def cancel(self, index: int) -> bool:
        """Stop input ``index``: it gets the outcome :class:`InputCancelled`, others go on.

        Returns False if the input already had an outcome.
        """
        if not getattr(self._run, "cancels_inputs", False):
            msg = (
                f"this backend ({getattr(self._run, '__module__', '?')}) cannot cancel single "
                "inputs; cancel the whole stream with aclose()"
            )
            raise NotImplementedError(msg)
        return self._control.cancel(index)

    def __aiter__(self) -> AsyncIterator[Result[Any]]:
        return self

    async def __anext__(self) -> Result[Any]:
        if self._task is None:
            # The task must not hold the stream: dropping the last reference to
            # the stream (leaving an ``async for`` early) is what cancels it.
            self._task = asyncio.get_running_loop().create_task(
                _produce(self._run, self.plan, self._backend, self._inputs, self._send,
                         self.stats, self._options)
            )
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            await self._settle()
            raise StopAsyncIteration from None
        except BaseException:
            await self.aclose()
            raise

    async def _settle(self) -> None:
        task = self._task
        if task is not None:
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def aclose(self) -> None:
        """Stop the run: cancel every stage call still going, and wait for them to end."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True):  # also when our own caller is cancelled
                await asyncio.wait([task])
        self._receive.close()

    async def __aenter__(self) -> ResultStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()


async def _produce(
    run: Callable[..., Any],
    plan: Plan,
    backend: str,
    inputs: Inputs,
    send: Any,
    stats: RunStats,
    options: dict[str, Any],
) -> None:
    progress = options.pop("progress", False)
    otel = options.pop("otel", None)
    bar = _progress_bar(inputs, plan.name) if progress else None
    try:
        async with send, traced_run(plan, backend, otel):
            await run(plan, inputs, send.send_nowait, stats=stats, progress=bar, **options)
    finally:
        if bar is not None:
            bar.close()


def _check_inputs(inputs: Any, name: object) -> None:
    """Refuse, before anything starts, ``inputs`` that is not a collection of inputs."""
    if isinstance(inputs, (str, bytes)):
        found = f"a {type(inputs).__name__} (each character would be an input)"
    elif not (hasattr(inputs, "__iter__") or hasattr(inputs, "__aiter__")):
        found = f"{type(inputs).__name__} {inputs!r:.60}"
    else:
        return
    msg = (
        f"the inputs of flow {name!r} must hold one item per input (a list, an iterable or "
        f"an async iterable), got {found}; to run a single input, pass [input]"
    )
    raise UsageTypeError(msg)


def _progress_bar(inputs: Inputs, name: str) -> Any:
    from tqdm.auto import tqdm

    total = len(inputs) if hasattr(inputs, "__len__") else None  # type: ignore[arg-type]
    return tqdm(total=total, desc=name, unit="input", leave=False)


def flow(fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
    """Trace a wiring function into a :class:`Flow`, bare or as ``@alto.flow(name=...)``.

    Example:
        >>> import alto
        >>> @alto.stage
        ... async def shout(text: str) -> str:
        ...     return text.upper()
        >>> @alto.flow
        ... def loud(text: str):
        ...     return shout(text)
        >>> alto.run(loud, ["hi", "there"])
        ['HI', 'THERE']
    """
    if fn is not None:
        return Flow(fn, name)
    return lambda f: Flow(f, name)


def run(flow: Flow, inputs: Inputs, **options: Any) -> list[Any]:
    """Blocking helper: ``alto.run(flow, inputs)`` is ``await flow.run(inputs)`` from sync code."""
    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    if not in_loop:
        return anyio.run(functools.partial(flow.run, inputs, **options))
    msg = (
        "alto.run() blocks, and this thread is already running an event loop; "
        f"use 'await {flow.name}.run(inputs)' inside async code"
    )
    raise StateError(msg)
