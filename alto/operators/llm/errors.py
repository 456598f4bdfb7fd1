"""Errors raised by the LLM operators.

Every error carries structured fields (``url``, ``status``, ``raw`` ...) so callers never parse
messages, and a stable ``code``. Errors pickle with their fields (they cross process boundaries
on distributed runtimes). No error ever contains an API key: bodies quoted from a server are
truncated and redacted before they are stored.
"""

from __future__ import annotations

import re
from typing import Any

from alto.errors import AltoError

_BODY_LIMIT = 500


def _clip(text: str, limit: int = _BODY_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."  # idempotent: safe to re-clip


_HTML = re.compile(r"\s*(?:<!doctype\s+html|<html|<head|<body|<title|<h1|<p>)", re.IGNORECASE)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def describe_body(text: str, limit: int = 200) -> str:
    r"""A server's answer body for a one-line message.

    An HTML page (a web server, a proxy's error page: not an OpenAI-compatible API) is named
    as one, with its title; any other text has its whitespace folded to single spaces and is
    clipped to ``limit`` characters.

        >>> describe_body("<html><head><title>404 Not Found</title></head>...</html>")
        'an HTML page ("404 Not Found")'
        >>> describe_body('{"error":\n  "no such model"}')
        '{"error": "no such model"}'
    """
    if _HTML.match(text):
        title = _TITLE.search(text)
        name = " ".join(title.group(1).split()) if title else ""
        return f'an HTML page ("{_clip(name, 80)}")' if name else "an HTML page"
    return _clip(" ".join(text.split()), limit)


class LLMError(AltoError):
    """Base of every error the LLM operators raise (an :class:`~alto.errors.AltoError`).

    ``code`` is a stable identifier.
    """

    code = "llm"


class LLMServerError(LLMError):
    """The server answered with an HTTP error status.

    Raised at once for statuses that retrying cannot fix (400, 401, 404, 422 ...), and after the
    last retry for 429 and 5xx. The message is one line: an HTML body (the server is not an
    OpenAI-compatible API) is named, not quoted.

    Attributes:
        url: the endpoint that was called.
        status: the HTTP status of the last answer.
        body: the start of the answer's body (truncated, secrets redacted).
        attempts: how many requests were made.
    """

    code = "llm.server"

    def __init__(self, url: str, status: int, body: str = "", *, attempts: int = 1) -> None:
        self.url = url
        self.status = status
        self.body = _clip(body)
        self.attempts = attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        detail = f": {describe_body(self.body)}" if self.body else ""
        super().__init__(f"LLM server at {url} answered HTTP {status}{tries}{detail}")

    def __reduce__(self) -> Any:
        return (
            _rebuild,
            (type(self), (self.url, self.status, self.body), {"attempts": self.attempts}),
        )


class LLMConnectionError(LLMError, ConnectionError):
    """The server could not be reached, or the connection broke before the answer was complete.

    Attributes:
        url: the endpoint that was called.
        detail: what went wrong (the transport's own message).
        attempts: how many connection attempts were made.
    """

    code = "llm.connection"

    def __init__(self, url: str, detail: str, *, attempts: int = 1) -> None:
        self.url = url
        self.detail = detail
        self.attempts = attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(
            f"cannot reach the LLM server at {url}{tries}: {detail}; is the server running "
            "and is the base URL right?"
        )

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), (self.url, self.detail), {"attempts": self.attempts}))


class LLMTimeoutError(LLMError, TimeoutError):
    """The server accepted the request but did not answer (or stopped streaming) in time.

    Attributes:
        url: the endpoint that was called.
        timeout: the limit, in seconds, that was exceeded.
        phase: ``"connect"``, ``"read"``, ``"write"`` or ``"pool"``.
    """

    code = "llm.timeout"

    def __init__(self, url: str, timeout: float | None, phase: str = "read") -> None:
        self.url = url
        self.timeout = timeout
        self.phase = phase
        limit = f"{timeout:g} s" if timeout is not None else "the limit"
        super().__init__(
            f"LLM server at {url} did not answer within {limit} ({phase} timeout); raise "
            "'timeout' if the server is just slow"
        )

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), (self.url, self.timeout, self.phase), {}))


class LLMProtocolError(LLMError):
    """The server's answer could not be understood.

    Malformed JSON or SSE, missing fields, a stream that ended without ``[DONE]``.

    Attributes:
        url: the endpoint that was called.
        detail: what was expected and what was found.
    """

    code = "llm.protocol"

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(f"unexpected answer from the LLM server at {url}: {detail}")

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), (self.url, self.detail), {}))


class StructuredOutputError(LLMError):
    """The model did not produce JSON that validates against the schema, after all re-asks.

    Attributes:
        schema: name of the pydantic model asked for.
        raw: the last raw text the model produced.
        error: the last validation (or JSON) error, as text.
        attempts: how many answers were requested in total.
    """

    code = "llm.structured"

    def __init__(self, schema: str, raw: str, error: str, *, attempts: int) -> None:
        self.schema = schema
        self.raw = raw
        self.error = error
        self.attempts = attempts
        super().__init__(
            f"no valid {schema} after {attempts} attempts; last error: {_clip(error, 800)}; "
            f"last answer: {_clip(raw, 300)!r}. Give the model more max_tokens, a simpler "
            "schema, or more re-asks"
        )

    def __reduce__(self) -> Any:
        return (
            _rebuild,
            (type(self), (self.schema, self.raw, self.error), {"attempts": self.attempts}),
        )


def _rebuild(cls: type[LLMError], args: tuple[Any, ...], kwargs: dict[str, Any]) -> LLMError:
    return cls(*args, **kwargs)
