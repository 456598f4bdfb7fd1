"""A client for any OpenAI-compatible server (vLLM, llama.cpp's server, SGLang, OpenAI ...).

Built on pooled ``httpx.AsyncClient``s: keep-alive connections, per-phase timeouts, retries
with exponential backoff on HTTP 429/5xx and connection failures, and token streaming over
server-sent events. The API key is read from an environment variable only; it is sent as a
header and never stored in errors, logs or reprs.

Every request goes through the client's :class:`~alto.operators.llm.dispatch.Dispatcher`
(``client.dispatcher``): one attempt holds one lease, so a retry after a failed replica may go
to another one.
"""

from __future__ import annotations

import json
import os
import random
import re
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal

import anyio
import anyio.lowlevel
import httpx

from alto.errors import UsageError, UsageTypeError
from alto.operators._model_spans import UNTRACED, model_call, traced_stream
from alto.operators.llm.base import LLM, Request, normalize_messages, normalize_stop
from alto.operators.llm.dispatch import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Dispatcher,
    DispatchStats,
    Lease,
    Limit,
    Order,
    Route,
    check_knobs,
    sharing,
)
from alto.operators.llm.errors import (
    LLMConnectionError,
    LLMProtocolError,
    LLMServerError,
    LLMTimeoutError,
    describe_body,
)

JsonMode = Literal["auto", "json_schema", "json_object", "none"]

_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_SCHEMA_REJECTED = frozenset({400, 404, 415, 422})  # "response_format not understood"
_SSE_FIELDS = frozenset({"data", "event", "id", "retry"})
_DOWN_STATUS = frozenset({500, 502, 503, 504})  # the replica is down (out of rotation)
PREFIX_CHARS = 256
"""How much of a rendered prompt is the routing ``prefix`` a call gives its dispatcher."""


class OpenAIClient(LLM):
    """An :class:`~alto.operators.llm.base.LLM` over HTTP, for OpenAI-compatible servers.

    Calls ``/v1/chat/completions`` and ``/v1/completions``; ``stream`` reads server-sent
    events as they arrive.

    Args:
        base_url: the server, with or without the ``/v1`` suffix
            (``http://127.0.0.1:8000`` or ``http://127.0.0.1:8000/v1``), or a list of them:
            replicas of one model, among which the dispatcher routes each call.
        model: the model name the server serves.
        api_key_env: environment variable holding the API key (sent as
            ``Authorization: Bearer``); no header when it is unset or None.
        timeout: seconds to wait for the answer to start, and between streamed pieces.
        connect_timeout: seconds to wait for a connection.
        max_retries: retries after the first attempt, on HTTP 408/409/425/429/5xx and
            connection failures (with exponential backoff and jitter, honouring
            ``Retry-After``). A stream is retried only until its first byte.
        backoff: the first retry's delay in seconds; doubles each retry.
        max_backoff: the longest delay between retries.
        json_mode: how :meth:`structured` asks for JSON: ``"json_schema"`` (OpenAI's
            ``response_format``), ``"json_object"`` (with a ``schema`` field, as llama.cpp's
            server takes), ``"none"`` (prompt only), or ``"auto"``: ``json_schema``, falling
            back to ``json_object`` for good if the server refuses it (HTTP 400/404/415/422,
            or an error that names ``response_format``).
        headers: extra HTTP headers for every request.
        transport: an httpx transport to use instead of the network (for proxies or mocks).
        max_inflight: calls in flight per replica, for calls made inside a stage: an int,
            ``None`` (no limit), ``"auto"`` (learned online, within ``max_concurrency``'s
            share of each replica) or ``"server"`` (the default): what each replica says it
            serves at once, asked once before the first call made inside a stage (see
            :meth:`server_limit`); llama.cpp's ``llama-server`` gives its slot count, so a
            one-slot server gets 1. A replica that says nothing gets 16 (``DEFAULT_LIMIT``),
            where the vLLM sweep the emulator cites reaches its peak throughput; an int you
            pass wins over what servers say. ``"auto"`` (TCP Vegas on the time per output
            token) starts at 16 and settles at the knee of latency, which can be below the
            knee of throughput: on one emulated server it settled at 10 calls, where
            throughput peaks at 16. ``dispatch_stats()`` says where each replica's limit came
            from (``limit_source``).
        max_concurrency: the most calls the stages keep going through this client at once,
            over all replicas (stages use it as their ``replicas``; the calls past the
            replicas' limits wait in the dispatcher, which picks the next by ``order``).
            Default: ``max_inflight`` times the replicas for an int, else 16 per replica
            (64 per replica under ``"auto"``, the most it learns). The connection pool keeps
            ``max(64, 2 * max_concurrency)`` connections.
        order: which waiting stage call goes first: ``"root-first"`` (the oldest root
            input's), ``"least-attained"`` (the root that got the fewest tokens so far) or
            ``"fifo"``.
        route: which replica serves a call: ``"lineage"`` (the one that served the call's
            parent or root before, whose prefix cache holds their text), ``"least-loaded"``
            or ``"round-robin"``.
        send_priority: send the dispatcher's ``priority`` in the request body (lower first).
            Only for servers that honour it: vLLM rejects the field unless started with
            ``--scheduling-policy priority``; the benchmark's emulator takes it.

    Calls made outside a stage (LangGraph, plain asyncio) are never queued by the
    dispatcher. The routing ``prefix`` of a call is the first 256 characters
    (``PREFIX_CHARS``) of its rendered prompt (chat messages as ``role: content`` lines):
    what a root's calls share when prompts put the shared text first; the lineage of the
    call decides first, the prefix only for a root's first calls.

    Example:
        >>> async def main():  # doctest: +SKIP
        ...     async with OpenAIClient("http://127.0.0.1:8000/v1", "llama-3-8b") as llm:
        ...         async for piece in llm.stream([{"role": "user", "content": "Hi"}]):
        ...             print(piece, end="")
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_retries: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        json_mode: JsonMode = "auto",
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_inflight: Limit = "server",
        order: Order = "root-first",
        route: Route = "lineage",
        send_priority: bool = False,
        max_concurrency: int | None = None,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        # what a copy in another process (a Ray actor) is rebuilt from; never the key itself
        self._settings: dict[str, Any] = dict(
            base_url=base_url if isinstance(base_url, str) else urls, model=model,
            api_key_env=api_key_env, timeout=timeout,
            connect_timeout=connect_timeout, max_retries=max_retries, backoff=backoff,
            max_backoff=max_backoff, json_mode=json_mode, headers=dict(headers or {}),
            max_inflight=max_inflight, order=order, route=route, send_priority=send_priority,
            max_concurrency=max_concurrency,
        )
        self._custom_transport = transport is not None
        # the same in every copy: on Ray, the copies of one client share one dispatcher
        self._identity = uuid.uuid4().hex
        if max_retries < 0:
            msg = f"max_retries must be >= 0, got {max_retries}"
            raise UsageError(msg)
        if max_concurrency is not None and (
            type(max_concurrency) is not int or max_concurrency < 1
        ):
            msg = f"max_concurrency must be an int >= 1 or None, got {max_concurrency!r}"
            raise UsageError(msg)
        if json_mode not in ("auto", "json_schema", "json_object", "none"):
            msg = f"json_mode must be auto, json_schema, json_object or none, got {json_mode!r}"
            raise UsageError(msg)
        check_knobs(max_inflight, order, route)
        if not urls:
            msg = "base_url must be a URL or a non-empty list of URLs, got []"
            raise UsageError(msg)
        bases = []
        for url in urls:
            base = str(url).rstrip("/")
            if not base.startswith(("http://", "https://")):
                msg = f"base_url must start with http:// or https://, got {url!r}"
                raise UsageError(msg)
            bases.append(base.removesuffix("/v1") + "/v1")
        self.base_urls: tuple[str, ...] = tuple(bases)
        self.model = model
        self.send_priority = send_priority
        if max_concurrency is None:
            per_replica = (
                max_inflight if isinstance(max_inflight, int)
                else MAX_LIMIT if max_inflight == "auto" else DEFAULT_LIMIT
            )
            max_concurrency = per_replica * len(bases)
        # "auto" learns within each replica's share of max_concurrency
        ceiling = max(1, max_concurrency // len(bases))
        self.dispatcher = Dispatcher(
            bases,
            max_inflight=max_inflight,
            order=order,
            route=route,
            name=f"{model}@{bases[0]}" + (f" (+{len(bases) - 1})" if len(bases) > 1 else ""),
            max_limit=ceiling,
            start_limit=min(DEFAULT_LIMIT, ceiling),
            probe=self._probe,
            ask_limit=self.server_limit,
            default_limit=DEFAULT_LIMIT,
        )
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._json_mode: JsonMode = json_mode
        self._api_key_env = api_key_env
        self._secret = os.environ.get(api_key_env, "") if api_key_env else ""
        sent = dict(headers or {})
        connections = max(64, 2 * max_concurrency)  # the stages' calls never wait for one
        if self._secret:
            sent["Authorization"] = f"Bearer {self._secret}"
        self._http_options: dict[str, Any] = {
            "headers": sent,
            "timeout": httpx.Timeout(timeout, connect=connect_timeout, pool=None),
            "limits": httpx.Limits(
                max_connections=connections, max_keepalive_connections=connections
            ),
            "transport": transport,
        }
        # one connection pool per event loop: pooled connections belong to the loop that
        # opened them, and one client may serve several runs (each alto.run has its own loop)
        self._pools: weakref.WeakKeyDictionary[Any, httpx.AsyncClient] = weakref.WeakKeyDictionary()


    def __reduce__(self) -> Any:
        """Pickled as its settings.

        A copy in another process opens its own connections and reads the API key from its
        own environment.
        """
        if self._custom_transport:
            msg = "an OpenAIClient with a custom transport cannot be pickled"
            raise UsageTypeError(msg)
        adopt = sharing.shipped(self)  # e.g. on Ray: the copies share a dispatcher actor
        return (_rebuild_client, (self._settings, self.max_concurrency, self._identity, adopt))

    @property
    def base_url(self) -> str:
        """The (first) replica's base URL, ending in ``/v1``."""
        return self.base_urls[0]

    @base_url.setter
    def base_url(self, url: str) -> None:
        if len(self.base_urls) > 1:
            msg = (
                f"this client has {len(self.base_urls)} replicas: make a new client to change "
                "their URLs"
            )
            raise UsageError(msg)
        self.base_urls = (url,)
        self.dispatcher.set_target(0, url)

    @property
    def name(self) -> str:
        """The model's name and the server's base URL, as ``model@base_url``."""
        return f"{self.model}@{self.base_url}"

    def dispatch_stats(self) -> DispatchStats:
        """What the dispatcher did and holds now.

        Per replica, calls in flight, the limit, calls, failures, prompt and cached tokens,
        health; calls waiting. After a run on Ray (while still connected to it), the state
        the run's actors shared.
        """
        shared = sharing.shared_stats(self)
        return shared if shared is not None else self.dispatcher.stats()

    def __repr__(self) -> str:
        key = f"${self._api_key_env} set" if self._secret else "no API key"
        where = (
            f"base_url={self.base_url!r}"
            if len(self.base_urls) == 1
            else f"base_urls={list(self.base_urls)!r}"
        )
        return (
            f"<OpenAIClient model={self.model!r} {where} "
            f"max_concurrency={self.max_concurrency} ({key})>"
        )

    def _http(self) -> httpx.AsyncClient:
        """The connection pool of the running event loop (created on first use)."""
        loop = anyio.lowlevel.current_token().native_token
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = httpx.AsyncClient(**self._http_options)
        return pool

    async def aclose(self) -> None:
        """Close the running loop's connection pool, and forget those of other loops."""
        pool = self._pools.pop(anyio.lowlevel.current_token().native_token, None)
        self._pools.clear()
        if pool is not None:
            await pool.aclose()

    # -- the LLM interface -------------------------------------------------------------------

    async def _generate(self, request: Request) -> str:
        if request.kind == "complete":
            payload = self._payload(request, prompt=request.prompt)
            prefix = request.prompt[:PREFIX_CHARS]
            url, data = await self._traced_post("/completions", payload, prefix)
            return _text(url, data, chat=False, redact=self._redact)
        sent = normalize_messages(request.messages)
        if request.json_schema is not None:
            return await self._json(request, sent, request.json_schema)
        payload = self._payload(request, messages=sent)
        url, data = await self._traced_post("/chat/completions", payload, _prefix(sent))
        return _text(url, data, chat=True, redact=self._redact)

    def _generate_stream(self, request: Request) -> AsyncGenerator[str, None]:
        sent = normalize_messages(request.messages)
        payload = self._payload(request, messages=sent)
        payload["stream_options"] = {"include_usage": True}  # the token counts, in a last chunk
        prefix = _prefix(sent)

        def open_stream(call: Any) -> AsyncGenerator[str, None]:
            return self._stream("/chat/completions", payload, prefix, call)

        return traced_stream(
            open_stream, operation="chat", model=self.model, provider="openai",
            server=self.base_url, request=payload,
        )

    async def _json(
        self, request: Request, messages: list[dict[str, str]], json_schema: dict[str, Any]
    ) -> str:
        """The answer to a ``"json"`` request, asked for as ``json_mode`` says."""
        schema_name = request.schema_name
        path = "/chat/completions"
        prefix = _prefix(messages)
        mode = "json_schema" if self._json_mode == "auto" else self._json_mode
        payload = self._payload(request, messages=messages)
        if mode != "none":
            payload["response_format"] = _response_format(mode, schema_name, json_schema)
        # the answer is quoted in a StructuredOutputError if it does not validate: redacted
        if self._json_mode != "auto":
            url, data = await self._traced_post(path, payload, prefix)
            return self._redact(_text(url, data, chat=True, redact=self._redact))
        try:  # probe once without retries: a refusal is not transient
            url, data = await self._traced_post(path, payload, prefix, retries=0)
        except LLMServerError as exc:
            if exc.status in _SCHEMA_REJECTED or "response_format" in exc.body:
                self._json_mode = "json_object"  # remembered: ask this way from now on
                fmt = _response_format("json_object", schema_name, json_schema)
                payload["response_format"] = fmt
            url, data = await self._traced_post(path, payload, prefix)  # with retries
        except LLMConnectionError:
            url, data = await self._traced_post(path, payload, prefix)
        else:
            self._json_mode = "json_schema"
        return self._redact(_text(url, data, chat=True, redact=self._redact))

    # -- HTTP ----------------------------------------------------------------------------------

    def _payload(self, request: Request, **body: Any) -> dict[str, Any]:
        """The request body: the model, ``body`` (the prompt or the messages), the limits."""
        if request.max_tokens < 1:
            msg = f"max_tokens must be >= 1, got {request.max_tokens}"
            raise UsageError(msg)
        payload: dict[str, Any] = {
            "model": self.model,
            **body,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": request.kind == "stream",
        }
        stops = normalize_stop(request.stop)
        if stops:
            payload["stop"] = stops
        return payload

    def _stamp(self, payload: dict[str, Any], lease: Lease) -> None:
        """Put the lease's ``priority`` in the body when the server is told to get one."""
        if self.send_priority:
            if lease.priority is None:
                payload.pop("priority", None)
            else:
                payload["priority"] = lease.priority

    async def server_limit(self, replica: int) -> int | None:
        """How many sequences one replica says it serves at once, or ``None``.

        Asked of the server's root (the base URL without ``/v1``), each request answered
        within the connect timeout or taken as saying nothing:

        * ``GET /props``, ``total_slots``: llama.cpp's own server (``llama-server -np N``),
          which decodes its N slots in one batch;
        * ``GET /inference/v1/config``, ``scheduler.max_num_seqs``: vLLM's configuration
          endpoint, in vLLM's source of 2026 (``vllm/entrypoints/serve/config``). vLLM
          versions without it report ``max_num_seqs`` only in ``/server_info``, which is
          served in development mode alone (``VLLM_SERVER_DEV_MODE=1``) and is not asked:
          they get the default.

        llama-cpp-python's server (``python -m llama_cpp.server``, one sequence) and the
        benchmark's emulator answer neither, and get the default too. With
        ``max_inflight="server"`` the dispatcher asks each replica once, before the first
        call made inside a stage.
        """
        root = self.base_urls[replica].removesuffix("/v1")
        props = await self._get_json(f"{root}/props")
        slots = props.get("total_slots") if props else None
        if type(slots) is int and slots >= 1:
            return slots
        config = await self._get_json(f"{root}/inference/v1/config")
        scheduler = config.get("scheduler") if config else None
        seqs = scheduler.get("max_num_seqs") if isinstance(scheduler, dict) else None
        if type(seqs) is int and seqs >= 1:
            return seqs
        return None

    async def _get_json(self, url: str) -> dict[str, Any] | None:
        """``GET url``'s JSON object, or None (an error status, no JSON, no answer in time)."""
        try:
            with anyio.fail_after(self.connect_timeout):
                response = await self._http().get(url, timeout=self.connect_timeout)
                if response.status_code != 200:
                    return None
                data = response.json()
        except (httpx.HTTPError, TimeoutError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    async def _probe(self, replica: int) -> bool:
        """Whether a replica that failed answers again (``GET /models``, not 5xx)."""
        try:
            response = await self._http().get(
                f"{self.base_urls[replica]}/models", timeout=self.connect_timeout
            )
        except httpx.HTTPError:
            return False
        return response.status_code < 500

    async def _traced_post(
        self, path: str, payload: dict[str, Any], prefix: str, *, retries: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        """:meth:`_post`, in a model-call span when tracing is on (see :mod:`.._model_spans`)."""
        operation = "chat" if path == "/chat/completions" else "text_completion"
        with model_call(
            operation, self.model, "openai", server=self.base_url, request=payload
        ) as call:
            url, data = await self._post(path, payload, prefix, retries=retries)
            call.answered(data)
            return url, data

    async def _post(
        self, path: str, payload: dict[str, Any], prefix: str, *, retries: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        """POST and return the URL that answered and its JSON answer.

        The whole exchange is retried on failures, each attempt on the replica the
        dispatcher gives it.
        """
        retries = self.max_retries if retries is None else retries
        attempt = 0
        while True:
            attempt += 1
            async with self.dispatcher.lease(prefix) as lease:
                url = lease.target + path
                self._stamp(payload, lease)
                try:
                    response = await self._open(url, payload, attempt, retries, lease)
                    try:
                        body = await response.aread()
                    finally:
                        await response.aclose()
                except _Retry as retry:
                    delay = retry.delay
                except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                    # the answer was cut off: nothing reached the caller, so asking again is safe
                    lease.failed(replica_down=True)
                    if attempt > retries:
                        raise LLMConnectionError(url, _describe(exc), attempts=attempt) from exc
                    delay = self._delay(attempt, None)
                except httpx.TimeoutException as exc:
                    lease.failed(replica_down=False)
                    raise self._timeout(url, exc) from exc
                else:
                    try:
                        data = json.loads(body)
                    except ValueError as exc:
                        shown = describe_body(self._redact(body.decode(errors="replace")))
                        raise LLMProtocolError(url, f"expected a JSON body, got {shown}") from exc
                    if not isinstance(data, dict):
                        kind = type(data).__name__
                        raise LLMProtocolError(url, f"expected a JSON object, got {kind}")
                    lease.done(**_usage(data.get("usage")))
                    return url, data
            await anyio.sleep(delay)  # holding no slot

    async def _open(
        self, url: str, payload: dict[str, Any], attempt: int, retries: int, lease: Lease
    ) -> httpx.Response:
        """Send one request and return a response with a success status, its body unread.

        A failure is reported to ``lease`` (a connection failure or 5xx: the replica is
        down).

        Raises:
            _Retry: the attempt failed in a way worth retrying, and retries are left.
        """
        try:
            http = self._http()
            request = http.build_request("POST", url, json=payload)
            response = await http.send(request, stream=True)
        except (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.RemoteProtocolError,
            httpx.ReadError,
            httpx.WriteError,
        ) as exc:
            # protocol/read/write errors here: the connection broke before any answer
            lease.failed(replica_down=True)
            if attempt > retries:
                raise LLMConnectionError(url, _describe(exc), attempts=attempt) from exc
            raise _Retry(self._delay(attempt, None)) from exc
        except httpx.TimeoutException as exc:
            lease.failed(replica_down=False)
            raise self._timeout(url, exc) from exc
        except httpx.TransportError as exc:
            lease.failed(replica_down=True)
            raise LLMConnectionError(url, _describe(exc), attempts=attempt) from exc
        if response.status_code < 400:
            return response
        lease.failed(replica_down=response.status_code >= 500)
        try:
            body = (await response.aread()).decode(errors="replace")
        except httpx.HTTPError:
            body = ""
        finally:
            await response.aclose()
        if response.status_code in _RETRY_STATUS and attempt <= retries:
            raise _Retry(self._delay(attempt, response.headers.get("retry-after")))
        raise LLMServerError(url, response.status_code, self._redact(body), attempts=attempt)

    async def _stream(
        self, path: str, payload: dict[str, Any], prefix: str, call: Any = UNTRACED
    ) -> AsyncGenerator[str, None]:
        attempt = 0
        while True:
            attempt += 1
            lease = self.dispatcher.lease(prefix)
            await lease.__aenter__()
            url = lease.target + path
            self._stamp(payload, lease)
            try:
                response = await self._open(url, payload, attempt, self.max_retries, lease)
                break
            except _Retry as retry:
                await lease.__aexit__(None, None, None)
                await anyio.sleep(retry.delay)
            except BaseException as exc:
                await lease.__aexit__(type(exc), exc, exc.__traceback__)
                raise
        usage: Any = None
        try:
            kind = response.headers.get("content-type", "")
            if kind and "event-stream" not in kind:
                body = (await response.aread()).decode(errors="replace")
                raise LLMProtocolError(
                    url,
                    f"expected a text/event-stream answer, got {kind!r}: "
                    f"{self._redact(body)[:200]!r}",
                )
            declared = finished = False  # finish_reason fields seen, and a set one
            async for event in self._events(url, response):
                if "error" in event:  # vLLM reports failures mid-stream this way
                    error = event["error"]
                    code = error.get("code") if isinstance(error, dict) else None
                    status = code if isinstance(code, int) else response.status_code
                    raise LLMServerError(url, status, self._redact(json.dumps(event)))
                if event.get("usage"):
                    usage = event["usage"]
                    call.answered(event)  # token counts
                choices = event.get("choices")
                if not choices:
                    continue  # e.g. a usage-only chunk
                try:
                    choice = choices[0]
                    piece = (
                        choice["delta"].get("content") if "delta" in choice else choice.get("text")
                    )
                except (TypeError, KeyError, IndexError, AttributeError) as exc:
                    shown = self._redact(repr(event))[:200]
                    raise LLMProtocolError(url, f"unexpected stream chunk {shown}") from exc
                if "finish_reason" in choice:
                    declared = True
                    finished = finished or choice["finish_reason"] is not None
                if piece:
                    yield piece
            if declared and not finished:
                raise LLMProtocolError(
                    url,
                    "the stream ended with [DONE] before any finish_reason: the server cut the "
                    "answer short (llama.cpp's server does so to a stream when another request "
                    "arrives, unless started with --interrupt_requests False)",
                )
            lease.done(**_usage(usage))
        except BaseException as exc:
            await response.aclose()
            await lease.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        await response.aclose()
        await lease.__aexit__(None, None, None)

    async def _events(self, url: str, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        """Parse server-sent events.

        ``data:`` lines up to a blank line make one JSON event; ``data: [DONE]`` ends the
        stream; ``:`` lines are comments (keep-alives).
        """
        data: list[str] = []
        try:
            async for line in response.aiter_lines():
                if line == "":
                    if data:
                        payload, data = "\n".join(data), []
                        if payload.strip() == "[DONE]":
                            return
                        yield self._event(url, payload)
                    continue
                if line.startswith(":"):
                    continue
                field, colon, value = line.partition(":")
                if not colon or field not in _SSE_FIELDS:
                    raise LLMProtocolError(
                        url, f"malformed server-sent event line {self._redact(line)[:200]!r}"
                    )
                if field == "data":
                    data.append(value.removeprefix(" "))
        except httpx.TimeoutException as exc:
            raise self._timeout(url, exc) from exc
        except httpx.TransportError as exc:
            raise LLMConnectionError(url, f"the stream broke off: {_describe(exc)}") from exc
        if data:  # a last event without its blank line
            payload = "\n".join(data)
            if payload.strip() == "[DONE]":
                return
            yield self._event(url, payload)
        raise LLMProtocolError(url, "the stream ended without 'data: [DONE]' (cut off mid-answer?)")

    def _event(self, url: str, payload: str) -> dict[str, Any]:
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise LLMProtocolError(
                url,
                f"malformed server-sent event: data is not JSON: {self._redact(payload)[:200]!r}",
            ) from exc
        if not isinstance(event, dict):
            shown = self._redact(payload)[:200]
            raise LLMProtocolError(url, f"malformed server-sent event: {shown!r}")
        return event

    # -- helpers -------------------------------------------------------------------------------

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self._max_backoff, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date; use our own schedule
        ceiling: float = min(self._max_backoff, self._backoff * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def _timeout(self, url: str, exc: httpx.TimeoutException) -> LLMTimeoutError:
        if isinstance(exc, httpx.ConnectTimeout):
            return LLMTimeoutError(url, self.connect_timeout, "connect")
        phase = "write" if isinstance(exc, httpx.WriteTimeout) else "read"
        return LLMTimeoutError(url, self.timeout, phase)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


class _Retry(Exception):
    def __init__(self, delay: float) -> None:
        self.delay = delay


def _rebuild_client(
    settings: dict[str, Any],
    max_concurrency: int,
    identity: str | None = None,
    adopt: sharing.Adopt | None = None,
) -> OpenAIClient:
    client = OpenAIClient(**settings)
    client.max_concurrency = max_concurrency
    if identity is not None:
        client._identity = identity
    if adopt is not None:  # the dispatcher shared by the client's copies
        adopt(client)
    return client


def _prefix(messages: Sequence[Mapping[str, str]]) -> str:
    """The routing prefix of a chat.

    Its first ``PREFIX_CHARS`` characters, rendered as ``role: content`` lines.
    """
    parts: list[str] = []
    size = 0
    for message in messages:
        line = f"{message.get('role', '')}: {message.get('content', '')}\n"
        parts.append(line)
        size += len(line)
        if size >= PREFIX_CHARS:
            break
    return "".join(parts)[:PREFIX_CHARS]


def _usage(usage: Any) -> dict[str, int]:
    """``lease.done`` arguments from an answer's ``usage`` (zeros where it says nothing)."""
    if not isinstance(usage, dict):
        return {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return {
        "prompt_tokens": _count(usage.get("prompt_tokens")),
        "cached_tokens": _count(cached),
        "output_tokens": _count(usage.get("completion_tokens")),
    }


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _response_format(mode: str, name: str, json_schema: dict[str, Any]) -> dict[str, Any]:
    if mode == "json_object":
        return {"type": "json_object", "schema": json_schema}
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "answer"
    return {"type": "json_schema", "json_schema": {"name": safe, "schema": json_schema}}


def _text(url: str, data: dict[str, Any], *, chat: bool, redact: Callable[[str], str]) -> str:
    if "error" in data:
        shown = redact(repr(data["error"]))[:300]  # redacted before cut: no half key either
        raise LLMProtocolError(url, f"the server answered with an error: {shown}")
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
    except (KeyError, IndexError, TypeError) as exc:
        field = "choices[0].message.content" if chat else "choices[0].text"
        shown = redact(json.dumps(data))[:200]
        raise LLMProtocolError(url, f"expected {field} in {shown}") from exc
    return text or ""
