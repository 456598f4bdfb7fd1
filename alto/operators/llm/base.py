"""The one async interface every LLM operator implements.

An :class:`LLM` is a plain async client: Alto stages and LangGraph baselines call the same object,
so nothing here knows about the runtime. The entry points (completion, chat, token streaming and
:meth:`LLM.structured`, with its validation and re-asks) are shared: each hands the backend one
:class:`Request`, and an implementation provides :meth:`LLM._generate` (a whole answer: a
completion, a chat reply or one constrained JSON answer) and :meth:`LLM._generate_stream` (a
chat reply as it is produced).

Laws every implementation keeps:

* ``"".join([t async for t in llm.stream(m, **kw)]) == await llm.chat(m, **kw)`` for greedy
  decoding (``temperature=0``) on a deterministic backend.
* No call returns more than ``max_tokens`` tokens, and no returned text contains a ``stop``
  string (the text ends just before it).
* ``max_concurrency`` calls may run at once without queueing inside the backend; more are
  accepted and wait.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self, TypeVar

import pydantic

from alto.errors import UsageError, UsageTypeError
from alto.operators.llm.errors import StructuredOutputError

Message = Mapping[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""

Stop = str | Sequence[str] | None
"""One stop string, several, or none."""

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@dataclass(frozen=True, slots=True)
class Request:
    """One call of an :class:`LLM` entry point, as the backend receives it.

    Attributes:
        kind: which entry point made it: ``"complete"`` (continue ``prompt``), ``"chat"``
            (answer ``messages``), ``"stream"`` (answer ``messages`` piece by piece) or
            ``"json"`` (answer ``messages`` with JSON matching ``json_schema``, for
            :meth:`LLM.structured`).
        prompt: the text to continue (``""`` unless ``kind`` is ``"complete"``).
        messages: the conversation as the caller gave it, oldest first (``()`` for a
            completion); check it with :func:`normalize_messages`.
        max_tokens: the most tokens to generate.
        temperature: sampling temperature; 0 is greedy.
        stop: generation ends before the first occurrence of any of these strings (``None``
            for JSON).
        json_schema: the schema a ``"json"`` answer must match (``None`` otherwise); backends
            constrain decoding to it where they can.
        schema_name: the schema's name (``""`` unless ``kind`` is ``"json"``).
    """

    kind: Literal["complete", "chat", "stream", "json"]
    prompt: str = ""
    messages: Sequence[Message] = ()
    max_tokens: int = 256
    temperature: float = 0.0
    stop: Stop = None
    json_schema: dict[str, Any] | None = None
    schema_name: str = ""


class LLM(abc.ABC):
    """An async LLM client: completion, chat, token streaming and validated structured output.

    Use it as an async context manager (or call :meth:`aclose`) to release its connections or
    model memory. A backend implements :meth:`_generate` and :meth:`_generate_stream`; every
    entry point reaches it through them.

    Attributes:
        max_concurrency: how many calls the backend serves well at once; stages calling this
            LLM should use it as their ``replicas``.

    Example:
        >>> async def answer(llm: LLM, question: str) -> str:  # doctest: +SKIP
        ...     async with llm:
        ...         return await llm.chat([{"role": "user", "content": question}], max_tokens=64)
    """

    max_concurrency: int = 1

    @property
    def name(self) -> str:
        """A short description of the backend, for logs and reports."""
        return type(self).__name__

    async def complete(
        self, prompt: str, *, max_tokens: int = 256, temperature: float = 0.0, stop: Stop = None
    ) -> str:
        """Continue ``prompt`` (no chat template).

        Args:
            prompt: the text to continue.
            max_tokens: the most tokens to generate.
            temperature: sampling temperature; 0 is greedy.
            stop: generation ends before the first occurrence of any of these strings.

        Returns:
            The generated text, without the prompt.
        """
        return await self._generate(
            Request("complete", prompt=prompt, max_tokens=max_tokens, temperature=temperature,
                    stop=stop)
        )  # fmt: skip

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Stop = None,
    ) -> str:
        """Answer a chat conversation.

        Args:
            messages: ``{"role", "content"}`` dicts, oldest first.
            max_tokens: the most tokens to generate.
            temperature: sampling temperature; 0 is greedy.
            stop: generation ends before the first occurrence of any of these strings.

        Returns:
            The assistant's reply.
        """
        return await self._generate(
            Request("chat", messages=messages, max_tokens=max_tokens, temperature=temperature,
                    stop=stop)
        )  # fmt: skip

    def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Stop = None,
    ) -> AsyncGenerator[str, None]:
        """Answer a chat conversation, yielding text deltas as the backend produces them.

        Leaving the loop early (``break``, cancellation, or ``aclose()`` on the iterator) stops
        generation. Wrap the iterator in ``contextlib.aclosing`` to stop it at once rather
        than when it is garbage-collected.

        Args:
            messages: ``{"role", "content"}`` dicts, oldest first.
            max_tokens: the most tokens to generate.
            temperature: sampling temperature; 0 is greedy.
            stop: generation ends before the first occurrence of any of these strings.

        Yields:
            Non-empty pieces of the reply, in order.
        """
        return self._generate_stream(
            Request("stream", messages=messages, max_tokens=max_tokens, temperature=temperature,
                    stop=stop)
        )  # fmt: skip

    async def _generate_json(
        self,
        messages: list[dict[str, str]],
        json_schema: dict[str, Any],
        *,
        schema_name: str,
        max_tokens: int,
        temperature: float,
    ) -> str:
        """Produce one raw answer meant to be JSON matching ``json_schema``.

        Backends constrain decoding to the schema where they can. The answer is validated by
        :meth:`structured`, not here.
        """
        return await self._generate(
            Request("json", messages=messages, max_tokens=max_tokens, temperature=temperature,
                    json_schema=json_schema, schema_name=schema_name)
        )  # fmt: skip

    @abc.abstractmethod
    async def _generate(self, request: Request) -> str:
        """The whole answer to a ``"complete"``, ``"chat"`` or ``"json"`` request.

        Keeps the laws of the module's docstring: at most ``request.max_tokens`` tokens, cut
        before the first ``request.stop`` string.
        """

    @abc.abstractmethod
    def _generate_stream(self, request: Request) -> AsyncGenerator[str, None]:
        """The answer to a ``"stream"`` request, in non-empty pieces as they are produced.

        Leaving the iterator early stops generation (see :meth:`stream`).
        """

    async def structured(
        self,
        messages: Sequence[Message],
        schema: type[ModelT],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        reasks: int = 2,
    ) -> ModelT:
        """Ask for JSON matching a pydantic model, validate it, and re-ask on errors.

        The schema is described to the model in a system message and, where the backend
        supports it, enforced by constrained decoding. An answer that is not valid JSON or does
        not validate is sent back with the validation error, up to ``reasks`` times.

        Args:
            messages: the conversation, oldest first.
            schema: the pydantic model the answer must validate against.
            max_tokens: the most tokens per answer.
            temperature: sampling temperature; 0 is greedy.
            reasks: how many times to ask again after an invalid answer.

        Returns:
            The validated model instance.

        Raises:
            StructuredOutputError: no valid answer after ``reasks + 1`` attempts; carries the
                last raw text and the last validation error.

        Example:
            >>> class Person(pydantic.BaseModel):  # doctest: +SKIP
            ...     name: str
            ...     age: int
            >>> ann = [{"role": "user", "content": "Ann is 30."}]  # doctest: +SKIP
            >>> await llm.structured(ann, Person)  # doctest: +SKIP
            Person(name='Ann', age=30)
        """
        if reasks < 0:
            msg = f"reasks must be >= 0, got {reasks}"
            raise UsageError(msg)
        json_schema = schema.model_json_schema()
        conversation = with_schema_instruction(normalize_messages(messages), json_schema)
        raw, error = "", ""
        for attempt in range(reasks + 1):
            raw = await self._generate_json(
                conversation,
                json_schema,
                schema_name=schema.__name__,
                max_tokens=max_tokens,
                temperature=temperature,
            )
            parsed, error = parse_json_as(raw, schema)
            if parsed is not None:
                return parsed
            if attempt < reasks:
                conversation = [
                    *conversation,
                    {"role": "assistant", "content": raw},
                    {
                        "role": "user",
                        "content": f"That answer is not valid: {error}. Reply with only the "
                        "corrected JSON object, matching the schema.",
                    },
                ]
        raise StructuredOutputError(schema.__name__, raw, error, attempts=reasks + 1)

    async def aclose(self) -> None:  # noqa: B027 (optional hook: a no-op unless overridden)
        """Release connections or model memory. Calling it twice is harmless."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} max_concurrency={self.max_concurrency}>"


def normalize_stop(stop: Stop) -> list[str]:
    """Stop strings as a list (empty strings dropped)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    return [s for s in stop if s]


def normalize_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Check chat messages and copy them into plain dicts.

    Raises:
        UsageTypeError: ``messages`` is a string, or a message is not a mapping.
        UsageError: a message lacks a known ``role`` or a string ``content``.
    """
    if isinstance(messages, (str, bytes)):
        msg = (
            "messages must be a list of {'role', 'content'} dicts, got a string; "
            "use complete(prompt) or wrap it: [{'role': 'user', 'content': prompt}]"
        )
        raise UsageTypeError(msg)
    out: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            msg = f"message {i} must be a dict with 'role' and 'content', got {message!r}"
            raise UsageTypeError(msg)
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            msg = f"message {i} has role {role!r}; expected one of {sorted(_ROLES)}"
            raise UsageError(msg)
        if not isinstance(content, str):
            msg = f"message {i} content must be a string, got {type(content).__name__}"
            raise UsageTypeError(msg)
        out.append({"role": role, "content": content})
    if not out:
        msg = "messages is empty; give at least one {'role': 'user', ...} message"
        raise UsageError(msg)
    return out


def with_schema_instruction(
    messages: list[dict[str, str]], json_schema: dict[str, Any]
) -> list[dict[str, str]]:
    """Describe ``json_schema`` to the model in the system message (merged with an existing one)."""
    instruction = (
        "Reply with one JSON object and nothing else. It must match this JSON schema:\n"
        + json.dumps(json_schema, separators=(",", ":"))
    )
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": messages[0]["content"] + "\n\n" + instruction}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> str:
    """The JSON part of a model's answer.

    The inside of a code fence, or the text from the first ``{``/``[`` to the last
    ``}``/``]``. Returns ``text`` stripped when neither is found.
    """
    text = text.strip()
    fenced = _FENCE.search(text)
    if fenced:
        return fenced.group(1).strip()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return text
    start = min(starts)
    end = max(text.rfind("}"), text.rfind("]"))
    return text[start : end + 1] if end > start else text[start:]


def parse_json_as(raw: str, schema: type[ModelT]) -> tuple[ModelT | None, str]:
    """Validate ``raw`` (or the JSON inside it) as ``schema``.

    Returns:
        ``(instance, "")`` on success, ``(None, error)`` otherwise, where ``error`` lists each
        problem as ``field.path: message``.
    """
    candidates = [raw]
    inner = extract_json(raw)
    if inner != raw:
        candidates.append(inner)
    error = ""
    for candidate in candidates:
        try:
            return schema.model_validate_json(candidate), ""
        except pydantic.ValidationError as exc:
            error = _describe(exc)  # the last candidate's error is the most specific
    return None, error


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
