"""A real service on loopback for each test, under every backend.

``serving(flow, ...)`` starts :class:`alto.serve.Service` behind uvicorn on a free
loopback port in the test's own event loop, and stops it (a graceful shutdown) when the
block ends. The ``backend`` and ``shared`` fixtures are the runtime tests' own: under
``ray`` the stage functions run in actors and report through ``shared``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from tests.runtime.conftest import _ray_session, backend, shared  # noqa: F401 (fixtures)

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

STARTUP_S = 120  # starting Ray actors on a loaded 2-core machine can take tens of seconds


@dataclass
class Served:
    """A running service: its base URL, the :class:`Service`, and the uvicorn server."""

    url: str
    service: Any
    server: Any

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=kwargs.pop("timeout", 120), **kwargs)


@contextlib.asynccontextmanager
async def serving(flow: Any, **options: Any) -> AsyncIterator[Served]:
    """Serve ``flow`` on loopback for the block's length; stopped (drained) on exit."""
    from alto.serve import Service
    from alto.serve.launch import listening_socket, server

    service = Service(flow, **options)
    sock = listening_socket("127.0.0.1", 0)
    uv = server(service, sock)
    port = sock.getsockname()[1]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: uv.serve(sockets=[sock]))
            try:
                with anyio.fail_after(STARTUP_S):
                    while not (uv.started and service.pipeline.running):
                        await anyio.sleep(0.01)
                yield Served(f"http://127.0.0.1:{port}", service, uv)
            finally:
                uv.should_exit = True
    finally:
        sock.close()


async def wait_for(check: Any, timeout: float = 60) -> None:
    """Wait until the coroutine function ``check()`` returns true (fails after ``timeout``)."""
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.01)
