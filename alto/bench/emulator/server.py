"""A serving-timing emulator: an OpenAI-compatible HTTP server that is **not a model**.

It answers ``/v1/chat/completions`` and ``/v1/completions`` (JSON or SSE streaming, with
``response_format`` JSON schemas) with the *timing* of a GPU serving engine: time to first token
growing with the prompt, a per-token decode time, and a slowdown as more sequences run at once.
Its text is extractive, sentences taken from the prompt's own context (see ``_compose``), and
deterministic given the prompt and a seed, so pipelines do real work on it. Every answer says
what it is: ``model`` is ``"alto-timing-emulator"``, ``system_fingerprint`` and the ``server``
header say "timing emulation, not a model".

Benchmarks use it to compare orchestration (Alto vs LangGraph) under realistic LLM latency on
machines without a GPU. Faults (429/500 answers, stalls, dropped connections, malformed
events) can be switched on for fault-tolerance tests; by default there are none.

Run it in-process::

    with serve_emulator(EmulatorConfig(time_scale=1.0)) as base_url:
        llm = OpenAIClient(base_url, "emulated")

or standalone: ``python -m alto.operators.llm.emulator --port 8000``.
"""

from __future__ import annotations

import argparse
import json
import re
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, Literal, Self

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field

from alto.operators.llm._compose import (
    SchemaFiller,
    Source,
    chat_source,
    completion_source,
    count_tokens,
    seeded_rng,
    truncate,
)

EMULATOR_MODEL = "alto-timing-emulator"
FINGERPRINT = "alto-timing-emulator: timing emulation, not a model"
_HEADERS = {"server": EMULATOR_MODEL, "x-alto-emulator": "timing emulation, not a model"}


class FaultConfig(BaseModel):
    """Faults the emulator injects, for fault-tolerance tests. All off by default.

    Rates are per request, drawn from a generator seeded with ``seed`` in arrival order, so a
    run with the same requests in the same order sees the same faults.
    """

    model_config = ConfigDict(extra="forbid")

    fail_first: int = Field(
        default=0, ge=0, description="the first N requests fail with fail_status"
    )
    fail_status: int = Field(default=503, ge=400, le=599)
    rate_limit_rate: float = Field(
        default=0.0, ge=0, le=1, description="fraction answered HTTP 429"
    )
    retry_after_s: float = Field(default=0.05, ge=0, description="Retry-After sent with 429")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="fraction answered HTTP 500")
    stall_rate: float = Field(default=0.0, ge=0, le=1, description="fraction that stall stall_s")
    stall_s: float = Field(default=30.0, ge=0)
    stall_after_tokens: int = Field(
        default=0, ge=0, description="0: stall before answering; k: after k streamed tokens"
    )
    drop_rate: float = Field(default=0.0, ge=0, le=1, description="fraction whose connection drops")
    malformed_rate: float = Field(
        default=0.0, ge=0, le=1, description="fraction sending a malformed SSE event (or JSON body)"
    )
    break_after_tokens: int = Field(
        default=2, ge=0, description="tokens sent before a drop/malformed"
    )
    seed: int = 0


class EmulatorConfig(BaseModel):
    """The timing model and the text the emulator produces.

    Times (seconds) for one request::

        ttft   = (ttft_s + prompt_tokens / prefill_tokens_per_s) * (1 + ttft_slowdown * (n - 1))
        tpot   = tpot_s * (1 + batch_slowdown * max(0, n - batch_knee))
        answer = queueing + ttft + (tokens - 1) * tpot

    where ``n`` is the number of sequences running (prefill or decode) when the request
    starts (for ttft) and at each decode step (for tpot), at most ``max_num_seqs``; later
    requests queue. All times are multiplied by ``time_scale``.

    Defaults: vLLM serving Llama-3.1-8B-Instruct (BF16) on one H100-80GB. Source: the
    InferenceBench "concurrency sweep" recipe (yobitelcomm.github.io/bench/recipes/
    concurrency-sweep, vLLM 0.21, 2026-05): TTFT p50 14.0 ms and TPOT 6.5 ms at 1 concurrent
    request, 22.8 / 6.6 ms at 4, 41.7 / 10.9 ms at 16. ``batch_knee`` and ``batch_slowdown``
    fit the flat-then-rising TPOT (6.5 ms up to 4 sequences, 10.9 ms at 16);
    ``ttft_slowdown`` fits the TTFT growth. ``prefill_tokens_per_s`` is an estimate (8B
    parameters = 16 GFLOP per prompt token; ~25% of the H100's dense BF16 peak gives ~16k
    tokens/s), not a measurement. vLLM's default ``max_num_seqs`` is 256. Cross-check: a
    vLLM 0.23 sweep of the same model on one A100-40GB (johnmusgrave.com, "vLLM
    throughput-latency sweep on NVIDIA A100") decodes ~75 tokens/s at one request, 13.3 ms
    per token; the H100's ~2.1x memory bandwidth puts that near 6.3 ms.
    """

    model_config = ConfigDict(extra="forbid")

    ttft_s: float = Field(default=0.014, ge=0, description="time to first token of a short prompt")
    prefill_tokens_per_s: float = Field(default=16_000.0, gt=0)
    tpot_s: float = Field(default=0.0065, ge=0, description="time per output token, one sequence")
    batch_knee: int = Field(default=4, ge=1, description="sequences that decode at full speed")
    batch_slowdown: float = Field(
        default=0.0575, ge=0, description="tpot growth per sequence past knee"
    )
    ttft_slowdown: float = Field(default=0.15, ge=0, description="ttft growth per extra sequence")
    max_num_seqs: int = Field(
        default=256, ge=1, description="sequences served at once; others queue"
    )
    time_scale: float = Field(default=1.0, ge=0, description="multiplies every modeled time")
    chars_per_token: float = Field(default=4.0, gt=0, description="prompt length estimate")
    answer_sentences: int = Field(default=3, ge=1, description="sentences per text answer")
    output_tokens: int | None = Field(
        default=None, ge=1, description="fixed answer length in tokens (max_tokens still applies)"
    )
    array_items: int = Field(default=3, ge=0, description="items per JSON array answer")
    seed: int = 0
    faults: FaultConfig = Field(default_factory=FaultConfig)

    def ttft(self, prompt_tokens: int, running: int) -> float:
        """Modeled time to first token, in seconds, with ``running`` sequences (this one
        included)."""
        base = self.ttft_s + prompt_tokens / self.prefill_tokens_per_s
        return base * (1 + self.ttft_slowdown * max(0, running - 1)) * self.time_scale

    def tpot(self, running: int) -> float:
        """Modeled time per output token, in seconds, with ``running`` sequences."""
        extra = max(0, running - self.batch_knee)
        return self.tpot_s * (1 + self.batch_slowdown * extra) * self.time_scale


# -- the server ---------------------------------------------------------------------------------


class _Fault:
    NONE, FAIL, RATE_LIMIT, ERROR, STALL, DROP, MALFORMED = range(7)


class _State:
    """Counters and scheduling shared by every request of one server."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.requests = 0
        self.running = 0
        self.peak_running = 0
        self.completed = 0
        self.faults: dict[str, int] = {}
        self._fault_rng = seeded_rng(config.faults.seed, "faults")
        self._slots: anyio.Semaphore | None = None

    def slots(self) -> anyio.Semaphore:
        if self._slots is None:  # created on the server's own event loop
            self._slots = anyio.Semaphore(self.config.max_num_seqs)
        return self._slots

    def draw_fault(self) -> int:
        f = self.config.faults
        self.requests += 1
        r = self._fault_rng.random()
        fault = _Fault.NONE
        if self.requests <= f.fail_first:
            fault = _Fault.FAIL
        else:
            for kind, rate in (
                (_Fault.RATE_LIMIT, f.rate_limit_rate),
                (_Fault.ERROR, f.error_rate),
                (_Fault.STALL, f.stall_rate),
                (_Fault.DROP, f.drop_rate),
                (_Fault.MALFORMED, f.malformed_rate),
            ):
                if r < rate:
                    fault = kind
                    break
                r -= rate
        if fault != _Fault.NONE:
            name = ["none", "fail", "rate_limit", "error", "stall", "drop", "malformed"][fault]
            self.faults[name] = self.faults.get(name, 0) + 1
        return fault

    def stats(self) -> dict[str, Any]:
        return {
            "emulator": FINGERPRINT,
            "requests": self.requests,
            "running": self.running,
            "peak_running": self.peak_running,
            "completed": self.completed,
            "faults": dict(self.faults),
        }


class _BadRequest(Exception):
    pass


class _Dropped(Exception):
    """Raised inside a response body to cut the connection (an injected fault)."""


def create_app(config: EmulatorConfig | None = None) -> Any:
    """The emulator as a Starlette ASGI application (serve it with any ASGI server)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    state = _State(config or EmulatorConfig())

    def error(status: int, message: str, **headers: str) -> Response:
        body = {"error": {"message": message, "type": "emulated_error", "code": status}}
        return JSONResponse(body, status_code=status, headers={**_HEADERS, **headers})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "emulator": FINGERPRINT}, headers=_HEADERS)

    async def models(request: Request) -> Response:
        card = {"id": EMULATOR_MODEL, "object": "model", "owned_by": FINGERPRINT}
        return JSONResponse({"object": "list", "data": [card]}, headers=_HEADERS)

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats(), headers=_HEADERS)

    async def completions(request: Request) -> Response:
        return await handle(request, chat=False)

    async def chat_completions(request: Request) -> Response:
        return await handle(request, chat=True)

    async def handle(request: Request, *, chat: bool) -> Response:
        arrived = time.perf_counter()  # reading and composing count toward the ttft
        try:
            body = await request.json()
            job = _Job.from_request(body, state.config, chat=chat, arrived=arrived)
        except (ValueError, _BadRequest) as exc:
            return error(400, str(exc))
        fault = state.draw_fault()
        faults = state.config.faults
        if fault == _Fault.FAIL:
            return error(faults.fail_status, "emulated failure (fault injection)")
        if fault == _Fault.RATE_LIMIT:
            return error(429, "emulated rate limit", **{"retry-after": f"{faults.retry_after_s:g}"})
        if fault == _Fault.ERROR:
            return error(500, "emulated server error (fault injection)")
        if fault == _Fault.STALL and faults.stall_after_tokens == 0:
            await _stall(request, faults.stall_s)
            if await request.is_disconnected():
                return Response(status_code=499)
        if job.stream:
            return StreamingResponse(
                run_stream(job, fault), media_type="text/event-stream", headers=_HEADERS
            )
        if fault in (_Fault.DROP, _Fault.MALFORMED):
            return StreamingResponse(run_broken(job, fault), media_type="application/json")
        async with scheduled(job) as clock:
            for _ in clock:
                await clock.tick()
        return JSONResponse(job.response(clock.timing), headers=_HEADERS)

    @asynccontextmanager
    async def scheduled(job: _Job) -> AsyncIterator[_Clock]:
        waiting = time.perf_counter()
        async with state.slots():
            state.running += 1
            state.peak_running = max(state.peak_running, state.running)
            try:
                yield _Clock(state, job, queued=time.perf_counter() - waiting)
                state.completed += 1
            finally:
                state.running -= 1

    async def run_stream(job: _Job, fault: int) -> AsyncIterator[bytes]:
        faults = state.config.faults
        async with scheduled(job) as clock:
            for i in clock:
                await clock.tick()
                if fault == _Fault.STALL and i == faults.stall_after_tokens:
                    await anyio.sleep(faults.stall_s)
                if fault in (_Fault.DROP, _Fault.MALFORMED) and i == faults.break_after_tokens:
                    if fault == _Fault.DROP:
                        raise _Dropped("emulated dropped connection (fault injection)")
                    yield b'data: {"choices": [{"delta": {"content": \n\n'
                    return
                yield _sse(job.chunk(i))
            yield _sse(job.final_chunk(clock.timing))
            yield b"data: [DONE]\n\n"

    async def run_broken(job: _Job, fault: int) -> AsyncIterator[bytes]:
        async with scheduled(job) as clock:
            for _ in clock:
                await clock.tick()
        text = json.dumps(job.response(clock.timing)).encode()
        yield text[: len(text) // 2]
        if fault == _Fault.DROP:
            raise _Dropped("emulated dropped connection (fault injection)")

    routes = [
        Route("/health", health),
        Route("/stats", stats),
        Route("/v1/models", models),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.slots()  # on the server's loop, before the first request (the first costs ~20 ms)
        yield

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.emulator = state
    return app


async def _stall(request: Any, seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        await anyio.sleep(min(0.05, max(0.0, deadline - time.perf_counter())))
        if await request.is_disconnected():
            return


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


class _Job:
    """One request: what to say, and the bookkeeping to say it."""

    _ids = 0

    def __init__(
        self,
        *,
        chat: bool,
        stream: bool,
        text: str,
        stop: Sequence[str],
        max_tokens: int,
        prompt_tokens: int,
        arrived: float,
    ) -> None:
        _Job._ids += 1
        self.arrived = arrived
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-emulated-{_Job._ids}"
        self.chat = chat
        self.stream = stream
        self.pieces, self.finish_reason = truncate(text, stop, max_tokens)
        self.prompt_tokens = prompt_tokens
        self.created = int(time.time())

    @classmethod
    def from_request(cls, body: Any, config: EmulatorConfig, *, chat: bool, arrived: float) -> _Job:
        if not isinstance(body, dict):
            raise _BadRequest("the request body must be a JSON object")
        if body.get("n", 1) != 1:
            raise _BadRequest("n > 1 is not emulated")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        max_tokens = (256 if chat else 16) if max_tokens is None else max_tokens
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise _BadRequest(f"max_tokens must be a positive integer, got {max_tokens!r}")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        seed = body.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise _BadRequest(f"seed must be an integer, got {seed!r}")
        seed = config.seed if seed is None else config.seed * 1_000_003 + seed
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _BadRequest("'messages' must be a non-empty list")
            source = chat_source(messages, seed)
            prompt = "\n".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
        else:
            given = body.get("prompt")
            if isinstance(given, list) and len(given) == 1:
                given = given[0]
            if not isinstance(given, str):
                raise _BadRequest("'prompt' must be a string")
            prompt = given
            source = completion_source(prompt, seed)
        text = _answer(source, body.get("response_format"), config)
        return cls(
            chat=chat,
            stream=bool(body.get("stream", False)),
            text=text,
            stop=stop,
            max_tokens=max_tokens,
            prompt_tokens=count_tokens(prompt, config.chars_per_token),
            arrived=arrived,
        )

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "model": EMULATOR_MODEL,
            "system_fingerprint": FINGERPRINT,
        }

    def chunk(self, i: int) -> dict[str, Any]:
        if self.chat:
            delta = (
                {"role": "assistant", "content": self.pieces[i]}
                if i == 0
                else {"content": self.pieces[i]}
            )
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
            return {**self._base(), "object": "chat.completion.chunk", "choices": [choice]}
        choice = {"index": 0, "text": self.pieces[i], "finish_reason": None}
        return {**self._base(), "object": "text_completion", "choices": [choice]}

    def final_chunk(self, timing: dict[str, float]) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": self.finish_reason}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": "", "finish_reason": self.finish_reason}
            kind = "text_completion"
        return {
            **self._base(),
            "object": kind,
            "choices": [choice],
            "usage": self.usage(),
            "emulator": timing,
        }

    def usage(self) -> dict[str, int]:
        n = len(self.pieces)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": self.prompt_tokens + n,
        }

    def response(self, timing: dict[str, float]) -> dict[str, Any]:
        text = "".join(self.pieces)
        if self.chat:
            message = {"role": "assistant", "content": text}
            choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None}
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
            kind = "text_completion"
        choice["finish_reason"] = self.finish_reason
        return {
            **self._base(),
            "object": kind,
            "choices": [choice],
            "usage": self.usage(),
            "emulator": timing,
        }


def _answer(source: Source, response_format: Any, config: EmulatorConfig) -> str:
    if response_format is None:
        return source.answer(config.answer_sentences, config.output_tokens)
    if not isinstance(response_format, dict):
        raise _BadRequest("'response_format' must be an object")
    kind = response_format.get("type", "text")
    if kind == "text":
        return source.answer(config.answer_sentences, config.output_tokens)
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _BadRequest("response_format.json_schema.schema must be a JSON schema object")
    elif kind == "json_object":
        schema = response_format.get("schema")
        if schema is None:
            schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
        if not isinstance(schema, dict):
            raise _BadRequest("response_format.schema must be a JSON schema object")
    else:
        raise _BadRequest(f"response_format type {kind!r} is not supported")
    value = SchemaFiller(schema, source, array_items=config.array_items).fill()
    return json.dumps(value, ensure_ascii=False)


class _Clock:
    """Paces one answer: iterate token indices, ``await tick()`` before sending each.

    Deadlines are absolute (arrival + ttft + the sum of per-step tpot), so sleep overshoot
    does not accumulate.
    """

    def __init__(self, state: _State, job: _Job, *, queued: float) -> None:
        self.state = state
        self.job = job
        self.ttft = state.config.ttft(job.prompt_tokens, state.running)
        self.deadline = job.arrived + queued + self.ttft
        self.timing: dict[str, float] = {
            "started_at_s": time.perf_counter(),  # the server's clock (perf_counter)
            "finished_at_s": time.perf_counter(),
            "queued_s": queued,
            "modeled_ttft_s": self.ttft,
            "modeled_decode_s": 0.0,
            "tokens": float(len(job.pieces)),
        }
        self._first = True

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.job.pieces)))

    async def tick(self) -> None:
        if not self._first:
            step = self.state.config.tpot(self.state.running)
            self.deadline += step
            self.timing["modeled_decode_s"] += step
        self._first = False
        delay = self.deadline - time.perf_counter()
        if delay > 0:
            await anyio.sleep(delay)
        self.timing["finished_at_s"] = time.perf_counter()  # so far: the last token sent


# -- running it ---------------------------------------------------------------------------------

_READY = re.compile(r"serving (http://\S+)")


class EmulatorServer:
    """Runs the emulator on loopback, in a background thread or a child process.

    A process keeps the emulator's event loop off the caller's GIL (more faithful timing on
    small machines); a thread starts faster and shares nothing with the outside world either.

    Args:
        config: the timing model and faults.
        host: the address to bind; loopback by default.
        port: the port; 0 picks a free one.
        mode: ``"thread"`` or ``"process"``.

    Example:
        >>> with EmulatorServer(EmulatorConfig(tpot_s=0.01)) as server:  # doctest: +SKIP
        ...     print(server.base_url, server.stats()["requests"])
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        mode: Literal["thread", "process"] = "thread",
    ) -> None:
        if mode not in ("thread", "process"):
            raise ValueError(f"mode must be 'thread' or 'process', got {mode!r}")
        self.config = config or EmulatorConfig()
        self.host = host
        self.port = port
        self.mode = mode
        self.base_url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> str:
        """Start serving; returns the base URL (``http://host:port/v1``)."""
        if self.base_url:
            return self.base_url
        if self.mode == "thread":
            self._start_thread(timeout)
        else:
            self._start_process(timeout)
        return self.base_url

    def _start_thread(self, timeout: float) -> None:
        import uvicorn

        sock = _bind(self.host, self.port)
        port = sock.getsockname()[1]
        server = uvicorn.Server(_uvicorn_config(create_app(self.config), self.host, port))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="alto-emulator", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError(f"the emulator did not start on {self.host}:{port}")
            time.sleep(0.01)
        self._server, self._thread = server, thread
        self.port = port
        self.base_url = f"http://{_url_host(self.host)}:{port}/v1"

    def _start_process(self, timeout: float) -> None:
        errors = tempfile.TemporaryFile(mode="w+")  # closed below, or on error
        cmd = [
            sys.executable, "-m", "alto.operators.llm.emulator",
            "--host", self.host, "--port", str(self.port),
            "--config", self.config.model_dump_json(),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        match = _READY.search(line)
        if match is None:
            proc.kill()
            proc.wait()
            errors.seek(0)
            raise RuntimeError(
                f"the emulator process did not start within {timeout:g} s: {errors.read()[-2000:]}"
            )
        errors.close()
        self._process = proc
        self.base_url = match.group(1)
        self.port = int(self.base_url.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        """Stop serving (cuts open connections). Calling it twice is harmless."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True  # answers in flight get 1 s, then are cancelled
            self._thread.join(timeout=10)
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
        self._server = self._thread = self._process = None
        self.base_url = ""

    def stats(self) -> dict[str, Any]:
        """The server's counters: requests, running and peak running sequences, faults."""
        import httpx

        root = self.base_url.removesuffix("/v1")
        return dict(httpx.get(f"{root}/stats", timeout=10).json())

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)

    def __repr__(self) -> str:
        where = self.base_url or "not started"
        return f"<EmulatorServer (timing emulation, not a model) {where} mode={self.mode}>"


@contextmanager
def serve_emulator(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    mode: Literal["thread", "process"] = "thread",
) -> Iterator[str]:
    """Run the emulator for the duration of a ``with`` block; yields its base URL.

    Example:
        >>> with serve_emulator() as base_url:  # doctest: +SKIP
        ...     llm = OpenAIClient(base_url, "emulated")
    """
    with EmulatorServer(config, host=host, port=port, mode=mode) as server:
        yield server.base_url


@asynccontextmanager
async def serve_emulator_async(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    mode: Literal["thread", "process"] = "thread",
) -> AsyncIterator[str]:
    """Async form of :func:`serve_emulator` (starts and stops it off the event loop)."""
    async with EmulatorServer(config, host=host, port=port, mode=mode) as server:
        yield server.base_url


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio then turns Nagle's algorithm off on accepted
    # connections, which otherwise hold each kept-alive response back ~40 ms
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _uvicorn_config(app: Any, host: str, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="asyncio",
        lifespan="on",
        log_config=None,  # leave the host process's logging alone
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=1,
        backlog=2048,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m alto.operators.llm.emulator``: serve the emulator until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m alto.operators.llm.emulator",
        description="OpenAI-compatible serving-timing emulator (timing emulation, not a model).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: a free one)")
    parser.add_argument("--config", help="EmulatorConfig as JSON text, or @path to a JSON file")
    parser.add_argument("--time-scale", type=float, help="multiply every modeled time")
    parser.add_argument("--seed", type=int, help="seed for the emulated text")
    args = parser.parse_args(argv)
    raw: dict[str, Any] = {}
    if args.config:
        text = args.config
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        raw = json.loads(text)
    if args.time_scale is not None:
        raw["time_scale"] = args.time_scale
    if args.seed is not None:
        raw["seed"] = args.seed
    config = EmulatorConfig.model_validate(raw)
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    print(
        f"alto timing emulator (timing emulation, not a model) serving "
        f"http://{_url_host(args.host)}:{port}/v1",
        flush=True,
    )
    uvicorn.Server(_uvicorn_config(create_app(config), args.host, port)).run(sockets=[sock])


if __name__ == "__main__":
    main()
