"""Running the serving-timing emulator: in a thread, in a child process, or from the shell.

Timing emulation, not a model. ``python -m alto.bench.emulator --port P --replicas N
--balancer POLICY`` serves ``N`` replicas on one port: replica ``i`` at ``/r/{i}/v1``, the
balancer (``round-robin``, ``least-loaded`` or ``prefix-aware``) at ``/v1``. As vLLM, a
request's ``priority`` is honoured only with ``--scheduling-policy priority`` (the default,
``fcfs``, refuses a non-zero one).

In-process::

    with serve_emulator(EmulatorConfig(time_scale=1.0), replicas=4) as base_url:
        llm = OpenAIClient(base_url, "emulated")
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from alto.bench.emulator.balancer import EVICTION_INTERVAL_S, POLICIES, Policy
from alto.bench.emulator.config import EmulatorConfig
from alto.bench.emulator.server import SCHEDULING_POLICIES, SchedulingPolicy, create_app
from alto.bench.errors import BenchRunError
from alto.bench.loopback import (
    BackgroundServer,
    bind,
    serve_until_interrupted,
    start_child,
    stop_child,
    url_host,
    uvicorn_config,
)
from alto.errors import UsageError


@dataclass(eq=False, repr=False)
class EmulatorServer(BackgroundServer):
    """Runs the emulator on loopback, in a background thread or a child process.

    A process keeps the emulator's event loop off the caller's GIL (more faithful timing on
    small machines); a thread starts faster and shares nothing with the outside world either.

    Args:
        config: every replica's timing model, capacity, text and faults (default, or
            ``None``: ``EmulatorConfig()``).
        host: the address to bind; loopback by default.
        port: the port; 0 picks a free one.
        mode: ``"thread"`` or ``"process"``.
        replicas: emulated replicas served on the port, each with its own KV and prefix cache.
        balancer: the policy of ``/v1``: ``"round-robin"``, ``"least-loaded"`` or
            ``"prefix-aware"``.
        scheduling_policy: ``"fcfs"`` (vLLM's default; a non-zero ``priority`` is refused)
            or ``"priority"`` (waiting requests go lowest ``priority`` first).
        eviction_interval_s: the prefix-aware balancer's eviction period, modeled seconds.

    Example:
        >>> with EmulatorServer(EmulatorConfig(tpot_s=0.01)) as server:  # doctest: +SKIP
        ...     print(server.base_url, server.stats()["requests"])
    """

    config: EmulatorConfig = field(default_factory=EmulatorConfig)
    _: KW_ONLY
    host: str = "127.0.0.1"
    port: int = 0
    mode: Literal["thread", "process"] = "thread"
    replicas: int = 1
    balancer: Policy = "round-robin"
    scheduling_policy: SchedulingPolicy = "fcfs"
    eviction_interval_s: float = EVICTION_INTERVAL_S
    base_url: str = field(init=False, default="")
    _server: Any = field(init=False, default=None)
    _thread: threading.Thread | None = field(init=False, default=None)
    _process: subprocess.Popen[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.mode not in ("thread", "process"):
            msg = f"mode must be 'thread' or 'process', got {self.mode!r}"
            raise UsageError(msg)
        if self.balancer not in POLICIES:
            known = ", ".join(POLICIES)
            msg = f"balancer must be one of {known}, got {self.balancer!r}"
            raise UsageError(msg)
        if self.replicas < 1:
            msg = f"replicas must be at least 1, got {self.replicas}"
            raise UsageError(msg)
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            msg = f"scheduling_policy must be 'fcfs' or 'priority', got {self.scheduling_policy!r}"
            raise UsageError(msg)
        if self.eviction_interval_s < 0:
            msg = f"eviction_interval_s must be >= 0, got {self.eviction_interval_s}"
            raise UsageError(msg)
        if self.config is None:  # given as None: the defaults
            self.config = EmulatorConfig()

    def start(self, timeout: float = 30.0) -> str:
        """Start serving; returns the balancer's base URL (``http://host:port/v1``)."""
        if self.base_url:
            return self.base_url
        if self.mode == "thread":
            self._start_thread(timeout)
        else:
            self._start_process(timeout)
        return self.base_url

    def _start_thread(self, timeout: float) -> None:
        import uvicorn

        sock = bind(self.host, self.port)
        port = sock.getsockname()[1]
        app = create_app(
            self.config,
            replicas=self.replicas,
            balancer=self.balancer,
            scheduling_policy=self.scheduling_policy,
            eviction_interval_s=self.eviction_interval_s,
        )
        server = uvicorn.Server(uvicorn_config(app, self.host, port))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="alto-emulator", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                msg = f"the emulator did not start on {self.host}:{port}"
                raise BenchRunError(msg)
            time.sleep(0.01)
        self._server, self._thread = server, thread
        self.port = port
        self.base_url = f"http://{url_host(self.host)}:{port}/v1"

    def _start_process(self, timeout: float) -> None:
        cmd = [
            sys.executable, "-m", "alto.bench.emulator",
            "--host", self.host, "--port", str(self.port),
            "--replicas", str(self.replicas), "--balancer", self.balancer,
            "--scheduling-policy", self.scheduling_policy,
            "--eviction-interval-secs", repr(self.eviction_interval_s),
            "--config", self.config.model_dump_json(),
        ]  # fmt: skip
        proc, self.base_url = start_child(cmd, "the emulator process", timeout)
        self._process = proc
        self.port = int(self.base_url.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        """Stop serving (cuts open connections). Calling it twice is harmless."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True  # answers in flight get 1 s, then are cancelled
            self._thread.join(timeout=10)
        if self._process is not None:
            stop_child(self._process)
        self._server = self._thread = self._process = None
        self.base_url = ""

    @property
    def replica_urls(self) -> list[str]:
        """Each replica's own base URL (``http://host:port/r/{i}/v1``); empty when stopped."""
        if not self.base_url:
            return []
        root = self.base_url.removesuffix("/v1")
        return [f"{root}/r/{i}/v1" for i in range(self.replicas)]

    def stats(self) -> dict[str, Any]:
        """The server's counters.

        Requests, running and peak running sequences, faults, preemptions, the scheduling
        policy, the balancer's settings and its decisions per replica by kind, and each
        replica's own (``per_replica``, with its prefix cache).
        """
        import httpx

        root = self.base_url.removesuffix("/v1")
        return dict(httpx.get(f"{root}/stats", timeout=10).json())

    def __repr__(self) -> str:
        where = self.base_url or "not started"
        return (
            f"<EmulatorServer (timing emulation, not a model) {where} mode={self.mode} "
            f"replicas={self.replicas} balancer={self.balancer} "
            f"scheduling_policy={self.scheduling_policy}>"
        )


class Serving:
    """An :class:`EmulatorServer` running for one ``with`` or ``async with`` block.

    The block gets the balancer's base URL; the async form starts and stops the server off
    the event loop.
    """

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server

    def __enter__(self) -> str:
        return self.server.__enter__().base_url

    def __exit__(self, *exc: Any) -> None:
        self.server.__exit__(*exc)

    async def __aenter__(self) -> str:
        return (await self.server.__aenter__()).base_url

    async def __aexit__(self, *exc: Any) -> None:
        await self.server.__aexit__(*exc)


def serve_emulator(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    mode: Literal["thread", "process"] = "thread",
    replicas: int = 1,
    balancer: Policy = "round-robin",
    scheduling_policy: SchedulingPolicy = "fcfs",
    eviction_interval_s: float = EVICTION_INTERVAL_S,
) -> Serving:
    """Run the emulator for the duration of a ``with`` or ``async with`` block.

    The block gets the balancer's base URL; replica ``i`` is at the same address with
    ``/r/{i}/v1`` (:class:`EmulatorServer` lists them as ``replica_urls``). The async form
    starts and stops the emulator off the event loop.

    Example:
        >>> with serve_emulator() as base_url:  # doctest: +SKIP
        ...     llm = OpenAIClient(base_url, "emulated")
    """
    return Serving(
        EmulatorServer(
            config or EmulatorConfig(), host=host, port=port, mode=mode, replicas=replicas,
            balancer=balancer, scheduling_policy=scheduling_policy,
            eviction_interval_s=eviction_interval_s,
        )
    )  # fmt: skip


serve_emulator_async = serve_emulator
"""The name of :func:`serve_emulator` in ``async with`` blocks, which it serves as well."""


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m alto.bench.emulator``: serve the emulator until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m alto.bench.emulator",
        description="OpenAI-compatible serving-timing emulator (timing emulation, not a model).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: a free one)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas served (default 1)")
    parser.add_argument(
        "--balancer",
        default="round-robin",
        choices=POLICIES,
        help="how /v1 picks a replica (default round-robin)",
    )
    parser.add_argument(
        "--scheduling-policy",
        default="fcfs",
        choices=SCHEDULING_POLICIES,
        help="as vLLM's: fcfs (default) refuses a non-zero request priority; priority serves "
        "waiting requests lowest priority first",
    )
    parser.add_argument(
        "--eviction-interval-secs",
        type=float,
        default=EVICTION_INTERVAL_S,
        help="modeled seconds (times the time scale) between the prefix-aware balancer's "
        "eviction passes (default 120, as SGLang router's launcher; 0: none)",
    )
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
    if args.replicas < 1:
        parser.error(f"--replicas must be at least 1, got {args.replicas}")
    if args.eviction_interval_secs < 0:
        parser.error(f"--eviction-interval-secs must be >= 0, got {args.eviction_interval_secs}")
    app = create_app(
        config,
        replicas=args.replicas,
        balancer=args.balancer,
        scheduling_policy=args.scheduling_policy,
        eviction_interval_s=args.eviction_interval_secs,
    )
    serve_until_interrupted(
        app,
        args.host,
        args.port,
        "alto timing emulator (timing emulation, not a model)",
        f"{args.replicas} replica(s) at /r/{{i}}/v1, balancer {args.balancer}, "
        f"scheduling policy {args.scheduling_policy}",
    )
