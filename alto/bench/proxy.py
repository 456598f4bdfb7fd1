"""A balancer in front of real OpenAI-compatible servers, as a deployment puts one there.

``python -m alto.bench.proxy --upstream URL --upstream URL --policy round-robin`` serves ``/v1``
on loopback and forwards each request, body and answer unchanged (streams included), to one
upstream base URL, chosen by the emulator's :class:`~alto.bench.emulator.balancer.Balancer`:
``round-robin`` (a Kubernetes Service), ``least-loaded`` or ``prefix-aware`` (SGLang router's
cache-aware policy with its launcher's defaults; its eviction pass runs every
``--eviction-interval-secs``, 120 by default, in the background). Load is requests in flight
through the proxy. The prefix-aware policy sees the request's text: a chat request's message
contents joined, or a completion's prompt.

``/stats`` counts per upstream the requests, failures and the policy's decisions by kind, and
gives the policy's settings. :class:`BalancerProxy` runs it in a child process, so the proxy's
own work never shares a GIL with the caller's.

Example:
    >>> with BalancerProxy(["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"]) as proxy:
    ...     llm = OpenAIClient(proxy.base_url, "default")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import anyio

from alto.bench.emulator.balancer import EVICTION_INTERVAL_S, POLICIES, Balancer, Policy
from alto.bench.loopback import BackgroundServer, serve_until_interrupted, start_child, stop_child
from alto.errors import UsageError

# RFC 9110 7.6.1: connection-specific fields a proxy must not forward
_HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "host",
    }
)  # fmt: skip


def request_text(body: bytes) -> str:
    """The text a prefix-aware balancer matches.

    A chat request's message contents joined (text parts of multi-part contents included),
    else a completion's prompt; ``""`` when the body is not such JSON.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    messages = data.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [p["text"] for p in content if isinstance(p, dict) and "text" in p]
        return "\n".join(parts)
    prompt = data.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def create_app(
    upstreams: Sequence[str],
    policy: Policy = "round-robin",
    *,
    eviction_interval_s: float = EVICTION_INTERVAL_S,
) -> Any:
    """The proxy's Starlette app: ``/v1/...`` forwarded, ``/stats`` and ``/health`` its own.

    ``eviction_interval_s``: seconds between the prefix-aware policy's eviction passes
    (0: none).

    Raises:
        UsageError: no upstreams, or an unknown policy.
    """
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    if not upstreams:
        msg = "the proxy needs at least one upstream base URL"
        raise UsageError(msg)
    bases = [u.rstrip("/") for u in upstreams]
    balancer = Balancer(policy, len(bases), eviction_interval_s=eviction_interval_s)
    in_flight = [0] * len(bases)
    requests = [0] * len(bases)
    failures = [0] * len(bases)
    client: httpx.AsyncClient | None = None

    async def forward(request: Request) -> Response:
        assert client is not None
        body = await request.body()
        chosen = balancer.choose(request_text(body), in_flight)
        in_flight[chosen] += 1
        requests[chosen] += 1
        url = f"{bases[chosen]}/{request.path_params['path']}"
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        upstream = client.build_request(
            request.method, url, content=body, headers=headers, params=request.query_params
        )
        try:
            answer = await client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            in_flight[chosen] -= 1
            failures[chosen] += 1
            return JSONResponse(
                {"error": {"message": f"upstream {bases[chosen]} failed: {exc!r}"}},
                status_code=502,
            )

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            finally:
                await answer.aclose()
                in_flight[chosen] -= 1

        kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
        return StreamingResponse(relay(), status_code=answer.status_code, headers=kept)

    async def stats(request: Request) -> Response:
        return JSONResponse(
            {
                "policy": policy,
                "settings": balancer.settings(),
                "eviction_passes": balancer.eviction_passes,
                "upstreams": [
                    {
                        "upstream": b,
                        "requests": r,
                        "in_flight": f,
                        "failures": e,
                        "decisions": dict(d),
                    }
                    for b, r, f, e, d in zip(
                        bases, requests, in_flight, failures, balancer.decisions, strict=True
                    )
                ],
            }
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal client
        # no pool limit and no timeout: the caller's client holds the caps and the deadlines
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with (
            httpx.AsyncClient(timeout=None, limits=limits) as client,
            anyio.create_task_group() as tg,
        ):
            if policy == "prefix-aware" and eviction_interval_s > 0:
                tg.start_soon(evict_on_a_timer)
            yield
            tg.cancel_scope.cancel()

    async def evict_on_a_timer() -> None:
        """SGLang router's background eviction thread."""
        while True:
            await anyio.sleep(eviction_interval_s)
            balancer.evict()

    return Starlette(
        routes=[
            Route("/v1/{path:path}", forward, methods=["GET", "POST"]),
            Route("/stats", stats),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )


@dataclass(eq=False, repr=False)
class BalancerProxy(BackgroundServer):
    """Runs the proxy in a child process on loopback.

    Args:
        upstreams: the servers' base URLs (``…/v1``).
        policy: ``"round-robin"``, ``"least-loaded"`` or ``"prefix-aware"``.
        host: the address to bind; loopback by default.
        port: the port; 0 picks a free one.
        eviction_interval_s: seconds between the prefix-aware policy's eviction passes.
    """

    upstreams: Sequence[str]
    policy: Policy = "round-robin"
    _: KW_ONLY
    host: str = "127.0.0.1"
    port: int = 0
    eviction_interval_s: float = EVICTION_INTERVAL_S
    base_url: str = field(init=False, default="")
    _process: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            known = ", ".join(POLICIES)
            msg = f"policy must be one of {known}, got {self.policy!r}"
            raise UsageError(msg)
        if not self.upstreams:
            msg = "the proxy needs at least one upstream base URL"
            raise UsageError(msg)
        if self.eviction_interval_s < 0:
            msg = f"eviction_interval_s must be >= 0, got {self.eviction_interval_s}"
            raise UsageError(msg)
        self.upstreams = list(self.upstreams)

    def start(self, timeout: float = 30.0) -> str:
        """Start serving; returns the proxy's base URL (``http://host:port/v1``)."""
        if not self.base_url:
            cmd = [
                sys.executable, "-m", "alto.bench.proxy", "--host", self.host,
                "--port", str(self.port), "--policy", self.policy,
                "--eviction-interval-secs", repr(self.eviction_interval_s),
            ]  # fmt: skip
            for upstream in self.upstreams:
                cmd += ["--upstream", upstream]
            self._process, self.base_url = start_child(cmd, "the balancer proxy", timeout)
        return self.base_url

    def stop(self) -> None:
        """Stop serving. Calling it twice is harmless."""
        if self._process is not None:
            stop_child(self._process)
        self._process = None
        self.base_url = ""

    def stats(self) -> dict[str, Any]:
        """Per upstream: requests, in flight, failures and the policy's decisions by kind.

        Also the policy's settings.
        """
        import httpx

        root = self.base_url.removesuffix("/v1")
        return dict(httpx.get(f"{root}/stats", timeout=10).json())

    def __repr__(self) -> str:
        where = self.base_url or "not started"
        return f"<BalancerProxy {where} {self.policy} over {len(self.upstreams)} upstream(s)>"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m alto.bench.proxy``: serve the proxy until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m alto.bench.proxy",
        description="A balancer in front of OpenAI-compatible servers.",
    )
    parser.add_argument(
        "--upstream", action="append", required=True, help="a server's base URL (…/v1); repeat"
    )
    parser.add_argument("--policy", default="round-robin", choices=POLICIES)
    parser.add_argument(
        "--eviction-interval-secs",
        type=float,
        default=EVICTION_INTERVAL_S,
        help="seconds between the prefix-aware policy's eviction passes (default 120, as "
        "SGLang router's launcher; 0: none)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8080, help="port (0: a free one)")
    args = parser.parse_args(argv)
    app = create_app(args.upstream, args.policy, eviction_interval_s=args.eviction_interval_secs)
    serve_until_interrupted(
        app,
        args.host,
        args.port,
        "alto balancer proxy",
        f"{args.policy} over {len(args.upstream)} upstream(s)",
    )


if __name__ == "__main__":
    main()
