"""A flow as an HTTP service: the ASGI app (Starlette) and the :class:`Service` behind it.

Routes:

* ``POST /v1/runs``, body ``{"inputs": [ARGS, ...]}``: every input's outcome, in input
  order: ``{"results": [{"index": 0, "output": ...}, {"index": 1, "error": {...}}]}``.
* ``POST /v1/runs/stream``, the same body: Server-Sent Events, one ``data:`` line per input
  as it completes, then ``event: end``.
* ``GET /v1/flow``: the plan (parameters, stages, levels, Mermaid).
* ``GET /health``: 200 while the pipeline runs and admits, else 503.
* ``GET /metrics``: Prometheus text (see :mod:`alto.serve.metrics`).

Statuses: 400 for a body that is not JSON, 422 for one that does not fit the flow (naming
the field), 429 with ``Retry-After`` past ``max_inflight``, 503 while shutting down. A
client that disconnects before its answer cancels its inputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from functools import partial
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from alto.errors import UsageError
from alto.serve.metrics import ServiceMetrics
from alto.serve.pipeline import (
    Batch,
    Overloaded,
    PerRequestRuns,
    SharedPipeline,
    Ticket,
    Unavailable,
)
from alto.serve.schema import BadRequest, RequestSchema, error_json, output_json

log = logging.getLogger("alto.serve")

DEFAULT_MAX_INFLIGHT = 256
DEFAULT_GRACE_S = 30.0


class Service:
    """A flow served over HTTP.

    The pipeline that runs its inputs, request validation, metrics, and the ASGI app.

    Args:
        flow: the :class:`~alto.Flow` to serve.
        max_inflight: the most inputs in flight at once, over all requests; a request that
            would exceed it is refused with 429 and ``Retry-After``.
        deadline: seconds each input may take from when it enters; past it the input fails
            with ``DeadlineExceeded`` and its stage calls are stopped.
        grace: seconds that shutdown waits for the inputs in flight before cancelling them.
        backend: ``"local"`` or ``"ray"``.
        per_request: run each request as its own ``flow.stream`` instead of joining the one
            long-lived pipeline (the baseline a service of one run per request would be).
        endpoints: model clients (objects with ``dispatch_stats()``) whose per-replica
            figures ``/metrics`` reports.
        options: more options of ``flow.stream``: ``concurrency``, ``dead_letters``,
            ``address`` (Ray), ...

    Example:
        >>> service = Service(my_flow, max_inflight=64)  # doctest: +SKIP
        >>> api = FastAPI(lifespan=service.lifespan)  # doctest: +SKIP
        >>> api.mount("/alto", service.asgi(lifespan=False))  # doctest: +SKIP
    """

    def __init__(
        self,
        flow: Any,
        *,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        deadline: float | None = None,
        grace: float = DEFAULT_GRACE_S,
        backend: str = "local",
        per_request: bool = False,
        endpoints: Iterable[Any] = (),
        **options: Any,
    ) -> None:
        if deadline is not None:
            if not deadline > 0:
                msg = f"deadline={deadline!r} is invalid; expected seconds > 0"
                raise UsageError(msg)
            options["deadline"] = deadline
        if not grace >= 0:
            msg = f"grace={grace!r} is invalid; expected seconds >= 0"
            raise UsageError(msg)
        self.flow = flow
        self.grace = grace
        self.schema = RequestSchema(flow.plan, max_inputs=max_inflight)
        kind = PerRequestRuns if per_request else SharedPipeline
        self.pipeline: SharedPipeline | PerRequestRuns = kind(
            flow, max_inflight=max_inflight, backend=backend, **options)
        self.metrics = ServiceMetrics()
        self.pipeline.on_outcome = self.metrics.outcome
        self.endpoints = list(endpoints)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Service]:
        """Run the pipeline while the block runs; on exit, drain it (see ``grace``).

        The app from :meth:`asgi` does this in its lifespan; enter it yourself when the app
        is mounted in another (Starlette runs no lifespan of a mounted app).
        """
        async with anyio.create_task_group() as tg:
            await tg.start(self._run_pipeline)
            try:
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    await self.pipeline.drain(self.grace)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """:meth:`running` as a Starlette/FastAPI lifespan.

        ``FastAPI(lifespan=service.lifespan)`` for an app that mounts :meth:`asgi`
        (``lifespan=False``).
        """
        async with self.running():
            yield

    async def _run_pipeline(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.pipeline.run(task_status=task_status)
        except Exception:  # answered to every input in flight; /health says it stopped
            log.exception("the pipeline of flow %r stopped", self.flow.name)

    def asgi(self, *, lifespan: bool = True) -> Starlette:
        """The ASGI app. With ``lifespan``, the app runs the pipeline in its own lifespan."""
        routes = [
            Route("/v1/runs", partial(self._runs, route="/v1/runs", events=False),
                  methods=["POST"]),
            Route("/v1/runs/stream", partial(self._runs, route="/v1/runs/stream", events=True),
                  methods=["POST"]),
            Route("/v1/flow", self._flow, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
        ]
        app = Starlette(routes=routes, lifespan=self.lifespan if lifespan else None)
        app.state.service = self
        return app

    # -- routes -----------------------------------------------------------------------------

    async def _admit(self, request: Request, route: str) -> Batch | Response:
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            self.metrics.request(route, 400)
            return JSONResponse({"error": {"type": "InvalidJSON", "message":
                                f"the body is not JSON: {exc}; send "
                                "{\"inputs\": [{...}, ...]}"}}, status_code=400)
        try:
            parsed = self.schema.parse(body)
            return self.pipeline.admit(parsed.items)
        except BadRequest as exc:
            self.metrics.request(route, 422)
            return JSONResponse(exc.as_json(), status_code=422)
        except Overloaded as exc:
            self.metrics.request(route, 429)
            return JSONResponse({"error": {"type": "Overloaded", "message": str(exc)}},
                                status_code=429, headers={"Retry-After": str(exc.retry_after)})
        except Unavailable as exc:
            self.metrics.request(route, 503)
            return JSONResponse({"error": {"type": "Unavailable", "message": str(exc)}},
                                status_code=503, headers={"Retry-After": "1"})

    async def _runs(self, request: Request, *, route: str, events: bool) -> Response:
        """``POST`` of a batch of inputs to ``route``.

        Answered as one JSON body, or with ``events`` as server-sent events, one per input
        as it completes.
        """
        started = time.perf_counter()
        admitted = await self._admit(request, route)
        if isinstance(admitted, Response):
            return admitted
        return _BatchResponse(self, admitted, started, events=events)

    async def _flow(self, request: Request) -> Response:
        plan = self.flow.plan
        params = []
        for name in plan.inputs:
            entry: dict[str, Any] = {"name": name,
                                     "type": _type_name(plan.annotations.get(name))}
            if name in plan.defaults:
                entry["default"] = output_json(plan.defaults[name])
            params.append(entry)
        stages = [{"name": n.name, "level": n.level, "replicas": n.spec.options.replicas,
                   "batch": n.spec.options.batch, "split": n.is_split} for n in plan.nodes]
        return JSONResponse({"name": plan.name, "parameters": params, "stages": stages,
                             "levels": plan.levels, "outputs": list(plan.outputs),
                             "text": plan.describe(), "mermaid": plan.mermaid()})

    async def _health(self, request: Request) -> Response:
        pipeline = self.pipeline
        if pipeline.failure is not None:
            status = "failed"
        elif pipeline.closing:
            status = "draining"
        elif not pipeline.running:
            status = "starting"
        else:
            status = "ok"
        body = {"status": status, "inflight": pipeline.inflight,
                "max_inflight": pipeline.max_inflight}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    async def _metrics(self, request: Request) -> Response:
        text = self.metrics.render(inflight=self.pipeline.inflight,
                                   max_inflight=self.pipeline.max_inflight,
                                   stats=self.pipeline.stats, endpoints=self.endpoints)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


class _BatchResponse(Response):
    """Answers one admitted request.

    Waits for its inputs' outcomes while watching for the client's disconnect (which cancels
    the inputs still running), then sends them as JSON, or as Server-Sent Events as each
    completes.
    """

    def __init__(self, service: Service, batch: Batch, started: float, *, events: bool) -> None:
        super().__init__(status_code=200,
                         media_type="text/event-stream" if events else "application/json")
        del self.headers["content-length"]  # set once the body is known; none for events
        if events:
            self.headers["Cache-Control"] = "no-cache"
            self.headers["X-Accel-Buffering"] = "no"
        self.service = service
        self.batch = batch
        self.started = started
        self.events = events
        self.route = "/v1/runs/stream" if events else "/v1/runs"
        self.answered = False  # every input's outcome is being sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = False
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    nonlocal gone
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    if not self.answered:  # (a server reports one after the answer too)
                        gone = True
                        tg.cancel_scope.cancel()

                tg.start_soon(watch)
                if self.events:
                    await self._send_events(send)
                else:
                    await self._send_json(send)
                tg.cancel_scope.cancel()
        finally:
            self.batch.cancel()  # a no-op once every input has its outcome
        if gone:
            self.service.metrics.request(self.route, 499)
        else:
            self.service.metrics.request(self.route, 200, time.perf_counter() - self.started)

    def _entry(self, ticket: Ticket) -> dict[str, Any]:
        result = ticket.result
        assert result is not None
        if result.error is None:
            try:
                return {"index": ticket.position, "output": output_json(result.value)}
            except Exception as exc:  # an output JSON cannot hold: that input's error
                return {"index": ticket.position, "error": {
                    "type": "OutputNotJSON", "message": f"the flow's output for this input "
                    f"cannot be sent as JSON: {type(exc).__name__}: {exc}"}}
        return {"index": ticket.position, "error": error_json(result.error)}

    async def _send_json(self, send: Send) -> None:
        entries: list[dict[str, Any] | None] = [None] * len(self.batch.tickets)
        async with contextlib.aclosing(self.batch.completed()) as done:
            async for ticket in done:
                entries[ticket.position] = self._entry(ticket)
        self.answered = True
        body = json.dumps({"results": entries}).encode()
        self.headers["content-length"] = str(len(body))
        await send({"type": "http.response.start", "status": 200,
                    "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": body})

    async def _send_events(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": self.raw_headers})
        failed = 0
        async with contextlib.aclosing(self.batch.completed()) as done:
            async for ticket in done:
                entry = self._entry(ticket)
                failed += "error" in entry
                await send({"type": "http.response.body", "more_body": True,
                            "body": f"data: {json.dumps(entry)}\n\n".encode()})
        self.answered = True
        end = json.dumps({"inputs": len(self.batch.tickets), "failed": failed})
        await send({"type": "http.response.body", "more_body": False,
                    "body": f"event: end\ndata: {end}\n\n".encode()})


def _type_name(annotation: Any) -> str:
    if annotation is None:
        return "any"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def app(flow: Any, **options: Any) -> Starlette:
    """A flow as an ASGI app: every request's inputs join one long-lived ``flow.stream``.

    Takes the options of :class:`Service` (``max_inflight``, ``deadline``, ``grace``,
    ``backend``, ...). The pipeline runs in the app's lifespan: serve it with a server that
    runs lifespans (uvicorn does), or use :class:`Service` to mount it in another app.

    Example:
        >>> import uvicorn  # doctest: +SKIP
        >>> uvicorn.run(alto.serve.app(my_flow, max_inflight=64), port=8000)  # doctest: +SKIP
    """
    return Service(flow, **options).asgi()
