"""Serving on loopback: binding a socket, uvicorn's settings, and child server processes.

Shared by the serving-timing emulator (:mod:`alto.bench.emulator`) and the balancer proxy
(:mod:`alto.bench.proxy`). A child server prints one line holding ``serving http://…`` once its
socket is bound; :func:`start_child` waits for that line and returns the URL.
"""

from __future__ import annotations

import re
import select
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Self

import anyio
import anyio.to_thread

from alto.bench.errors import BenchRunError

_READY = re.compile(r"serving (http://\S+)")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), inheritable."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio then turns Nagle's algorithm off on accepted
    # connections, which otherwise hold each kept-alive response back ~40 ms
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host


def uvicorn_config(app: Any, host: str, port: int) -> Any:
    """The settings of uvicorn for a loopback server: quiet, the host's logging left alone."""
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


def serve_until_interrupted(app: Any, host: str, port: int, what: str, detail: str) -> None:
    """Serve ``app`` with uvicorn on ``host:port`` (0: a free port) until interrupted.

    First prints the line :func:`start_child` waits for:
    ``{what} serving http://host:port/v1 ({detail})``.
    """
    import uvicorn

    sock = bind(host, port)
    port = sock.getsockname()[1]
    print(f"{what} serving http://{url_host(host)}:{port}/v1 ({detail})", flush=True)
    uvicorn.Server(uvicorn_config(app, host, port)).run(sockets=[sock])


def start_child(cmd: list[str], what: str, timeout: float) -> tuple[subprocess.Popen[str], str]:
    """Start ``cmd`` and wait for its ``serving http://…`` line.

    Returns:
        The process and the URL it printed.

    Raises:
        BenchRunError: it exited or printed no such line within ``timeout`` seconds; the
            message ends with the tail of its standard error.
    """
    errors = tempfile.TemporaryFile(mode="w+")  # closed below
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    match = _READY.search(line)
    if match is None:
        proc.kill()
        proc.wait()
        errors.seek(0)
        tail = errors.read()[-2000:]
        errors.close()
        msg = f"{what} did not start within {timeout:g} s: {tail}"
        raise BenchRunError(msg)
    errors.close()
    return proc, match.group(1)


def stop_child(proc: subprocess.Popen[Any]) -> None:
    """Terminate ``proc`` (killed after 10 s) and close its output pipe."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def wait_until_ready(
    url: str,
    process: subprocess.Popen[Any],
    *,
    what: str,
    log: Callable[[], str],
    deadline: float,
    timeout: float,
    every: float,
) -> None:
    """Poll ``GET url`` every ``every`` seconds until it answers 200.

    Another status, or no connection yet, means not ready yet.

    Args:
        url: what to ask.
        process: the server's process.
        what: the server's name in errors.
        log: the end of the server's log, for errors.
        deadline: when to give up (``time.monotonic()``).
        timeout: the seconds the deadline gave, for errors.
        every: seconds between polls.

    Raises:
        BenchRunError: ``process`` exited, or the deadline passed; the message ends with
            ``log()``.
    """
    import httpx

    while True:
        if process.poll() is not None:
            msg = f"{what} exited with status {process.returncode}: {log()}"
            raise BenchRunError(msg)
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            msg = f"{what} did not answer GET {url} within {timeout:g} s: {log()}"
            raise BenchRunError(msg)
        time.sleep(every)


class BackgroundServer(ABC):
    """A server that :meth:`start` runs in the background and :meth:`stop` ends.

    A context manager, sync or async (the async form starts and stops it off the event
    loop).
    """

    @abstractmethod
    def start(self, timeout: float = ...) -> Any:
        """Start serving and wait until it answers."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving. Calling it twice is harmless."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)
