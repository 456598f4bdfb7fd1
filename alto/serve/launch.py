"""``alto serve TARGET``: find the flow, open what it needs, and serve it with uvicorn.

TARGET is an example app's name (``factcheck``; its models opened as ``alto run`` opens
them) or ``module:flow`` for a flow of one's own, importable from the current folder
(``myflows:summarize``, or ``pkg.mod:flow``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from alto.apps import APPS, CLIError, check_llm_server, load_app, read_config


@dataclass
class ServeOptions:
    """What ``alto serve`` was asked for (the parsed command line)."""

    target: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_inflight: int = 256
    deadline: float | None = None
    grace: float = 30.0
    backend: str = "local"
    address: str | None = None
    concurrency: int | None = None
    llm: str = "local"
    llm_url: str | None = None
    llm_model: str | None = None
    embedder: str = "minilm"
    config: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def load_flow(target: str) -> Any:
    """The flow named by ``module:attribute``, imported from the current folder."""
    from alto.flow import Flow

    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        msg = (
            f"{target!r} is neither an example app ({', '.join(APPS)}) nor "
                       "MODULE:FLOW (e.g. myflows:summarize)"
        )
        raise CLIError(msg)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = (
            f"cannot import module {module_name!r} (from {os.getcwd()}): {exc}; "
                       "run alto serve from the folder that holds it"
        )
        raise CLIError(msg) from exc
    try:
        found = getattr(module, attribute)
    except AttributeError:
        names = sorted(n for n, v in vars(module).items() if isinstance(v, Flow))
        hint = f"; its flows: {', '.join(names)}" if names else "; it defines no flow"
        msg = f"module {module_name!r} has no attribute {attribute!r}{hint}"
        raise CLIError(msg) from None
    if not isinstance(found, Flow):
        msg = (
            f"{target!r} is a {type(found).__name__}, not a flow; point at an "
                       "@alto.flow-decorated function"
        )
        raise CLIError(msg)
    return found


@contextlib.asynccontextmanager
async def open_target(options: ServeOptions) -> AsyncIterator[tuple[Any, list[Any], str]]:
    """The flow to serve, its model endpoints (for ``/metrics``) and a label.

    For an example app, its operators stay open for the block's length.
    """
    if ":" in options.target or options.target not in APPS:
        if ":" not in options.target:
            load_app(options.target)  # the unknown-app message, with the apps listed
        yield load_flow(options.target), [], options.target
        return
    app = load_app(options.target)  # puts the repository, with examples/, on the path

    from alto.operators.llm.observe import endpoints_of
    from examples.common import open_operators

    if options.llm == "openai":
        if not options.llm_url:
            msg = "--llm openai needs --llm-url (e.g. http://127.0.0.1:8000/v1)"
            raise CLIError(msg)
        check_llm_server(options.llm_url)
    config = read_config(app, options.config) if options.config else None
    async with open_operators(app.NEEDS, llm=options.llm, llm_url=options.llm_url,  # type: ignore[arg-type]
                              llm_model=options.llm_model,
                              embedder=options.embedder) as ops:  # type: ignore[arg-type]
        flow = app.build(ops, config)
        endpoints = endpoints_of([ops.llm, ops.embedder, ops.retriever])
        models = "; ".join(f"{k}: {v}" for k, v in ops.labels.items())
        yield flow, endpoints, f"{app.NAME} ({models})"


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio then turns Nagle's algorithm off on accepted connections,
    # which would otherwise hold small kept-alive responses back by tens of milliseconds
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        msg = (
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another "
                       "--port"
        )
        raise CLIError(msg) from exc
    sock.listen(2048)
    return sock


def server(service: Any, sock: socket.socket, *, out: Any = None) -> Any:
    """A uvicorn server for ``service`` (a :class:`~alto.serve.Service`) on ``sock``.

    At shutdown (``should_exit``, Ctrl-C, SIGTERM) it drains the pipeline first: new
    requests get 503 while the inputs in flight get ``service.grace`` seconds to finish;
    those still running then are cancelled and answered as such. Only then does uvicorn
    close the connections, so every accepted request gets its answer.
    """
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: list[int]  # the signals that stopped it (Ctrl-C: SIGINT)

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.stopped_by = [*getattr(self, "stopped_by", []), sig]
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if out is not None:
                print(f"alto serve: draining {service.pipeline.inflight} inputs in flight "
                      f"(grace {service.grace:g} s)", file=out, flush=True)
            await service.pipeline.drain(service.grace)
            await super().shutdown(sockets)
            if out is not None:
                counts = service.metrics.outcomes
                print("alto serve: stopped; inputs answered: " + ", ".join(
                    f"{n} {kind}" for kind, n in counts.items()), file=out, flush=True)

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(service.asgi(), host=host, port=port, loop="asyncio",
                            lifespan="on", log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, backlog=2048)
    return Server(config)


async def serve(options: ServeOptions, *, out: Any = None) -> int:
    """Serve ``options.target`` until interrupted (Ctrl-C or SIGTERM: a graceful drain)."""
    out = out or sys.stderr
    if options.max_inflight < 1:
        msg = f"--max-inflight must be at least 1, got {options.max_inflight}"
        raise CLIError(msg)
    if options.deadline is not None and not options.deadline > 0:
        msg = f"--deadline must be seconds > 0, got {options.deadline}"
        raise CLIError(msg)
    if options.concurrency is not None and options.concurrency < 1:
        msg = f"--concurrency must be at least 1, got {options.concurrency}"
        raise CLIError(msg)
    sock = listening_socket(options.host, options.port)
    try:
        with _ray_connected(options):
            return await _serve_on(options, sock, out)
    finally:
        sock.close()


@contextlib.contextmanager
def _ray_connected(options: ServeOptions) -> Any:
    """On Ray, connect before the server installs its signal handlers.

    ``ray.init`` installs its own SIGTERM handler, which would otherwise stop the service
    without a drain. The connection also outlives the pipeline, for the dispatchers'
    figures.
    """
    if options.backend != "ray":
        yield
        return
    from alto.runtime.ray.backend import connected

    with connected(options.address):
        yield


async def _serve_on(options: ServeOptions, sock: socket.socket, out: Any) -> int:
    from alto.serve.asgi import Service

    async with open_target(options) as (flow, endpoints, label):
        run_options: dict[str, Any] = dict(options.extra)
        if options.concurrency is not None:
            run_options["concurrency"] = options.concurrency
        if options.address is not None:
            run_options["address"] = options.address
        service = Service(flow, max_inflight=options.max_inflight,
                          deadline=options.deadline, grace=options.grace,
                          backend=options.backend, endpoints=endpoints, **run_options)
        uv = server(service, sock, out=out)
        host, port = sock.getsockname()[:2]
        where = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        print(f"alto serve: flow {flow.name!r}: {label}; {options.backend} backend; "
              f"at most {options.max_inflight} inputs in flight", file=out)
        print(f"alto serve: listening on {where} (POST /v1/runs, POST /v1/runs/stream, "
              "GET /v1/flow, /health, /metrics); Ctrl-C drains and stops", file=out,
              flush=True)
        await uv.serve(sockets=[sock])
    # Ctrl-C exits 130 like every other command. uvicorn raises the signal it caught again
    # once it has stopped, but whether that reaches the CLI as a KeyboardInterrupt depends on
    # whether this task awaits again before it returns; the answer must not.
    return 130 if signal.SIGINT in getattr(uv, "stopped_by", []) else 0
