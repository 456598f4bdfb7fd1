"""Helpers of the fault-injection suite: servers that misbehave on cue, leak checks, the matrix.

* :class:`ScriptedServer`: an OpenAI-compatible HTTP server, on loopback, in a thread of its
  own, whose every answer is written by the test (so one prompt can get a 500, another a
  stalled stream, the next a healthy answer). It counts requests, open connections and
  connections the client gave up on (a timeout or a cancellation closed them).
* :class:`LlamaServer`: a real ``python -m llama_cpp.server`` on a free loopback port.
* :func:`snapshot` / :func:`assert_released`: asyncio tasks, threads and child processes
  before and after, so a test can show that a run stopped everything it started.
* :func:`fault`: the row of the fault matrix a test checks; ``docs/faults.md`` is rendered
  from these rows (``python tests/faults/faultkit.py`` rewrites it, and a test keeps it true).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import httpx
import psutil

from alto.operators.llm import (
    LLMConnectionError,
    LLMServerError,
    LLMTimeoutError,
    OpenAIClient,
)

HERE = Path(__file__).resolve().parent
DOC = HERE.parent.parent / "docs" / "faults.md"

RETRYABLE: tuple[type[BaseException], ...] = (LLMConnectionError, LLMTimeoutError, LLMServerError)
"""What a stage calling an LLM marks retryable (``retry_on``): a server that could not be
reached, did not answer in time, or answered 429/5xx after the client's own retries.
Protocol errors (garbage) and invalid structured output are not worth repeating."""


def client(url: str, **kw: Any) -> OpenAIClient:
    """An OpenAI client with quick retries and no API key, unless told otherwise."""
    kw.setdefault("api_key_env", None)
    kw.setdefault("backoff", 0.01)
    kw.setdefault("max_backoff", 0.05)
    return OpenAIClient(url, "test-model", **kw)


def words_of(text: str) -> list[str]:
    return re.findall(r"\S+", text)


def answer_for(prompt: str) -> str:
    """What a healthy scripted server answers to ``prompt``: its words reversed, upper-cased.

    Deterministic, so a plain-Python reference can say what every healthy root must get.
    """
    return " ".join(w.upper() for w in reversed(words_of(prompt)))


# -- a scripted OpenAI-compatible server ------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def prompt(self) -> str:
        """The last user message (chat) or the prompt (completion)."""
        data = self.json() or {}
        if "messages" in data:
            users = [m["content"] for m in data["messages"] if m.get("role") == "user"]
            return users[-1] if users else ""
        return str(data.get("prompt", ""))

    @property
    def streaming(self) -> bool:
        return bool((self.json() or {}).get("stream"))


class Reply:
    """How a handler answers one request: JSON, server-sent events, stalls, hang-ups."""

    def __init__(self, stream: anyio.abc.SocketStream, server: ScriptedServer) -> None:
        self._stream = stream
        self._server = server
        self.gone = anyio.Event()  # set when the client closes the connection
        self.hung_up = False  # the server dropped the connection itself

    async def raw(self, data: bytes) -> None:
        await self._stream.send(data)

    async def json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(raw)}", "Connection: close",
                "Content-Type: application/json"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await self.raw(("\r\n".join(head) + "\r\n\r\n").encode() + raw)

    async def chat(self, text: str) -> None:
        message = {"role": "assistant", "content": text}
        await self.json(200, {"choices": [{"index": 0, "message": message}]})

    async def sse_head(self) -> None:
        await self.raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                       b"Connection: close\r\n\r\n")

    async def delta(self, piece: str) -> None:
        chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
        await self.raw(b"data: " + json.dumps(chunk).encode() + b"\n\n")

    async def stream(self, text: str, *, done: bool = True) -> None:
        """The whole answer as server-sent events, one word per event."""
        await self.sse_head()
        for i, word in enumerate(words_of(text)):
            await self.delta(word if i == 0 else " " + word)
        if done:
            await self.raw(b"data: [DONE]\n\n")

    async def answer(self, request: Request, text: str) -> None:
        """``text`` the way the request asked for it (streamed or not)."""
        if request.streaming:
            await self.stream(text)
        else:
            await self.chat(text)

    async def reset(self) -> None:
        """Drop the connection abruptly (a TCP reset, as when the server process dies)."""
        self.hung_up = True
        sock = self._stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self._stream.aclose()

    async def stall(self) -> None:
        """Send nothing more until the client gives up and closes the connection."""
        await self.gone.wait()

    async def trickle(self, interval: float) -> None:
        """Stream tokens forever, one per ``interval`` seconds, until the client leaves."""
        await self.sse_head()
        n = 0
        with anyio.move_on_after(300):
            while not self.gone.is_set():
                await self.delta(f" t{n}")
                n += 1
                with anyio.move_on_after(interval):
                    await self.gone.wait()


Handler = Callable[[Request, Reply, int], Awaitable[None]]
"""``handler(request, reply, n)``: answer a request; ``n`` counts earlier requests with the
same prompt (0 the first time), so a handler can fail the first attempts only."""


class ScriptedServer:
    """An OpenAI-compatible server on 127.0.0.1 whose answers a test scripts.

    It runs its own event loop in a thread (tests that count their own tasks see none of
    its tasks), speaks HTTP/1.1 with one request per connection, and answers ``GET
    /v1/models`` by itself.

    Attributes:
        requests: every request, in arrival order.
        open: connections open now.
        abandoned: requests whose client closed the connection before the answer was done.
        gave_up: those requests.
        errors: exceptions the handler raised (the test fails on leaving the server).
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.open = 0
        self.abandoned = 0
        self.gave_up: list[Request] = []
        self.errors: list[Exception] = []
        self.url = ""
        self._seen: dict[str, int] = {}
        self._portal_cm: Any = None
        self._portal: Any = None
        self._future: Any = None
        self._stop: anyio.Event | None = None
        self._lock = threading.Lock()

    def with_text(self, needle: str) -> list[Request]:
        """The requests whose body contains ``needle``."""
        with self._lock:
            return [r for r in self.requests if needle in r.body.decode()]

    # -- lifecycle

    def start(self) -> ScriptedServer:
        self._portal_cm = anyio.from_thread.start_blocking_portal("asyncio")
        self._portal = self._portal_cm.__enter__()
        self._future, port = self._portal.start_task(self._serve, name="scripted-server")
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    def stop(self) -> None:
        if self._portal is not None:
            self._portal.call(self._stop.set)  # type: ignore[union-attr]
            self._future.result(timeout=30)
            self._portal_cm.__exit__(None, None, None)
            self._portal = self._portal_cm = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        if exc[0] is None:
            self.check()

    def check(self) -> None:
        """Fail if the handler raised: a test must not pass on a broken script."""
        if self.errors:
            msg = f"the scripted handler failed: {self.errors[0]!r}"
            raise AssertionError(msg) from (
                self.errors[0]
            )

    async def _serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        self._stop = anyio.Event()
        async with await anyio.create_tcp_listener(
            local_host="127.0.0.1", local_port=0
        ) as listener:
            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, self._one)
                task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
                await self._stop.wait()
                tg.cancel_scope.cancel()

    async def _one(self, stream: anyio.abc.SocketStream) -> None:
        with self._lock:
            self.open += 1
        try:
            async with stream:
                request = await read_request(stream)
                if request is None:
                    return
                if request.method == "GET":
                    body = json.dumps({"object": "list", "data": [{"id": "test-model"}]}).encode()
                    reply = Reply(stream, self)
                    await reply.json(200, body)
                    return
                with self._lock:
                    self.requests.append(request)
                    n = self._seen.get(request.prompt, 0)
                    self._seen[request.prompt] = n + 1
                reply = Reply(stream, self)
                finished = False
                async with anyio.create_task_group() as tg:

                    async def watch() -> None:
                        # the client sends nothing more on this connection: any read that
                        # returns means it closed it
                        try:
                            await stream.receive()
                        except (anyio.EndOfStream, anyio.BrokenResourceError,
                                anyio.ClosedResourceError):
                            pass
                        reply.gone.set()
                        if not finished and not reply.hung_up:
                            with self._lock:
                                self.abandoned += 1
                                self.gave_up.append(request)
                            tg.cancel_scope.cancel()

                    tg.start_soon(watch)
                    try:
                        await self.handler(request, reply, n)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        pass
                    except Exception as exc:  # a broken script: the test reports it
                        self.errors.append(exc)
                    finished = not reply.gone.is_set()
                    tg.cancel_scope.cancel()
        finally:
            with self._lock:
                self.open -= 1

    def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.01)
        return condition()


async def read_request(stream: anyio.abc.SocketStream) -> Request | None:
    """One HTTP/1.1 request read off ``stream`` (head and ``Content-Length`` body); ``None``
    when the client closes before a whole head arrived."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
    head, _, body = data.partition(b"\r\n\r\n")
    first, *lines = head.decode().split("\r\n")
    method, path, _ = first.split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += await stream.receive()
    return Request(method, path, headers, body)


@asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[ScriptedServer]:
    """A :class:`ScriptedServer` for an ``async with`` block (started off the event loop)."""
    server = ScriptedServer(handler)
    await anyio.to_thread.run_sync(server.start)
    try:
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.stop)
    server.check()


def refused_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# -- a real llama.cpp server ------------------------------------------------------------------


class LlamaServer:
    """``python -m llama_cpp.server`` on a free loopback port, small unless told otherwise:
    ``n_ctx`` tokens, ``threads`` CPU threads (``None``: the server's default).

    By default it is started with ``--interrupt_requests False``: otherwise the server cuts a
    running stream short whenever another request arrives (pass ``interrupt_requests=True``
    to get that, the server's own default).
    """

    def __init__(
        self,
        model: Path,
        *,
        n_ctx: int = 1024,
        threads: int | None = 1,
        interrupt_requests: bool = False,
    ) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._log = tempfile.TemporaryFile()
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx),
            "--verbose", "False", "--interrupt_requests", str(interrupt_requests),
        ]  # fmt: skip
        if threads is not None:
            cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=self._log, env=env)
        self._wait_ready(timeout=120)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self._log.seek(0)
        log = self._log.read().decode(errors="replace")[-3000:]
        self.stop()
        msg = f"llama_cpp.server did not become ready on port {self.port}:\n{log}"
        raise RuntimeError(msg)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


# -- what a run leaves behind -----------------------------------------------------------------


@dataclass
class Snapshot:
    """Asyncio tasks (other than the caller), threads and child processes at one moment."""

    tasks: set[asyncio.Task[Any]]
    threads: set[int]
    children: set[int]


def snapshot() -> Snapshot:
    try:
        current = asyncio.current_task()
        tasks = {t for t in asyncio.all_tasks() if t is not current and not t.done()}
    except RuntimeError:  # no event loop in this thread
        tasks = set()
    threads = {t.ident for t in threading.enumerate() if t.ident is not None}
    children = {p.pid for p in psutil.Process().children(recursive=True) if _alive(p)}
    return Snapshot(tasks, threads, children)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def leftovers(before: Snapshot) -> list[str]:
    """What runs now that did not run at ``before``: tasks, threads, child processes."""
    now = snapshot()
    names = {t.ident: t.name for t in threading.enumerate()}
    left = [f"task {t.get_name()} {t.get_coro()!r}" for t in now.tasks - before.tasks]
    left += [f"thread {names.get(i, i)!r}" for i in now.threads - before.threads]
    left += [f"child process {pid}" for pid in now.children - before.children]
    return left


async def assert_released(before: Snapshot, grace: float = 5.0) -> None:
    """Everything started since ``before`` has ended, allowing ``grace`` seconds (a llama.cpp
    thread notices its stop flag between tokens)."""
    with anyio.move_on_after(grace):
        while leftovers(before):
            await anyio.sleep(0.02)
    left = leftovers(before)
    assert not left, f"still running after the run ended: {left}"


def find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` in ``exc``, its exception groups and its causes."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        for linked in (e.__cause__, e.__context__):
            if linked is not None:
                todo.append(linked)
    return None


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the members of exception groups."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            todo.append(cause)


# -- the fault matrix -------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    fault: str
    observed: str
    roots: str
    where: str
    test: str = ""


F = TypeVar("F", bound=Callable[..., Any])


def fault(fault: str, *, observed: str, roots: str, where: str) -> Callable[[F], F]:
    """Mark a test as the check of one row of the fault matrix.

    Args:
        fault: what goes wrong.
        observed: what the user sees (a retry, which error, with which fields).
        roots: which root inputs are affected, and what the others get.
        where: what injects the fault (which server or model).
    """

    def mark(fn: F) -> F:
        rows = list(getattr(fn, "fault_rows", ()))
        rows.append(Row(fault, observed, roots, where))
        fn.fault_rows = rows  # type: ignore[attr-defined]
        return fn

    return mark


BEGIN = "<!-- fault matrix: generated by `python tests/faults/faultkit.py`; do not edit -->"
END = "<!-- end of fault matrix -->"


ORDER = ["llm", "llama_server", "emulator", "timeouts", "runtime", "dead_letters", "cancel",
         "memory", "bad_input", "security", "soak"]
"""The matrix's sections: ``test_fault_<name>.py`` in this order, then any others."""


def matrix_rows() -> list[Row]:
    """Every row checked by a test of this folder, by section, in definition order."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    rows: list[Row] = []
    paths = sorted(HERE.glob("test_*.py"), key=lambda p: (
        ORDER.index(p.stem[len("test_fault_"):]) if p.stem[len("test_fault_"):] in ORDER
        else len(ORDER), p.name))
    for path in paths:
        module = importlib.import_module(path.stem)
        for name, fn in vars(module).items():
            for row in getattr(fn, "fault_rows", ()):
                test = f"tests/faults/{path.name}::{name}"
                rows.append(Row(row.fault, row.observed, row.roots, row.where, test))
    return rows


def render_matrix(rows: list[Row]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [BEGIN, "", "| fault | injected by | what the user observes | roots affected | test |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {cell(r.fault)} | {cell(r.where)} | {cell(r.observed)} | "
                     f"{cell(r.roots)} | `{r.test.split('/')[-1]}` |")
    lines += ["", END]
    return "\n".join(lines)


def documented_matrix() -> str:
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def write_matrix() -> None:
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + render_matrix(matrix_rows()) + text[end:], encoding="utf-8")


__all__ = [
    "RETRYABLE",
    "LlamaServer",
    "Reply",
    "Request",
    "Row",
    "ScriptedServer",
    "Snapshot",
    "answer_for",
    "assert_released",
    "chain",
    "client",
    "documented_matrix",
    "fault",
    "find",
    "leftovers",
    "matrix_rows",
    "read_request",
    "refused_url",
    "render_matrix",
    "scripted",
    "snapshot",
]


if __name__ == "__main__":
    write_matrix()
    print(f"wrote the fault matrix to {DOC}")
