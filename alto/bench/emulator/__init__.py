"""The serving-timing emulator: an OpenAI-compatible HTTP server that is **not a model**.

A benchmark fixture: its answers' *timing* follows GPU serving (vLLM on one H100 by default,
every constant cited in :mod:`~alto.bench.emulator.config`), its text is extractive and
deterministic (:mod:`~alto.bench.emulator.text`), so orchestration (Alto vs LangGraph) can be
compared under realistic LLM latency on machines without a GPU. It is timing emulation,
everywhere it answers.

* :mod:`~alto.bench.emulator.batcher`: one replica's continuous batching on a modeled clock
  (token budget and chunked prefill, KV capacity and preemption, ``priority``).
* :mod:`~alto.bench.emulator.prefix_cache`: KV blocks with vLLM's automatic prefix caching.
* :mod:`~alto.bench.emulator.replica`: a batcher paced against the wall clock.
* :mod:`~alto.bench.emulator.balancer`: round-robin, least-loaded, and SGLang router's
  cache-aware (prefix-aware) policy with the defaults its launcher gives users and eviction
  on a timer.
* :mod:`~alto.bench.emulator.server`: the HTTP routes, ``/v1`` and ``/r/{i}/v1``, faults, and
  vLLM's ``--scheduling-policy`` (``fcfs`` refuses a non-zero ``priority``).
* :mod:`~alto.bench.emulator.launch`: :class:`EmulatorServer`, :func:`serve_emulator`, and
  ``python -m alto.bench.emulator --port P --replicas N --balancer POLICY
  [--scheduling-policy priority]``.

Example:
    >>> from alto.bench.emulator import EmulatorConfig, serve_emulator
    >>> with serve_emulator(EmulatorConfig(), replicas=4, balancer="prefix-aware") as url:
    ...     pass  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from typing import Any

from alto.bench.emulator.balancer import POLICIES, Balancer, Policy
from alto.bench.emulator.batcher import ContinuousBatcher
from alto.bench.emulator.config import BLOCK_TOKENS, EmulatorConfig, FaultConfig
from alto.bench.emulator.launch import EmulatorServer, serve_emulator, serve_emulator_async
from alto.bench.emulator.server import EMULATOR_MODEL, FINGERPRINT, create_app


def __getattr__(name: str) -> Any:
    if name == "Engine":  # ContinuousBatcher's former name, kept importable
        warnings.warn(
            "alto.bench.emulator.Engine was renamed ContinuousBatcher; import that instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return ContinuousBatcher
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "BLOCK_TOKENS",
    "EMULATOR_MODEL",
    "FINGERPRINT",
    "POLICIES",
    "Balancer",
    "ContinuousBatcher",
    "EmulatorConfig",
    "EmulatorServer",
    "FaultConfig",
    "Policy",
    "create_app",
    "serve_emulator",
    "serve_emulator_async",
]
