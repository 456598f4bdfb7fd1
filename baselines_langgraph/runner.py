"""What every LangGraph baseline returns: a compiled graph plus how to feed it one root input.

A :class:`Runner` runs one root input per LangGraph invocation (``ainvoke``), the way a
LangGraph application serves requests; ``run_many`` keeps a fixed number of root inputs in
flight (closed loop), which is how the latency comparison loads both systems.

This module does not import LangGraph: it only calls the compiled graph's ``ainvoke``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio

# Every baseline graph is acyclic and a handful of supersteps deep; the limit only guards
# against a wiring mistake looping forever.
RECURSION_LIMIT = 64


def check_functional_limit(max_concurrency: int) -> None:
    """Refuse a ``max_concurrency`` under which a Functional API baseline cannot progress.

    LangGraph counts the running ``@entrypoint`` itself against ``max_concurrency``, so
    with a limit of 1 the entrypoint holds the only slot and its tasks wait forever.

    Raises:
        ValueError: if ``max_concurrency`` is below 2.
    """
    if max_concurrency < 2:
        msg = (
            f"the functional variant needs max_concurrency >= 2, got {max_concurrency}: "
            "LangGraph counts the running entrypoint against the limit, so with 1 its "
            "tasks would wait forever"
        )
        raise ValueError(msg)


def _identity(value: Any) -> Any:
    return value


class Runner:
    """One app in one LangGraph variant, compiled and ready to run root inputs.

    Args:
        graph: the compiled LangGraph program (a ``StateGraph`` compiled, or an
            ``@entrypoint``), anything with ``ainvoke(input, config, context=...)``.
        to_input: turns one root input into the graph's input.
        from_output: turns the graph's output into the app's output (what the Alto flow
            returns for that input).
        context: builds the LangGraph runtime context of one invocation (``None``: none), for
            run-scoped resources such as the index an ingest run builds.
        max_concurrency: LangGraph's own limit on tasks running at once within one
            invocation, passed at the top level of the run config.
        name: ``"<app>/<variant>"``, for reports.

    Example (inside async code)::

        runner = baselines_langgraph.build("factcheck", "flat", ops)
        report = await runner("What is a hash table?")
        reports = await runner.run_many(questions, concurrency=8)
    """

    def __init__(
        self,
        graph: Any,
        *,
        to_input: Callable[[Any], Any] = _identity,
        from_output: Callable[[Any], Any] = _identity,
        context: Callable[[], Any] | None = None,
        max_concurrency: int = 64,
        name: str = "",
    ) -> None:
        if max_concurrency < 1:
            msg = f"max_concurrency must be at least 1, got {max_concurrency}"
            raise ValueError(msg)
        self.graph = graph
        self.to_input = to_input
        self.from_output = from_output
        self.context = context
        self.max_concurrency = max_concurrency
        self.name = name
        # max_concurrency belongs at the top level of the run config: LangGraph's executor
        # reads config["max_concurrency"]; under "configurable" it would be ignored.
        self.config: dict[str, Any] = {
            "max_concurrency": max_concurrency,
            "recursion_limit": RECURSION_LIMIT,
        }

    def __repr__(self) -> str:
        return f"Runner({self.name!r}, max_concurrency={self.max_concurrency})"

    async def __call__(self, input: Any) -> Any:
        """Run one root input through the graph and return the app's output for it."""
        kwargs = {} if self.context is None else {"context": self.context()}
        out = await self.graph.ainvoke(self.to_input(input), self.config, **kwargs)
        return self.from_output(out)

    async def run_many(self, inputs: Sequence[Any], concurrency: int) -> list[Any]:
        """Run every input, at most ``concurrency`` at once; outputs in input order.

        Closed loop: each of ``concurrency`` workers starts the next input as soon as its
        previous one finished. The first failure cancels the rest and is raised.

        Raises:
            ValueError: if ``concurrency`` is below 1.
        """
        if concurrency < 1:
            msg = f"concurrency must be at least 1, got {concurrency}"
            raise ValueError(msg)
        inputs = list(inputs)
        outputs: list[Any] = [None] * len(inputs)
        pending = iter(enumerate(inputs))

        async def worker() -> None:
            for i, value in pending:  # shared iterator: whoever is free takes the next one
                outputs[i] = await self(value)

        async with anyio.create_task_group() as tg:
            for _ in range(min(concurrency, len(inputs))):
                tg.start_soon(worker)
        return outputs
