"""What the serving-timing emulator says: extractive text, schema-shaped JSON, answer lengths.

The emulator is not a model. Its answers are sentences drawn from the prompt's own context,
ranked by word overlap with the question, so pipelines built on it do real work (split, embed,
retrieve, verify) on prompt-dependent text. Everything is deterministic given the prompt and a
seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Iterator, Sequence
from itertools import cycle
from typing import Any

from alto.operators.text import split_sentences

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_PIECE = re.compile(r"\s*\S+|\s+$")
_STOPWORDS = frozenset(
    [
        "about",
        "above",
        "after",
        "again",
        "also",
        "among",
        "answer",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "could",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "from",
        "further",
        "have",
        "having",
        "here",
        "into",
        "itself",
        "just",
        "more",
        "most",
        "other",
        "over",
        "same",
        "should",
        "some",
        "such",
        "than",
        "that",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "under",
        "until",
        "very",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "will",
        "with",
        "would",
        "your",
        "question",
        "context",
        "following",
        "given",
        "using",
        "based",
    ]
)


def seeded_rng(seed: int, *parts: str) -> random.Random:
    """A random generator determined by ``seed`` and the given strings (stable across runs)."""
    digest = hashlib.sha256("\x00".join([str(seed), *parts]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def pieces(text: str) -> list[str]:
    """Cut text into the emulator's tokens: each word with the white space before it."""
    return _PIECE.findall(text)


def count_tokens(text: str, chars_per_token: float) -> int:
    """Estimated token count of a prompt (at least 1)."""
    return max(1, round(len(text) / chars_per_token))


def drawn_length(prompt: str, seed: int, mean: float, sigma: float) -> int:
    """A heavy-tailed answer length in tokens, the same for the same prompt and seed.

    Log-normal with the given ``mean`` and log-space ``sigma`` (``mu = ln(mean) - sigma^2 /
    2``), at least 1; the caller caps it by ``max_tokens``.
    """
    mu = math.log(mean) - sigma * sigma / 2
    return max(1, round(seeded_rng(seed, "length", prompt).lognormvariate(mu, sigma)))


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)} - _STOPWORDS


class Source:
    """The prompt, read as context sentences and a question.

    Chat: the question is the last user message's last question (or last sentence); the context
    is every other sentence of the user and assistant messages. System messages (instructions,
    schemas) are not drawn from. Completion: the prompt plays both parts.
    """

    def __init__(
        self,
        texts: Sequence[str],
        question_text: str,
        rng: random.Random,
        *,
        made_up: int = 4,
    ) -> None:
        question_sents = split_sentences(question_text) or [question_text.strip()]
        asked = [s for s in question_sents if s.endswith("?")]
        self.question = (asked or question_sents)[-1]
        sentences: list[str] = []
        seen = set()
        for text in texts:
            for s in split_sentences(text):
                if s != self.question and not s.endswith("?") and s not in seen:
                    seen.add(s)
                    sentences.append(s)
        if not sentences:  # nothing to draw from but the question: make up a few sentences
            sentences = _made_up(question_text, rng, made_up) or ["..."]
        wanted = _words(self.question)
        noise = {s: rng.random() for s in sentences}
        self.ranked = sorted(sentences, key=lambda s: (-len(_words(s) & wanted), noise[s]))
        joined = " ".join(texts)
        self.numbers = [float(n) for n in _NUMBER.findall(joined)]
        self.rng = rng

    def answer(self, sentences: int, tokens: int | None) -> str:
        """The best ``sentences`` sentences.

        Or, with ``tokens``, ranked sentences (repeating if the context is short) until at
        least ``tokens`` tokens.
        """
        if tokens is None:
            # one sentence a line, so answers split into several claims, queries or items
            return "\n".join(self.ranked[: max(1, sentences)])
        out: list[str] = []
        count = 0
        for s in cycle(self.ranked):
            out.append(s)
            count += len(pieces(s))
            if count >= tokens:
                break
        return " ".join(out)


def _made_up(text: str, rng: random.Random, n: int = 4) -> list[str]:
    """``n`` sentences of 6-10 of the text's own words, drawn deterministically by ``rng``."""
    words = [w for w in _WORD.findall(text) if w.lower() not in _STOPWORDS] or _WORD.findall(text)
    if not words:
        return []
    out = []
    for _ in range(n):
        picked = [rng.choice(words) for _ in range(rng.randint(6, 10))]
        out.append(" ".join(picked).capitalize() + ".")
    return out


VARIED_SENTENCES = (1, 8)
"""Sentences of a text answer with ``fanout="varied"`` (inclusive range)."""
VARIED_ITEMS = (1, 6)
"""Items of a JSON array with ``fanout="varied"`` (inclusive range)."""


def varied_count(prompt: str, seed: int, low: int, high: int, what: str) -> int:
    """A count drawn uniformly from ``low..high``, the same for the same prompt and seed."""
    return seeded_rng(seed, "fanout", what, prompt).randint(low, high)


def chat_source(messages: Sequence[dict[str, Any]], seed: int, *, made_up: int = 4) -> Source:
    """A :class:`Source` for a chat request (deterministic in the messages and ``seed``).

    ``made_up`` is how many sentences to make up from the question when the messages hold
    no other text to draw from.
    """
    texts = [str(m.get("content") or "") for m in messages if m.get("role") != "system"]
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    question = users[-1] if users else (texts[-1] if texts else "")
    rng = seeded_rng(seed, json.dumps(list(messages), sort_keys=True, default=str))
    return Source(texts, question, rng, made_up=made_up)


def completion_source(prompt: str, seed: int, *, made_up: int = 4) -> Source:
    """A :class:`Source` for a completion request."""
    return Source([prompt], prompt, seeded_rng(seed, prompt), made_up=made_up)


class SchemaFiller:
    """Build a JSON value matching a JSON schema from a :class:`Source`.

    Strings take the next ranked sentence (so a ``list[str]`` of claims gets distinct
    sentences), numbers come from the prompt when it has some, enums prefer a value named in
    the prompt. Supports ``$ref``/``$defs``, ``anyOf``/``oneOf``/``allOf``, ``enum``,
    ``const``, nullable types, ``minItems``/``maxItems``, ``minimum``/``maximum`` and
    ``minLength``/``maxLength``; ``pattern`` is not honoured.
    """

    def __init__(self, root: dict[str, Any], source: Source, *, array_items: int = 3) -> None:
        self.root = root
        self.source = source
        self.array_items = array_items
        self._sentences: Iterator[str] = cycle(source.ranked)
        self._numbers: Iterator[float] | None = cycle(source.numbers) if source.numbers else None
        self._context = " ".join(source.ranked).lower()

    def fill(self, schema: dict[str, Any] | None = None, depth: int = 0) -> Any:
        """A value for ``schema`` (the root schema when None)."""
        schema = self.root if schema is None else schema
        if depth > 12:
            return None
        if "$ref" in schema:
            return self.fill(self._resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self._enum(list(schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
                return self.fill(options[0], depth + 1)
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self._resolve(part["$ref"]) if "$ref" in part else part)
            return self.fill(merged, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        if kind == "object":
            props = schema.get("properties", {})
            return {name: self.fill(sub, depth + 1) for name, sub in props.items()}
        if kind == "array":
            low = int(schema.get("minItems", 1 if self.array_items else 0))
            high = int(schema.get("maxItems", max(low, self.array_items)))
            count = min(max(self.array_items, low), high)
            items = schema.get("items", {"type": "string"})
            return [self.fill(items, depth + 1) for _ in range(count)]
        if kind == "string":
            return self._string(schema)
        if kind == "integer":
            return round(self._number(schema, integer=True))
        if kind == "number":
            return self._number(schema, integer=False)
        if kind == "boolean":
            return self.source.rng.random() < 0.5
        return None

    def _resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self.root
        for part in ref.lstrip("#/").split("/"):
            if not part:
                continue
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return dict(node)

    def _enum(self, options: list[Any]) -> Any:
        named = [o for o in options if isinstance(o, str) and o.lower() in self._context]
        return named[0] if named else self.source.rng.choice(options)

    def _string(self, schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        if fmt == "date":
            return "2024-01-01"
        if fmt == "date-time":
            return "2024-01-01T00:00:00Z"
        if fmt == "email":
            return "someone@example.org"
        if fmt in ("uri", "url"):
            return "https://example.org/"
        text = next(self._sentences)
        low = int(schema.get("minLength", 0))
        while len(text) < low:
            text = f"{text} {next(self._sentences)}"
        high = schema.get("maxLength")
        return text[: int(high)] if high is not None else text

    def _number(self, schema: dict[str, Any], *, integer: bool) -> float:
        if self._numbers is not None:
            value = next(self._numbers)
        else:
            value = float(self.source.rng.randint(0, 100)) if integer else self.source.rng.random()
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if low is not None and value < low:
            value = float(low) + (1 if "exclusiveMinimum" in schema and integer else 0)
        if high is not None and value > high:
            value = float(high) - (1 if "exclusiveMaximum" in schema and integer else 0)
        return value


def truncate(text: str, stop: Sequence[str], max_tokens: int) -> tuple[list[str], str]:
    """Apply stop strings and the token limit.

    Returns the pieces to send and the ``finish_reason`` (``"stop"`` or ``"length"``).
    """
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    parts = pieces(text)
    if len(parts) > max_tokens:
        return parts[:max_tokens], "length"
    return parts, "stop"
