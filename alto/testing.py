"""Test doubles for pipelines: a scripted fake LLM and a deterministic embedder.

They need no model and no server, and answer the same on every run and in
every process (hashes are ``hashlib``-based, never Python's salted ``hash``),
so an app's Alto flow and its plain-Python reference can be compared exactly.

    >>> import anyio
    >>> from alto.testing import FakeLLM
    >>> llm = FakeLLM({"capital": "Paris. It is in France."})
    >>> anyio.run(llm.chat, [{"role": "user", "content": "The capital of France?"}])
    'Paris. It is in France.'
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any, AsyncGenerator, Callable, Mapping, Sequence

import anyio

from alto.operators.llm.base import LLM, Message, Request, Stop, normalize_messages, normalize_stop

if TYPE_CHECKING:
    from alto.operators.embedding import HashEmbedder

Script = Mapping[str, str] | Callable[[str], str]

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'\-]*")


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def default_reply(prompt: str) -> str:
    """A deterministic reply built from the prompt's own words: 1-4 short sentences.

    The count and the words depend on the prompt only, so different prompts
    split into different numbers of claims, queries or sub-questions. Each
    sentence is on its own line, so replies split by line or by sentence alike.
    """
    words = _WORD.findall(prompt) or ["nothing"]
    h = _digest(prompt)
    n_sentences = 1 + h % 4
    sentences = []
    for i in range(n_sentences):
        k = 4 + (h >> (8 * i)) % 5
        start = (h >> (4 * i)) % len(words)
        picked = [words[(start + j * 7) % len(words)] for j in range(k)]
        sentences.append(" ".join(picked).capitalize() + ".")
    return "\n".join(sentences)


class FakeLLM(LLM):
    """A scripted, deterministic :class:`~alto.operators.llm.LLM` for tests.

    The reply to a conversation is chosen from its text (all messages joined):

    * ``script`` as a mapping: the value of the first key that occurs in the text;
    * ``script`` as a callable: ``script(text)``;
    * otherwise (or when no key matches) :func:`default_reply`.

    Structured output fills the requested JSON schema from the reply's words,
    deterministically. Every call is recorded in ``calls``.

    Args:
        script: replies by substring, or a function of the prompt text.
        max_concurrency: what the fake reports as the calls it serves at once.
        delay: seconds each call waits, to let other work interleave.
    """

    def __init__(
        self, script: Script | None = None, *, max_concurrency: int = 8, delay: float = 0.0
    ) -> None:
        self.script = script
        self.max_concurrency = max_concurrency
        self.delay = delay
        self.calls: list[str] = []

    @property
    def name(self) -> str:
        """``"fake"``, the backend's short description."""
        return "fake"

    def reply(self, text: str) -> str:
        """The reply this fake gives to ``text``."""
        if callable(self.script):
            return self.script(text)
        if self.script:
            for key, value in self.script.items():
                if key in text:
                    return value
        return default_reply(text)

    async def _answer(self, text: str, max_tokens: int, stop: Stop) -> str:
        self.calls.append(text)
        if self.delay:
            await anyio.sleep(self.delay)
        else:
            await anyio.lowlevel.checkpoint()
        out = self.reply(text)
        for s in normalize_stop(stop):
            cut = out.find(s)
            if cut >= 0:
                out = out[:cut]
        tokens = out.split(" ")
        return " ".join(tokens[:max_tokens])

    async def _generate(self, request: Request) -> str:
        if request.kind == "complete":
            return await self._answer(request.prompt, request.max_tokens, request.stop)
        text = _text(request.messages)
        if request.json_schema is None:
            return await self._answer(text, request.max_tokens, request.stop)
        reply = await self._answer(text, request.max_tokens * 4, None)
        if reply.lstrip().startswith("{"):
            return reply  # the script gave the JSON itself
        return json.dumps(fill_schema(request.json_schema, reply, _digest(text)))

    async def _generate_stream(self, request: Request) -> AsyncGenerator[str, None]:
        text = await self._answer(_text(request.messages), request.max_tokens, request.stop)
        for i, token in enumerate(re.findall(r"\S+\s*", text)):
            if i:
                await anyio.lowlevel.checkpoint()
            yield token


def _text(messages: Sequence[Message]) -> str:
    return "\n".join(m["content"] for m in normalize_messages(messages))


def fill_schema(schema: dict[str, Any], text: str, seed: int) -> Any:
    """A value matching a (pydantic-generated) JSON schema, made deterministically from ``text``."""
    defs = schema.get("$defs", {})
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()] or [text]

    def fill(node: dict[str, Any], key: str, depth: int) -> Any:
        if "$ref" in node:
            return fill(defs[node["$ref"].rsplit("/", 1)[-1]], key, depth)
        for combo in ("anyOf", "oneOf", "allOf"):
            if combo in node:
                options = [o for o in node[combo] if o.get("type") != "null"] or node[combo]
                return fill(options[0], key, depth)
        if "enum" in node:
            return node["enum"][_digest(key + text) % len(node["enum"])]
        if "const" in node:
            return node["const"]
        kind = node.get("type", "string")
        h = _digest(f"{seed}:{key}:{depth}")
        if kind == "object":
            props = node.get("properties", {})
            return {name: fill(sub, f"{key}.{name}", depth + 1) for name, sub in props.items()}
        if kind == "array":
            n = max(node.get("minItems", 1), 1 + h % 3)
            n = min(n, node.get("maxItems", n))
            return [fill(node.get("items", {}), f"{key}[{i}]", depth + 1) for i in range(n)]
        if kind == "boolean":
            return bool(h % 2)
        if kind == "integer":
            low = node.get("minimum", 0)
            high = node.get("maximum", low + 9)
            return low + h % (high - low + 1)
        if kind == "number":
            low = node.get("minimum", 0.0)
            high = node.get("maximum", 1.0)
            return round(low + (h % 1000) / 999 * (high - low), 3)
        return sentences[h % len(sentences)]

    return fill(schema, "", 0)


def __getattr__(name: str) -> Any:
    if name == "HashEmbedder":  # lives with the real embedder; imported lazily (no torch)
        from alto.operators.embedding import HashEmbedder

        return HashEmbedder
    raise AttributeError(name)


__all__ = ["FakeLLM", "HashEmbedder", "default_reply", "fill_schema"]
