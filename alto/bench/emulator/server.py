"""The emulator's HTTP server: OpenAI-compatible routes over replicas and a balancer.

Timing emulation, not a model. ``/v1/chat/completions`` and ``/v1/completions`` (JSON, or
SSE with ``stream: true``) go to the balancer, which picks a replica; ``/r/{i}/v1/...``
goes straight to replica ``i``. Answers carry ``usage.prompt_tokens_details.cached_tokens``
(prefix-cache hits), in the JSON body and, with ``stream_options: {"include_usage": true}``,
in a last usage chunk (without it, the finishing chunk carries the usage, as the emulator
always did). Every answer says what it is: ``model`` is ``"alto-timing-emulator"``, and
``system_fingerprint`` and the ``server`` header say "timing emulation, not a model".

A request's ``priority`` (an int, lower first; default 0) orders the waiting queue only on a
server started with ``scheduling_policy="priority"`` (vLLM's ``--scheduling-policy
priority``). Under the default ``"fcfs"`` a non-zero priority is refused as vLLM documents
it ("Any priority other than 0 will raise an error if the served model does not use priority
scheduling", the ``priority`` field of ``vllm/entrypoints/openai/protocol.py``) and as its
V0 engine raised it (``add_request`` in ``vllm/engine/llm_engine.py`` and
``async_llm_engine.py``: ``ValueError("Got priority {priority} but Priority scheduling is not
enabled.")``), which the OpenAI server answers with
400 and ``{"error": {"message": ..., "type": "BadRequestError", "param": null, "code": 400}}``
(``ErrorResponse`` in ``vllm/entrypoints/openai/protocol.py``). Priority 0 is always accepted.
vLLM's V1 engine, as read (``vllm/v1/engine/processor.py`` at 01055a4b,
``input_processor.py`` at 009daaee), no longer makes that check: it passes the priority on
and its FCFS queue ignores it. The emulator keeps the documented refusal, so a client that
sends priorities to a server not started for them finds out instead of being ignored.

The prefix-aware balancer's eviction pass runs on a timer, every ``eviction_interval_s`` of
modeled time (times ``time_scale``; never when time does not pass).

Faults (429/500 answers, stalls, dropped connections, malformed events) are drawn per
request in arrival order across the whole server; by default there are none.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio

from alto.bench.emulator.balancer import EVICTION_INTERVAL_S, Balancer, Policy
from alto.bench.emulator.batcher import Sequence as BatcherSequence
from alto.bench.emulator.config import BLOCK_TOKENS, EmulatorConfig
from alto.bench.emulator.prefix_cache import token_ids
from alto.bench.emulator.replica import EmulatedReplica
from alto.bench.emulator.text import (
    VARIED_ITEMS,
    VARIED_SENTENCES,
    SchemaFiller,
    Source,
    chat_source,
    completion_source,
    count_tokens,
    drawn_length,
    pieces,
    seeded_rng,
    truncate,
    varied_count,
)
from alto.errors import UsageError

EMULATOR_MODEL = "alto-timing-emulator"
SchedulingPolicy = Literal["fcfs", "priority"]
SCHEDULING_POLICIES: tuple[SchedulingPolicy, ...] = ("fcfs", "priority")
"""vLLM's ``--scheduling-policy`` choices (default ``fcfs``)."""
FINGERPRINT = "alto-timing-emulator: timing emulation, not a model"
_HEADERS = {"server": EMULATOR_MODEL, "x-alto-emulator": "timing emulation, not a model"}


class _Fault:
    NONE, FAIL, RATE_LIMIT, ERROR, STALL, DROP, MALFORMED = range(7)
    NAMES = ["none", "fail", "rate_limit", "error", "stall", "drop", "malformed"]


class _State:
    """Everything one server shares: the replicas, the balancer, the fault draws."""

    def __init__(
        self,
        config: EmulatorConfig,
        replicas: int,
        balancer: Policy,
        scheduling_policy: SchedulingPolicy,
        eviction_interval_s: float,
    ) -> None:
        self.config = config
        self.balancer = Balancer(balancer, replicas, eviction_interval_s=eviction_interval_s)
        self.scheduling_policy = scheduling_policy
        self.refused_priority = 0
        self.count = replicas
        self.replicas: list[EmulatedReplica] = []  # made on the server's event loop (lifespan)
        self.requests = 0
        self.peak_running = 0
        self.faults: dict[str, int] = {}
        self._fault_rng = seeded_rng(config.faults.seed, "faults")

    def start(self) -> None:
        origin = time.perf_counter()
        self.replicas = [EmulatedReplica(i, self.config, origin) for i in range(self.count)]

    def on_step(self) -> None:
        running = sum(len(r.batcher.running) for r in self.replicas)
        self.peak_running = max(self.peak_running, running)

    def route(self, index: int | None, text: str) -> EmulatedReplica:
        if index is None:
            index = self.balancer.choose(text, [r.in_flight for r in self.replicas])
        return self.replicas[index]

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
            name = _Fault.NAMES[fault]
            self.faults[name] = self.faults.get(name, 0) + 1
        return fault

    def stats(self) -> dict[str, Any]:
        per = [r.stats() for r in self.replicas]
        return {
            "emulator": FINGERPRINT,
            "replicas": self.count,
            "scheduling_policy": self.scheduling_policy,
            "refused_priority": self.refused_priority,
            "balancer": self.balancer.policy,
            "balancer_settings": self.balancer.settings(),
            "balancer_decisions": [dict(d) for d in self.balancer.decisions],
            "balancer_eviction_passes": self.balancer.eviction_passes,
            "requests": self.requests,
            "running": sum(p["running"] for p in per),
            "waiting": sum(p["waiting"] for p in per),
            "peak_running": self.peak_running,
            "completed": sum(p["completed"] for p in per),
            "preemptions": sum(p["preemptions"] for p in per),
            "faults": dict(self.faults),
            "per_replica": per,
        }


class _BadRequest(Exception):
    pass


class _Dropped(Exception):
    """Raised inside a response body to cut the connection (an injected fault)."""


def create_app(
    config: EmulatorConfig | None = None,
    *,
    replicas: int = 1,
    balancer: Policy = "round-robin",
    scheduling_policy: SchedulingPolicy = "fcfs",
    eviction_interval_s: float = EVICTION_INTERVAL_S,
) -> Any:
    """The emulator as a Starlette ASGI application (serve it with any ASGI server).

    Args:
        config: every replica's timing model, capacity, text and faults.
        replicas: emulated replicas served, replica ``i`` at ``/r/{i}/v1``; ``/v1`` is the balancer.
        balancer: ``"round-robin"``, ``"least-loaded"`` or ``"prefix-aware"``.
        scheduling_policy: ``"fcfs"`` (vLLM's default: a non-zero ``priority`` is refused
            with 400) or ``"priority"`` (waiting requests go lowest ``priority`` first).
        eviction_interval_s: the prefix-aware balancer's eviction period, modeled seconds
            (SGLang router's launcher default, 120 s; 0: no timer pass).

    Raises:
        UsageError: an unknown scheduling policy.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    if scheduling_policy not in SCHEDULING_POLICIES:
        msg = (
            f"scheduling_policy must be 'fcfs' or 'priority' (vLLM's --scheduling-policy), "
            f"got {scheduling_policy!r}"
        )
        raise UsageError(msg)
    state = _State(
        config or EmulatorConfig(), replicas, balancer, scheduling_policy, eviction_interval_s
    )

    def error(status: int, message: str, **headers: str) -> Response:
        body = {"error": {"message": message, "type": "emulated_error", "code": status}}
        return JSONResponse(body, status_code=status, headers={**_HEADERS, **headers})

    def replica_index(request: Request) -> int | None:
        raw = request.path_params.get("replica")
        if raw is None:
            return None
        index = int(raw)
        if not 0 <= index < state.count:
            msg = f"no replica {index}: this emulator serves {state.count}"
            raise _NotFound(msg)
        return index

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "emulator": FINGERPRINT}, headers=_HEADERS)

    async def models(request: Request) -> Response:
        card = {"id": EMULATOR_MODEL, "object": "model", "owned_by": FINGERPRINT}
        return JSONResponse({"object": "list", "data": [card]}, headers=_HEADERS)

    async def stats(request: Request) -> Response:
        try:
            index = replica_index(request)
        except _NotFound as exc:
            return error(404, str(exc))
        body = state.stats() if index is None else state.replicas[index].stats()
        return JSONResponse(body, headers=_HEADERS)

    async def completions(request: Request) -> Response:
        return await handle(request, chat=False)

    async def chat_completions(request: Request) -> Response:
        return await handle(request, chat=True)

    async def handle(request: Request, *, chat: bool) -> Response:
        try:
            index = replica_index(request)
            body = await request.json()
            job = _Job.from_request(body, state.config, chat=chat)
        except _NotFound as exc:
            return error(404, str(exc))
        except (ValueError, _BadRequest) as exc:
            return error(400, str(exc))
        if job.priority != 0 and state.scheduling_policy != "priority":
            state.refused_priority += 1
            message = f"Got priority {job.priority} but Priority scheduling is not enabled."
            body = {"error": {"message": message, "type": "BadRequestError", "param": None,
                              "code": 400}}  # fmt: skip
            return JSONResponse(body, status_code=400, headers=_HEADERS)
        capacity = state.replicas[0].batcher.pool.num_blocks * BLOCK_TOKENS
        if len(job.prompt_ids) + len(job.pieces) > capacity:
            return error(
                400,
                f"the prompt and answer ({len(job.prompt_ids)} + "
                f"{len(job.pieces)} tokens) exceed the emulated KV cache of "
                f"{capacity} tokens (kv_cache_tokens)",
            )
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
                run_stream(job, index, fault), media_type="text/event-stream", headers=_HEADERS
            )
        if fault in (_Fault.DROP, _Fault.MALFORMED):
            return StreamingResponse(run_broken(job, index, fault), media_type="application/json")
        async with served(job, index) as run:
            await run.finish()
        return JSONResponse(job.response(run.timing(), run.cached_tokens), headers=_HEADERS)

    @asynccontextmanager
    async def served(job: _Job, index: int | None) -> AsyncIterator[_Run]:
        replica = state.route(index, job.prompt)
        replica.in_flight += 1
        run = _Run(replica, job)
        try:
            await run.submit()
            yield run
        finally:
            run.release()
            replica.in_flight -= 1

    async def run_stream(job: _Job, index: int | None, fault: int) -> AsyncIterator[bytes]:
        faults = state.config.faults
        async with served(job, index) as run:
            async for i in run.tokens():
                if fault == _Fault.STALL and i == faults.stall_after_tokens:
                    await anyio.sleep(faults.stall_s)
                if fault in (_Fault.DROP, _Fault.MALFORMED) and i == faults.break_after_tokens:
                    if fault == _Fault.DROP:
                        msg = "emulated dropped connection (fault injection)"
                        raise _Dropped(msg)
                    yield b'data: {"choices": [{"delta": {"content": \n\n'
                    return
                yield _sse(job.chunk(i))
            timing = run.timing()
            if job.include_usage:
                yield _sse(job.final_chunk(timing, None))
                yield _sse(job.usage_chunk(run.cached_tokens))
            else:
                yield _sse(job.final_chunk(timing, run.cached_tokens))
            yield b"data: [DONE]\n\n"

    async def run_broken(job: _Job, index: int | None, fault: int) -> AsyncIterator[bytes]:
        async with served(job, index) as run:
            await run.finish()
        text = json.dumps(job.response(run.timing(), run.cached_tokens)).encode()
        yield text[: len(text) // 2]
        if fault == _Fault.DROP:
            msg = "emulated dropped connection (fault injection)"
            raise _Dropped(msg)

    async def reset_prefix_cache(request: Request) -> Response:
        """The ``POST /reset_prefix_cache`` of vLLM: forget every cached block no request holds.

        The prefix-aware balancer's trees are forgotten too, so a benchmark's runs start
        cold alike.
        """
        try:
            index = replica_index(request)
        except _NotFound as exc:
            return error(404, str(exc))
        chosen = state.replicas if index is None else [state.replicas[index]]
        dropped = sum(r.batcher.pool.reset_cache() for r in chosen)
        if index is None:
            state.balancer.reset()
        return JSONResponse({"dropped_blocks": dropped})

    routes = []
    for prefix in ("", "/r/{replica:int}"):
        routes += [
            Route(f"{prefix}/reset_prefix_cache", reset_prefix_cache, methods=["POST"]),
            Route(f"{prefix}/health", health),
            Route(f"{prefix}/stats", stats),
            Route(f"{prefix}/v1/models", models),
            Route(f"{prefix}/v1/completions", completions, methods=["POST"]),
            Route(f"{prefix}/v1/chat/completions", chat_completions, methods=["POST"]),
        ]

    async def evict_on_a_timer(period_s: float) -> None:
        """SGLang router's background eviction thread, on the emulator's clock."""
        while True:
            await anyio.sleep(period_s)
            state.balancer.evict()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.start()  # on the server's loop, before the first request
        async with anyio.create_task_group() as tg:
            for replica in state.replicas:
                tg.start_soon(replica.run, state.on_step)
            period = eviction_interval_s * state.config.time_scale
            if balancer == "prefix-aware" and period > 0 and math.isfinite(period):
                tg.start_soon(evict_on_a_timer, period)
            yield
            tg.cancel_scope.cancel()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.emulator = state
    return app


class _NotFound(Exception):
    pass


class _Run:
    """One request being served by one replica: submit, then wait for its tokens."""

    def __init__(self, replica: EmulatedReplica, job: _Job) -> None:
        self.replica = replica
        self.job = job
        self.seq: BatcherSequence | None = None

    async def submit(self) -> None:
        if self.job.pieces:  # an empty answer is sent at once, as a server would
            self.seq = await self.replica.submit(
                self.job.prompt_ids, self.job.output_ids, self.job.priority
            )

    async def tokens(self) -> AsyncIterator[int]:
        """Token indices, each as soon as the batcher has produced it."""
        sent = 0
        while sent < len(self.job.pieces):
            assert self.seq is not None
            delivered = await self.replica.wait(self.seq, sent)
            if self.seq.aborted:
                return
            while sent < min(delivered, len(self.job.pieces)):
                yield sent
                sent += 1

    async def finish(self) -> None:
        async for _ in self.tokens():
            pass

    @property
    def cached_tokens(self) -> int:
        return self.seq.cached_tokens if self.seq is not None else 0

    def release(self) -> None:
        if self.seq is not None:
            self.replica.release(self.seq)

    def timing(self) -> dict[str, float]:
        """The request's modeled times (seconds, scaled).

        Also when it ran, on the server's ``perf_counter`` clock.
        """
        r, seq, scale = self.replica, self.seq, self.replica.config.time_scale
        if seq is None or seq.first_token_at is None or seq.admitted_at is None:
            now = time.perf_counter()
            times = {"started_at_s": now, "finished_at_s": now, "queued_s": 0.0}
            times |= {"modeled_ttft_s": 0.0, "modeled_decode_s": 0.0}
            return {**times, "tokens": float(len(self.job.pieces)), "cached_tokens": 0.0,
                    "replica": float(r.index)}  # fmt: skip
        finished = seq.finished_at if seq.finished_at is not None else r.batcher.now
        return {
            "started_at_s": r.wall(seq.admitted_at),
            "finished_at_s": r.wall(finished),
            "queued_s": (seq.admitted_at - seq.entered_at) * scale,
            "modeled_ttft_s": (r.config.overhead_s + seq.first_token_at - seq.entered_at) * scale,
            "modeled_decode_s": (finished - seq.first_token_at) * scale,
            "tokens": float(len(self.job.pieces)),
            "cached_tokens": float(seq.cached_tokens),
            "preemptions": float(seq.preemptions),
            "replica": float(r.index),
        }


async def _stall(request: Any, seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        await anyio.sleep(min(0.05, max(0.0, deadline - time.perf_counter())))
        if await request.is_disconnected():
            return


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


class _Job:
    """One request: what to say, its tokens, and the answer's shape."""

    _ids = 0

    def __init__(
        self,
        *,
        chat: bool,
        stream: bool,
        include_usage: bool,
        text: str,
        stop: Sequence[str],
        max_tokens: int,
        prompt: str,
        priority: int,
        chars_per_token: float,
    ) -> None:
        _Job._ids += 1
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-emulated-{_Job._ids}"
        self.chat = chat
        self.stream = stream
        self.include_usage = include_usage
        self.pieces, self.finish_reason = truncate(text, stop, max_tokens)
        self.prompt = prompt
        self.prompt_tokens = count_tokens(prompt, chars_per_token)
        self.prompt_ids = token_ids(prompt, chars_per_token)
        self.output_ids = [zlib.crc32(p.encode()) for p in self.pieces]
        self.priority = priority
        self.created = int(time.time())

    @classmethod
    def from_request(cls, body: Any, config: EmulatorConfig, *, chat: bool) -> _Job:
        if not isinstance(body, dict):
            msg = "the request body must be a JSON object"
            raise _BadRequest(msg)
        if body.get("n", 1) != 1:
            msg = "n > 1 is not emulated"
            raise _BadRequest(msg)
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        max_tokens = (256 if chat else 16) if max_tokens is None else max_tokens
        if not isinstance(max_tokens, int) or max_tokens < 1:
            msg = f"max_tokens must be a positive integer, got {max_tokens!r}"
            raise _BadRequest(msg)
        priority = body.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            msg = f"priority must be an integer, got {priority!r}"
            raise _BadRequest(msg)
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        seed = body.get("seed")
        if seed is not None and not isinstance(seed, int):
            msg = f"seed must be an integer, got {seed!r}"
            raise _BadRequest(msg)
        seed = config.seed if seed is None else config.seed * 1_000_003 + seed
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            msg = "'stream_options' must be an object"
            raise _BadRequest(msg)
        varied = config.fanout == "varied"
        made_up = VARIED_SENTENCES[1] if varied else 4  # enough to draw the longest answer
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                msg = "'messages' must be a non-empty list"
                raise _BadRequest(msg)
            source = chat_source(messages, seed, made_up=made_up)
            prompt = "\n".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
        else:
            given = body.get("prompt")
            if isinstance(given, list) and len(given) == 1:
                given = given[0]
            if not isinstance(given, str):
                msg = "'prompt' must be a string"
                raise _BadRequest(msg)
            prompt = given
            source = completion_source(prompt, seed, made_up=made_up)
        text = _answer(source, body.get("response_format"), config, prompt, seed)
        return cls(
            chat=chat,
            stream=bool(body.get("stream", False)),
            include_usage=bool(options.get("include_usage", False)),
            text=text,
            stop=stop,
            max_tokens=max_tokens,
            prompt=prompt,
            priority=priority,
            chars_per_token=config.chars_per_token,
        )

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "model": EMULATOR_MODEL,
            "system_fingerprint": FINGERPRINT,
        }

    def _kind(self, chunk: bool) -> str:
        if self.chat:
            return "chat.completion.chunk" if chunk else "chat.completion"
        return "text_completion"

    def chunk(self, i: int) -> dict[str, Any]:
        if self.chat:
            delta = (
                {"role": "assistant", "content": self.pieces[i]}
                if i == 0
                else {"content": self.pieces[i]}
            )
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
        else:
            choice = {"index": 0, "text": self.pieces[i], "finish_reason": None}
        return {**self._base(), "object": self._kind(True), "choices": [choice]}

    def final_chunk(self, timing: dict[str, float], cached: int | None) -> dict[str, Any]:
        """The chunk with the finish reason; it carries the usage when ``cached`` is given."""
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": self.finish_reason}
        else:
            choice = {"index": 0, "text": "", "finish_reason": self.finish_reason}
        out = {**self._base(), "object": self._kind(True), "choices": [choice], "emulator": timing}
        if cached is not None:
            out["usage"] = self.usage(cached)
        return out

    def usage_chunk(self, cached: int) -> dict[str, Any]:
        """The last chunk under ``stream_options.include_usage``: no choices, the usage."""
        usage = self.usage(cached)
        return {**self._base(), "object": self._kind(True), "choices": [], "usage": usage}

    def usage(self, cached: int) -> dict[str, Any]:
        n = len(self.pieces)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": self.prompt_tokens + n,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    def response(self, timing: dict[str, float], cached: int) -> dict[str, Any]:
        text = "".join(self.pieces)
        if self.chat:
            message = {"role": "assistant", "content": text}
            choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
        choice["finish_reason"] = self.finish_reason
        return {
            **self._base(),
            "object": self._kind(False),
            "choices": [choice],
            "usage": self.usage(cached),
            "emulator": timing,
        }


def _answer(
    source: Source, response_format: Any, config: EmulatorConfig, prompt: str, seed: int
) -> str:
    varied = config.fanout == "varied"
    if response_format is None or (
        isinstance(response_format, dict) and response_format.get("type", "text") == "text"
    ):
        sentences = (
            varied_count(prompt, seed, *VARIED_SENTENCES, "sentences")
            if varied
            else config.answer_sentences
        )
        if config.output_lengths == "lognormal":
            length = drawn_length(
                prompt, seed, config.output_length_mean, config.output_length_sigma
            )
            return "".join(pieces(source.answer(sentences, length))[:length])
        return source.answer(sentences, config.output_tokens)
    if not isinstance(response_format, dict):
        msg = "'response_format' must be an object"
        raise _BadRequest(msg)
    kind = response_format.get("type", "text")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            msg = "response_format.json_schema.schema must be a JSON schema object"
            raise _BadRequest(msg)
    elif kind == "json_object":
        schema = response_format.get("schema")
        if schema is None:
            schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
        if not isinstance(schema, dict):
            msg = "response_format.schema must be a JSON schema object"
            raise _BadRequest(msg)
    else:
        msg = f"response_format type {kind!r} is not supported"
        raise _BadRequest(msg)
    items = varied_count(prompt, seed, *VARIED_ITEMS, "items") if varied else config.array_items
    value = SchemaFiller(schema, source, array_items=items).fill()
    return json.dumps(value, ensure_ascii=False)
