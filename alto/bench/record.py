"""Recording every operator call, the same way for every system under test.

The benchmark wraps the operators an app calls (``ops.llm``, ``ops.embedder``,
``ops.retriever``) in thin proxies that note each call: which step function made
it, when it started and ended, and for the LLM how long the prompt was and how many
tokens came back. Alto, the LangGraph variants and the asyncio reference all call
through the same proxies, so their timelines are comparable, and nothing relies on
one system's own instrumentation.

Two more things ride on the same proxies:

* **Root attribution.** The load driver runs each root input of a per-input system
  in its own task with :data:`current_root` set; calls made on its behalf (in that
  task or the tasks it spawns, which copy the context) carry the root's index. A call
  made inside an Alto stage call carries the roots of the call's fragments instead
  (:func:`alto.current_call`; a batched call serves several): Alto's own root indexes,
  which its system maps to the run's.
* **Causal dependencies** (only while :func:`tracking_dependencies` is active): each
  call records the earlier calls whose results the code making it had consumed, and
  for a token stream how many tokens it had read. A task starts with what its parent
  had consumed when it was spawned; reading a finished task's result (``result()``
  or ``await``) adds what that task had consumed. That is the dependency graph the
  critical-path bound (:mod:`alto.bench.bound`) is evaluated on.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from alto.lineage import current_call
from alto.operators.llm.base import LLM, Message, Request, normalize_messages

FULL = -1
"""Token count of a dependency on a whole call (not on a prefix of a stream)."""

current_root: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "alto_bench_root", default=None
)
"""The root input the code now running works for (set by the load driver)."""

def stage_roots() -> tuple[int, ...]:
    """The roots of the fragments of the Alto stage call running now, each once, in order.

    Empty outside a stage call (and under :data:`current_root`, whose systems have none).
    """
    if current_root.get() is not None:
        return ()
    call = current_call()
    return tuple(dict.fromkeys(call.roots)) if call is not None else ()


_SKIP = ("alto.operators", "alto.bench", "contextlib", "asyncio", "anyio")


@dataclass(frozen=True, slots=True)
class Call:
    """One operator call.

    Attributes:
        id: order of the call's start within its recorder (0, 1, ...).
        operator: ``"llm"``, ``"embedder"`` or ``"retriever"``.
        method: the method called (``chat``, ``stream``, ``json``, ``embed``, ``search`` ...).
        step: the app's function that made the call (e.g. ``judge``).
        start / end: ``time.perf_counter()`` at the call's start and end.
        root: the root input it worked for, when known (a per-input system's).
        roots: the Alto roots of the fragments of the stage call that made it (Alto's own
            root indexes; several for a batched call); empty outside a stage call.
        items: texts (or vectors) in the call; 1 for an LLM call.
        prompt_chars: LLM only: characters of the prompt as the server reads it.
        tokens: LLM only: completion tokens received (pieces, as the emulator cuts text).
        deps: ``(call id, tokens)`` pairs this call waited for; ``tokens`` is :data:`FULL`
            for a whole call, or the number of tokens read from a stream.
        queued_s: seconds spent waiting for a concurrency slot before ``start`` (0 when a
            slot was free, or there is no limit).
        error: the exception's type and message, if the call failed.
    """

    id: int
    operator: str
    method: str
    step: str
    start: float
    end: float
    root: int | None = None
    items: int = 1
    prompt_chars: int = 0
    tokens: int = 0
    deps: tuple[tuple[int, int], ...] = ()
    queued_s: float = 0.0
    error: str | None = None
    roots: tuple[int, ...] = ()

    @property
    def duration(self) -> float:
        """Seconds from the call's start to its end."""
        return self.end - self.start

    def as_dict(self, t0: float = 0.0) -> dict[str, Any]:
        """The call as a dict for JSON, its times in seconds from ``t0``."""
        return {
            "id": self.id,
            "operator": self.operator,
            "method": self.method,
            "step": self.step,
            "start": round(self.start - t0, 6),
            "end": round(self.end - t0, 6),
            "root": self.root,
            "items": self.items,
            "prompt_chars": self.prompt_chars,
            "tokens": self.tokens,
            "deps": [list(d) for d in self.deps],
            "queued_s": round(self.queued_s, 6),
            "error": self.error,
            "roots": list(self.roots),
        }


class _Node:
    """What one task's code has consumed so far: call id -> tokens (:data:`FULL` = all)."""

    __slots__ = ("seen",)

    def __init__(self, seen: dict[int, int] | None = None) -> None:
        self.seen: dict[int, int] = dict(seen or {})

    def note(self, call: int, tokens: int) -> None:
        old = self.seen.get(call)
        if old is None or old != FULL and (tokens == FULL or tokens > old):
            self.seen[call] = tokens

    def absorb(self, other: _Node) -> None:
        for call, tokens in other.seen.items():
            self.note(call, tokens)


_node: contextvars.ContextVar[_Node | None] = contextvars.ContextVar(
    "alto_bench_node", default=None
)


class _TrackedTask(asyncio.Task[Any]):
    """A task that hands what it consumed to whoever reads its result."""

    _alto_node: _Node | None = None

    def _hand_over(self) -> None:
        reader = _node.get()
        if reader is not None and self._alto_node is not None:
            reader.absorb(self._alto_node)

    def result(self) -> Any:
        value = super().result()
        self._hand_over()
        return value

    def __await__(self) -> Any:
        value = yield from super().__await__()
        self._hand_over()
        return value

    __iter__ = __await__


def _task_factory(
    loop: asyncio.AbstractEventLoop, coro: Any, context: Any = None
) -> asyncio.Task[Any]:
    ctx = (context if context is not None else contextvars.copy_context()).copy()
    parent = ctx.get(_node)
    child = _Node(parent.seen) if parent is not None else None
    if child is not None:
        ctx.run(_node.set, child)
    task = _TrackedTask(coro, loop=loop, context=ctx)
    task._alto_node = child
    return task


@contextlib.contextmanager
def tracking_dependencies() -> Iterator[_Node]:
    """Record causal dependencies of the calls made inside the block (on this event loop).

    Yields the node of the code running the block: after the block, ``node.seen`` holds
    what the block's result depends on (its code read those calls' results, directly or
    through tasks whose results it read).
    """
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    node = _Node()
    token = _node.set(node)
    loop.set_task_factory(_task_factory)
    try:
        yield node
    finally:
        loop.set_task_factory(previous)
        _node.reset(token)


def _caller_step() -> str:
    """The name of the first function up the stack outside operators, bench and asyncio."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(_SKIP):
            return frame.f_code.co_name
        frame = frame.f_back
    return "?"


def _prompt_text(messages: Sequence[Message]) -> str:
    """The prompt as the emulator reads it (the messages' contents, one per line)."""
    return "\n".join(str(m.get("content") or "") for m in messages)


def _tokens(text: str) -> int:
    from alto.bench.emulator.text import pieces

    return len(pieces(text))


@dataclass
class Recorder:
    """Collects :class:`Call` s; one per measured run.

    Attributes:
        calls: every finished call, in the order they ended.
        t0: ``time.perf_counter()`` when the recorder was made (timelines start here).
    """

    calls: list[Call] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)
    _next: int = 0

    def reset(self) -> None:
        """Forget every call and restart the timeline now, for the next run."""
        self.calls.clear()
        self._next = 0
        self.t0 = time.perf_counter()

    @contextlib.asynccontextmanager
    async def call(
        self,
        operator: str,
        method: str,
        *,
        items: int = 1,
        prompt_chars: int = 0,
        slots: asyncio.Semaphore | None = None,
    ) -> AsyncIterator[_Open]:
        """Time one call; the body fills in ``tokens`` (and ``progress`` for streams)."""
        step = _caller_step()
        asked = time.perf_counter()
        waited = False
        if slots is not None:
            waited = slots.locked()  # no permit free (or others waiting first): it queues
            await slots.acquire()
        try:
            node = _node.get()
            deps = tuple(sorted(node.seen.items())) if node is not None else ()
            opened = _Open(self._next, node)
            self._next += 1
            start = time.perf_counter()
            error = None
            try:
                yield opened
            except GeneratorExit:  # a stream its reader left early: not a failure
                raise
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
                raise
            finally:
                end = time.perf_counter()
                self.calls.append(Call(
                    opened.id, operator, method, step, start, end, current_root.get(), items,
                    prompt_chars, opened.tokens, deps, start - asked if waited else 0.0, error,
                    stage_roots(),
                ))  # fmt: skip
                if node is not None and error is None:
                    node.note(opened.id, FULL)
        finally:
            if slots is not None:
                slots.release()


class _Open:
    """A call in progress: its id, tokens so far, and the caller's dependency node."""

    __slots__ = ("id", "tokens", "_node", "_text")

    def __init__(self, call_id: int, node: _Node | None) -> None:
        self.id = call_id
        self.tokens = 0
        self._node = node
        self._text = ""

    def progress(self, piece: str) -> None:
        """A streamed piece reached the caller: code after this point has read it."""
        self._text += piece
        self.tokens = _tokens(self._text)  # pieces of all the text so far, as the server cut it
        if self._node is not None:
            self._node.note(self.id, self.tokens)


class RecordingLLM(LLM):
    """An :class:`LLM` that records every call of ``inner`` (and can bound their number).

    Args:
        inner: the LLM to call.
        recorder: where calls go.
        slots: if given, every call holds one of its permits while it runs (a client-side
            bound on the LLM calls in flight, shared by everything using this wrapper).
        anonymous_calls: make each call made outside a stage call an anonymous call (a root
            of its own, submitted as the call is made, no ancestry), so that ``inner``'s
            dispatcher admits it under its limit as it admits stage calls (it lets calls
            outside stages through at once). Nothing in it links one call to another.
    """

    def __init__(
        self,
        inner: LLM,
        recorder: Recorder,
        *,
        slots: asyncio.Semaphore | None = None,
        anonymous_calls: bool = False,
    ) -> None:
        self.inner = inner
        self.recorder = recorder
        self.slots = slots
        self.max_concurrency = inner.max_concurrency
        self.anonymous_calls = anonymous_calls
        self._run = f"anonymous-{uuid.uuid4().hex}"  # never another wrapper's
        self._roots = itertools.count()

    @contextlib.contextmanager
    def _as_call(self) -> Iterator[None]:
        """Inside the block, a call outside a stage call is an anonymous call.

        See ``anonymous_calls``. Set and reset in one task, with no yield to the caller
        between.
        """
        from alto import current_call
        from alto.ancestry.ancestry import root as root_ancestry
        from alto.lineage import CALL, CallSite, CallSlot

        if not self.anonymous_calls or current_call() is not None:
            yield
            return
        root = next(self._roots)
        slot = CallSlot()
        slot.site = CallSite(self._run, "anonymous", {root: time.monotonic()})
        slot.one = root_ancestry(root)
        token = CALL.set(slot)
        try:
            yield
        finally:
            CALL.reset(token)

    @property
    def name(self) -> str:
        """The inner LLM's name."""
        return self.inner.name

    async def _generate(self, request: Request) -> str:
        """The inner LLM's answer, recorded as one call with its prompt size and tokens."""
        prompt = request.prompt if request.kind == "complete" else _prompt_text(request.messages)
        async with self.recorder.call(
            "llm", request.kind, prompt_chars=len(prompt), slots=self.slots
        ) as call:
            with self._as_call():
                text = await _forward(self.inner, request)
            call.tokens = _tokens(text)
        return text

    async def _generate_stream(self, request: Request) -> AsyncGenerator[str, None]:
        """The inner LLM's stream, recorded as one call whose progress each piece advances."""
        async with self.recorder.call(
            "llm", "stream", prompt_chars=len(_prompt_text(request.messages)), slots=self.slots
        ) as call:
            source = self.inner.stream(
                request.messages, max_tokens=request.max_tokens,
                temperature=request.temperature, stop=request.stop,
            )  # fmt: skip
            async with contextlib.aclosing(source):
                with self._as_call():  # the first piece opens the stream (its lease)
                    piece = await anext(source, None)
                while piece is not None:
                    call.progress(piece)
                    yield piece
                    piece = await anext(source, None)

    async def aclose(self) -> None:
        """The inner LLM belongs to whoever opened it: closing the wrapper leaves it open."""


async def _forward(llm: LLM, request: Request) -> str:
    """Make ``request`` of ``llm`` through the entry point that made it.

    A wrapped LLM may override that entry point, and is called through it as before.
    """
    max_tokens, temperature, stop = request.max_tokens, request.temperature, request.stop
    if request.json_schema is not None:
        return await llm._generate_json(
            normalize_messages(request.messages), request.json_schema,
            schema_name=request.schema_name, max_tokens=max_tokens, temperature=temperature,
        )  # fmt: skip
    if request.kind == "complete":
        return await llm.complete(
            request.prompt, max_tokens=max_tokens, temperature=temperature, stop=stop
        )
    return await llm.chat(
        request.messages, max_tokens=max_tokens, temperature=temperature, stop=stop
    )


class RecordingEmbedder:
    """An embedder proxy that records ``embed`` and ``token_embeddings`` calls."""

    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder

    @property
    def dim(self) -> int:
        """The inner embedder's vector size."""
        return int(self.inner.dim)

    async def embed(self, texts: list[str]) -> Any:
        """The inner embedder's vectors of ``texts``, recorded as one call."""
        async with self.recorder.call("embedder", "embed", items=len(texts)):
            return await self.inner.embed(texts)

    def embed_sync(self, texts: list[str]) -> Any:
        """The inner embedder's vectors of ``texts``, synchronously and not recorded."""
        return self.inner.embed_sync(texts)

    async def token_embeddings(self, texts: list[str]) -> Any:
        """The inner embedder's token embeddings of ``texts``, recorded as one call."""
        async with self.recorder.call("embedder", "token_embeddings", items=len(texts)):
            return await self.inner.token_embeddings(texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RecordingRetriever:
    """A retriever proxy that records ``search``, ``search_vectors`` and ``rerank`` calls."""

    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder

    async def search(self, queries: Sequence[str], k: int = 5) -> Any:
        """The inner retriever's ``k`` best hits per query, recorded as one call."""
        async with self.recorder.call("retriever", "search", items=len(queries)):
            return await self.inner.search(queries, k)

    def search_vectors(self, vectors: Any, k: int = 5) -> Any:
        """The inner retriever's ``k`` best hits per vector, recorded as one (synchronous) call."""
        # synchronous: timed by hand (no await may happen inside)
        step = _caller_step()
        node = _node.get()
        deps = tuple(sorted(node.seen.items())) if node is not None else ()
        rec = self.recorder
        call_id = rec._next
        rec._next += 1
        start = time.perf_counter()
        error = None
        try:
            return self.inner.search_vectors(vectors, k)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            raise
        finally:
            end = time.perf_counter()
            rec.calls.append(
                Call(
                    call_id,
                    "retriever",
                    "search_vectors",
                    step,
                    start,
                    end,
                    current_root.get(),
                    len(vectors),
                    0,
                    0,
                    deps,
                    0.0,
                    error,
                    stage_roots(),
                )
            )
            if node is not None and error is None:
                node.note(call_id, FULL)

    async def rerank(self, query: str, hits: Sequence[Any], k: int | None = None) -> Any:
        """The inner retriever's reranking of ``hits`` for ``query``, recorded as one call."""
        async with self.recorder.call("retriever", "rerank", items=len(hits)):
            return await self.inner.rerank(query, hits, k)

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def recording_operators(
    ops: Any,
    recorder: Recorder,
    *,
    llm_slots: int | None = None,
    llm: LLM | None = None,
    anonymous_calls: bool = False,
) -> Any:
    """A copy of an :class:`~examples.common.Operators` bundle whose operators record calls.

    Args:
        ops: the bundle to wrap (its operators are shared, not copied).
        recorder: where the calls go.
        llm_slots: bound the LLM calls in flight through this bundle with one semaphore of
            that many permits, shared by all of them (None: no bound).
        llm: call this LLM instead of ``ops.llm`` (a system's own client).
        anonymous_calls: see :class:`RecordingLLM` (for a client whose dispatcher holds
            the cap over calls made outside stage calls).
    """
    from examples.common import Operators

    slots = asyncio.Semaphore(llm_slots) if llm_slots else None
    inner = llm if llm is not None else ops.llm
    wrapped = (
        RecordingLLM(inner, recorder, slots=slots, anonymous_calls=anonymous_calls)
        if inner is not None
        else None
    )
    return Operators(
        llm=wrapped,
        embedder=RecordingEmbedder(ops.embedder, recorder) if ops.embedder is not None else None,
        retriever=(
            RecordingRetriever(ops.retriever, recorder) if ops.retriever is not None else None
        ),
        labels=dict(ops.labels),
    )
