"""End-to-end runtime tests run under every backend through the ``backend`` fixture.

Under ``ray`` the stage functions run in actor processes, so a test that
watches its stages (counts calls, waits for an event a stage sets) does it
through the ``shared`` fixture: counters, lists and events that live in this
process for ``local`` and in a small Ray actor for ``ray``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
import pytest

BACKENDS = [
    pytest.param("local", id="local"),
    pytest.param("ray", marks=pytest.mark.ray, id="ray"),
]

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ship_test_modules_by_value() -> None:
    """Make Ray pickle what test modules define by value.

    Test modules are not importable in Ray's workers (pytest puts their folder
    on this process's path only).
    """
    import ray.cloudpickle

    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if path.startswith(TESTS_DIR + os.sep):
            try:
                ray.cloudpickle.register_pickle_by_value(module)
            except ValueError:  # pragma: no cover - a module that left sys.modules
                pass


def start_local_ray() -> Any:
    """Start (once) the local Ray instance the ``ray`` tests share; returns the module."""
    import ray

    ship_test_modules_by_value()
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    return ray


@pytest.fixture
def test_code_by_value() -> None:
    """For tests that start their own Ray cluster: ship test modules' code by value."""
    ship_test_modules_by_value()


@pytest.fixture(scope="session")
def _ray_session():
    yield
    if "ray" in sys.modules:
        import ray

        ray.shutdown()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        pytest.importorskip("ray", reason="the ray backend needs Ray: pip install 'alto[ray]'")
        request.getfixturevalue("_ray_session")
        start_local_ray()
    return str(request.param)


class _Store:
    """Counters, lists and events by key (the state behind :class:`Shared`)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.events: dict[str, anyio.Event] = {}

    async def add(self, key: str, n: int = 1) -> int:
        self.values[key] = self.values.get(key, 0) + n
        return self.values[key]

    async def top(self, key: str, value: int) -> int:
        self.values[key] = max(self.values.get(key, value), value)
        return self.values[key]

    async def get(self, key: str, default: Any = 0) -> Any:
        return self.values.get(key, default)

    async def put(self, key: str, value: Any) -> None:
        self.values[key] = value

    async def append(self, key: str, value: Any) -> None:
        self.values.setdefault(key, []).append(value)

    def _event(self, key: str) -> anyio.Event:
        event = self.events.get(key)
        if event is None:
            event = self.events[key] = anyio.Event()
        return event

    async def set(self, key: str) -> None:
        self._event(key).set()

    async def add_when(self, key: str, gate: str) -> int:
        """Set event ``key + ".sent"``, wait for event ``gate``, then add 1 to ``key``."""
        self._event(key + ".sent").set()
        await self._event(gate).wait()
        return await self.add(key)

    async def wait(self, key: str) -> None:
        await self._event(key).wait()

    async def is_set(self, key: str) -> bool:
        return self._event(key).is_set()


class Shared:
    """State a test shares with its stage functions, wherever they run.

    Every method is a coroutine: ``await shared.add("calls")``, ``await
    shared.wait("release")``. Updates complete even in a cancelled call (a
    stage reporting its own cancellation); waits can be cancelled. Picklable:
    stage functions may capture it.
    """

    def __init__(self, handle: Any = None, prefix: str = "") -> None:
        self._handle = handle
        self._prefix = prefix  # tests share one store actor: each has its own keys
        self._store = _Store() if handle is None else None

    async def _call(self, method: str, key: str, *args: Any) -> Any:
        if self._handle is not None:
            return await getattr(self._handle, method).remote(self._prefix + key, *args)
        return await getattr(self._store, method)(key, *args)

    async def _update(self, method: str, *args: Any) -> Any:
        with anyio.CancelScope(shield=True):
            return await self._call(method, *args)

    async def add(self, key: str, n: int = 1) -> int:
        """Add ``n`` to counter ``key``; returns the new count."""
        return await self._update("add", key, n)

    async def top(self, key: str, value: int) -> int:
        """Keep the largest value seen under ``key``; returns it."""
        return await self._update("top", key, value)

    async def get(self, key: str, default: Any = 0) -> Any:
        return await self._call("get", key, default)

    async def put(self, key: str, value: Any) -> None:
        await self._update("put", key, value)

    async def append(self, key: str, value: Any) -> None:
        await self._update("append", key, value)

    async def set(self, key: str) -> None:
        """Set event ``key``."""
        await self._update("set", key)

    async def add_when(self, key: str, gate: str) -> int:
        """Add 1 to counter ``key`` once event ``gate`` is set; sets event ``key + ".sent"``
        as soon as the call reaches the store. Can be cancelled while it waits."""
        return await self._call("add_when", key, self._prefix + gate)

    async def wait(self, key: str) -> None:
        """Wait until event ``key`` is set."""
        await self._call("wait", key)

    async def is_set(self, key: str) -> bool:
        return await self._call("is_set", key)


_stores: dict[str, Any] = {}  # Ray job id -> the store actor the tests of that job share


@pytest.fixture
def shared(backend: str, request: pytest.FixtureRequest) -> Shared:
    """A :class:`Shared` for this test, living where the backend's stages can reach it."""
    if backend != "ray":
        return Shared()
    ray = start_local_ray()
    job = ray.get_runtime_context().get_job_id()
    if job not in _stores:
        _stores.clear()
        _stores[job] = ray.remote(_Store).options(num_cpus=0).remote()
    return Shared(_stores[job], prefix=request.node.nodeid + ":")
