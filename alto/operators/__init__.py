"""Ready-made operators: model clients that Alto stages and other frameworks can call.

Names are resolved lazily, so ``import alto.operators`` imports neither numpy, torch nor faiss;
``alto.operators.Embedder`` imports its module on first access (and torch only when an
``Embedder`` is created).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alto.operators.embedding import Embedder, HashEmbedder
    from alto.operators.llm import LLM, LocalLLM, OpenAIClient
    from alto.operators.retriever import Hit, Retriever
    from alto.operators.text import lines, list_items, sentences

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "Embedder": "alto.operators.embedding",
    "HashEmbedder": "alto.operators.embedding",
    "Hit": "alto.operators.retriever",
    "LLM": "alto.operators.llm",
    "LocalLLM": "alto.operators.llm",
    "OpenAIClient": "alto.operators.llm",
    "Retriever": "alto.operators.retriever",
    "lines": "alto.operators.text",
    "list_items": "alto.operators.text",
    "sentences": "alto.operators.text",
}

__all__ = [
    "LLM",
    "Embedder",
    "HashEmbedder",
    "Hit",
    "LocalLLM",
    "OpenAIClient",
    "Retriever",
    "lines",
    "list_items",
    "sentences",
]


assert sorted(__all__) == sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'alto.operators' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
