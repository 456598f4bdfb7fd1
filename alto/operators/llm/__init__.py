"""LLM operators: one async interface, two backends, all usable outside Alto too.

* :class:`OpenAIClient`: any OpenAI-compatible server over HTTP (vLLM, llama.cpp's server,
  or the benchmark harness's serving-timing emulator, :mod:`alto.bench.emulator`).
* :class:`LocalLLM`: llama.cpp in-process on a GGUF file (SmolLM2-135M by default), offline.
* :class:`Dispatcher`: what stands in front of an endpoint's replicas (admission, the order of
  waiting calls by lineage, routing, health); every client has one, ``client.dispatcher``.

Every backend implements :class:`LLM` (``complete``, ``chat``, ``stream``, ``structured``,
``max_concurrency``). Names are imported on first use, so importing this package loads neither
llama.cpp nor the HTTP stack.

Example:
    >>> from alto.bench.emulator import serve_emulator
    >>> from alto.operators.llm import OpenAIClient
    >>> async def main():  # doctest: +SKIP
    ...     with serve_emulator() as base_url:
    ...         async with OpenAIClient(base_url, "emulated") as llm:
    ...             return await llm.chat([{"role": "user", "content": "Hi. Who are you?"}])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alto.operators.llm.base import LLM, Message
    from alto.operators.llm.dispatch import (
        Dispatcher,
        DispatchStats,
        Lease,
        Limit,
        Order,
        ReplicaStats,
        Route,
    )
    from alto.operators.llm.errors import (
        LLMConnectionError,
        LLMError,
        LLMProtocolError,
        LLMServerError,
        LLMTimeoutError,
        StructuredOutputError,
    )
    from alto.operators.llm.limit import VegasLimit
    from alto.operators.llm.local import LocalLLM, default_model_path, default_threads
    from alto.operators.llm.openai import OpenAIClient

_WHERE = {
    "LLM": "base",
    "Message": "base",
    "LLMError": "errors",
    "LLMServerError": "errors",
    "LLMConnectionError": "errors",
    "LLMTimeoutError": "errors",
    "LLMProtocolError": "errors",
    "StructuredOutputError": "errors",
    "OpenAIClient": "openai",
    "Dispatcher": "dispatch",
    "DispatchStats": "dispatch",
    "Lease": "dispatch",
    "Limit": "dispatch",
    "Order": "dispatch",
    "ReplicaStats": "dispatch",
    "Route": "dispatch",
    "VegasLimit": "limit",
    "LocalLLM": "local",
    "default_model_path": "local",
    "default_threads": "local",
}

__all__ = [
    "DispatchStats",
    "Dispatcher",
    "LLM",
    "LLMConnectionError",
    "LLMError",
    "LLMProtocolError",
    "LLMServerError",
    "LLMTimeoutError",
    "Lease",
    "Limit",
    "LocalLLM",
    "Message",
    "OpenAIClient",
    "Order",
    "ReplicaStats",
    "Route",
    "StructuredOutputError",
    "VegasLimit",
    "default_model_path",
    "default_threads",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
