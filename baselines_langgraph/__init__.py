"""The four example apps in LangGraph, for the latency comparison with Alto.

Each app (``factcheck``, ``multihop``, ``summarize``, ``ingest``) is written three ways, as
LangGraph's documentation recommends, calling the *same* step functions of
``examples/<app>/steps.py`` with the *same* :class:`~examples.common.Operators`, so that a
comparison measures orchestration only:

* ``flat``: one ``StateGraph``; ``Send`` fans out to per-fragment async nodes whose results
  meet in ``operator.add`` reducers; fan-in nodes re-assemble them in child order, by the
  index each Send carries (LangGraph happens to apply one superstep's writes in task order,
  but does not promise it).
* ``subgraph``: ``Send`` to a compiled per-fragment subgraph, so each fragment's chain of
  steps runs through without waiting at the parent's superstep barriers.
* ``functional``: the Functional API (``@entrypoint`` / ``@task``), with tasks started as
  futures as soon as their inputs exist.

Example (inside async code)::

    import baselines_langgraph
    from examples import multihop
    from examples.common import fake_operators

    ops = await fake_operators()
    runner = baselines_langgraph.build("multihop", "subgraph", ops)
    answer = await runner(multihop.load_inputs(1)[0])
    answers = await runner.run_many(multihop.load_inputs(20), concurrency=8)

LangGraph is imported when an app is built, not when this package is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

from baselines_langgraph.runner import RECURSION_LIMIT, Runner

APPS = ("factcheck", "multihop", "summarize", "ingest")
VARIANTS = ("flat", "subgraph", "functional")

__all__ = ["APPS", "RECURSION_LIMIT", "VARIANTS", "Runner", "build"]


def build(
    app: str, variant: str, ops: Any, config: Any = None, *, max_concurrency: int = 64
) -> Runner:
    """The LangGraph version of an example app, compiled over ``ops``.

    Args:
        app: one of :data:`APPS`.
        variant: one of :data:`VARIANTS`.
        ops: the :class:`~examples.common.Operators` the app's steps call.
        config: the app's ``Config`` (its defaults when ``None``).
        max_concurrency: LangGraph's limit on tasks running at once within one invocation,
            set at the top level of the run config.

    Returns:
        A :class:`Runner`: ``await runner(input)`` for one root input,
        ``await runner.run_many(inputs, concurrency)`` for many.

    Raises:
        ValueError: on an unknown app or variant (the message lists the valid ones), or a
            ``max_concurrency`` the variant cannot run under: below 1, or below 2 for the
            functional variant (LangGraph counts the running entrypoint against the limit).
    """
    if app not in APPS:
        msg = f"unknown app {app!r}; expected one of {', '.join(APPS)}"
        raise ValueError(msg)
    if variant not in VARIANTS:
        msg = f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}"
        raise ValueError(msg)
    module = importlib.import_module(f"baselines_langgraph.{app}")
    return module.BUILDERS[variant](ops, config, max_concurrency=max_concurrency)
