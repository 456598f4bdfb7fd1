"""``alto serve`` under open-loop HTTP load: one long-lived pipeline against one run per
request, behind the same server; and the service's own cost per request.

Part 1, per app (factcheck, summarize by default). Two services of the app run side by
side, each in its own process, on the same operators (hashing embedder; the LLM is the
serving-timing emulator, one process shared by both, its prefix cache emptied before every
run), the same ``--max-inflight`` and the same server code (:class:`alto.serve.Service`):

* ``shared``: every request's input joins one long-lived ``flow.stream`` (``alto serve``);
* ``per-request``: each request runs its own ``flow.stream`` (``per_request=True``), what a
  hand-written service calling ``flow.run`` per request does.

Each app's SLO is ``--slo-factor`` times the per-request service's unloaded p50 (inputs
sent one at a time). Then for each offered rate, each service takes the same Poisson
arrivals (``alto.bench.stats.poisson_schedule``), one input per ``POST /v1/runs``, the
order of the two rotating from rate to rate; latency is the client's, from the request's
scheduled send to its answer. A failed or refused request counts as an infinite latency.

Part 2: an echo flow (one no-op stage), one input at a time: ``POST /v1/runs`` to the
service against sending the input into a long-lived in-process ``flow.stream``; the
difference is what HTTP and JSON cost per request.

Every figure has a 95% bootstrap interval (``alto.bench.stats``); a ratio whose interval
holds 1 is parity.

Usage: python benchmarks/serve.py [--apps factcheck summarize] [--arrivals 40]
       [--rates factcheck=4,8,16,24 summarize=1,2,3,4] [--out docs/benchmarks/serve]
       python benchmarks/serve.py server --app APP --mode shared|per-request --llm-url URL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import alto  # noqa: E402
from alto.bench.stats import (  # noqa: E402
    max_rate_under_slo,
    parity,
    percentile,
    percentile_interval,
    poisson_schedule,
    ratio_interval,
)

MODES = ("shared", "per-request")
DEFAULT_RATES = {"factcheck": [4.0, 8.0, 16.0, 24.0], "summarize": [1.0, 2.0, 3.0, 4.0]}
MAX_INFLIGHT = 1024  # above any run's arrivals: no request is refused in part 1
UNLOADED = 8  # inputs sent one at a time per service for the SLO
OVERHEAD_SAMPLES = 300


@alto.stage
async def echo_stage(text: str) -> str:
    return text


@alto.flow
def echo(text: str):
    return echo_stage(text)


# -- the service processes --------------------------------------------------------------------


def run_server(args: argparse.Namespace) -> int:
    """One service of ``args.app`` (or the echo flow) in this process, until SIGINT."""
    import anyio

    from alto.serve.launch import ServeOptions, serve

    if args.app == "echo":
        os.environ.setdefault("PYTHONPATH", str(REPO))
        target = "benchmarks.serve:echo"
        os.chdir(REPO)
    else:
        target = args.app
    options = ServeOptions(
        target=target, port=0, max_inflight=MAX_INFLIGHT, grace=5, llm="openai",
        llm_url=args.llm_url, llm_model="emulated", embedder="hash",
        extra={"per_request": args.mode == "per-request"},
    )
    try:
        return anyio.run(serve, options)
    except KeyboardInterrupt:
        return 0


class Child:
    """A service process started by :func:`run_server`; ``url`` once it listens."""

    def __init__(self, app: str, mode: str, llm_url: str | None) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "server", "--app", app,
               "--mode", mode, "--llm-url", llm_url or ""]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=REPO)
        self.url = ""
        lines = []
        assert self.proc.stderr is not None
        watchdog = threading.Timer(180, self.proc.kill)  # a service that never listens
        watchdog.start()
        try:
            for line in self.proc.stderr:
                lines.append(line)
                if "listening on " in line:
                    self.url = line.split("listening on ", 1)[1].split()[0]
                    return
        finally:
            watchdog.cancel()
        self.stop()
        msg = f"the {mode} service of {app} did not start: {''.join(lines)[-2000:]}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


# -- load ---------------------------------------------------------------------------------


async def post_one(client: Any, body: dict[str, Any]) -> float:
    """Seconds for one request; infinity when it failed or was refused."""
    started = time.perf_counter()
    try:
        response = await client.post("/v1/runs", json=body)
    except Exception:
        return math.inf
    elapsed = time.perf_counter() - started
    if response.status_code != 200 or "error" in response.json()["results"][0]:
        return math.inf
    return elapsed


async def open_loop(url: str, bodies: list[dict[str, Any]], rate: float, seed: int) -> list[float]:
    """Latencies of ``len(bodies)`` requests sent at Poisson arrival times (from each
    request's scheduled send, so a late send counts against the service)."""
    import httpx

    times = poisson_schedule(len(bodies), rate, seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    latencies = [math.nan] * len(bodies)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        t0 = time.perf_counter()

        async def one(i: int) -> None:
            delay = t0 + times[i] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            late = max(0.0, time.perf_counter() - (t0 + times[i]))
            latencies[i] = await post_one(client, bodies[i]) + late

        async with asyncio.TaskGroup() as group:
            for i in range(len(bodies)):
                group.create_task(one(i))
    return latencies


async def one_at_a_time(url: str, bodies: list[dict[str, Any]]) -> list[float]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        return [await post_one(client, body) for body in bodies]


async def reset_emulator(root: str) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=30) as client:
        (await client.post(f"{root}/reset_prefix_cache")).raise_for_status()


async def bodies_for(app_name: str, n: int, url: str) -> list[dict[str, Any]]:
    """``n`` request bodies of one input each, cycling through the app's shipped inputs
    (the parameter's name from the service's ``GET /v1/flow``)."""
    import httpx
    from pydantic_core import to_jsonable_python

    from alto.apps import load_app

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        (param,) = [p["name"] for p in (await client.get("/v1/flow")).json()["parameters"]]
    inputs = load_app(app_name).load_inputs(None)
    return [{"inputs": [{param: to_jsonable_python(inputs[i % len(inputs)])}]}
            for i in range(n)]


def figures(latencies: list[float], seed: int) -> dict[str, Any]:
    xs = [min(v, 1e12) for v in latencies]
    failed = sum(1 for v in latencies if not math.isfinite(v))
    return {
        "n": len(xs), "failed": failed,
        "p50": percentile(xs, 50), "p50_ci": percentile_interval(xs, 50, seed=seed),
        "p95": percentile(xs, 95), "p95_ci": percentile_interval(xs, 95, seed=seed),
        "latencies": [v if math.isfinite(v) else None for v in latencies],
    }


def p95(a: Any) -> float:
    import numpy as np

    return float(np.percentile(a, 95))


def p50(a: Any) -> float:
    import numpy as np

    return float(np.percentile(a, 50))


async def measure_app(app: str, rates: list[float], arrivals: int, emulator: Any,
                      seed: int) -> dict[str, Any]:
    root = emulator.base_url.removesuffix("/v1")
    children = {mode: Child(app, mode, emulator.base_url) for mode in MODES}
    try:
        bodies = await bodies_for(app, arrivals, children["shared"].url)
        for child in children.values():  # warm: connections, caches, compiled regexes
            await one_at_a_time(child.url, bodies[:3])
        unloaded: dict[str, list[float]] = {m: [] for m in MODES}
        for i in range(UNLOADED):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                await reset_emulator(root)
                unloaded[mode] += await one_at_a_time(children[mode].url, [bodies[i]])
        slo = 3.0 * percentile(unloaded["per-request"], 50)
        runs: dict[str, dict[str, Any]] = {m: {} for m in MODES}
        for k, rate in enumerate(rates):
            for mode in MODES if k % 2 == 0 else MODES[::-1]:
                await reset_emulator(root)
                lat = await open_loop(children[mode].url, bodies, rate, seed + k)
                runs[mode][str(rate)] = figures(lat, seed)
                f = runs[mode][str(rate)]
                print(f"  {app} {mode:<12} {rate:>5g}/s  p50 {f['p50']:.3f} s  "
                      f"p95 {f['p95']:.3f} s  failed {f['failed']}", file=sys.stderr)
    finally:
        for child in children.values():
            child.stop()
    out: dict[str, Any] = {"slo_s": slo, "unloaded": {m: figures(unloaded[m], seed)
                                                      for m in MODES}, "runs": runs}
    out["ratios_p95"] = {}
    for rate in rates:
        a = [min(v, 1e12) for v in _lat(runs["per-request"][str(rate)])]
        b = [min(v, 1e12) for v in _lat(runs["shared"][str(rate)])]
        out["ratios_p95"][str(rate)] = {"value": p95(a) / p95(b),
                                        "ci": ratio_interval(a, b, p95, seed=seed)}
    out["max_rate"] = {m: max_rate_under_slo(
        {rate: (runs[m][str(rate)]["p95"], *runs[m][str(rate)]["p95_ci"]) for rate in rates},
        slo) for m in MODES}
    return out


def _lat(run: dict[str, Any]) -> list[float]:
    return [math.inf if v is None else v for v in run["latencies"]]


async def measure_overhead(seed: int) -> dict[str, Any]:
    """Per request: HTTP + JSON to the service, against one input into an in-process stream."""
    import anyio

    child = Child("echo", "shared", None)
    try:
        body = {"inputs": [{"text": "hello"}]}
        await one_at_a_time(child.url, [body] * 20)  # warm
        http = await one_at_a_time(child.url, [body] * OVERHEAD_SAMPLES)
    finally:
        child.stop()
    send, receive = anyio.create_memory_object_stream[str](1)

    async def inputs() -> Any:
        async with receive:
            async for item in receive:
                yield item

    local: list[float] = []
    async with send, echo.stream(inputs()) as results:
        for i in range(20 + OVERHEAD_SAMPLES):
            started = time.perf_counter()
            await send.send("hello")
            await results.__anext__()
            if i >= 20:
                local.append(time.perf_counter() - started)
    return {"http": figures(http, seed), "in_process": figures(local, seed),
            "ratio_p50": {"value": p50(http) / p50(local),
                          "ci": ratio_interval(http, local, p50, seed=seed)},
            "difference_p50_s": {"value": p50(http) - p50(local),
                                 "ci": difference_interval(http, local, seed)}}


def difference_interval(a: list[float], b: list[float], seed: int) -> tuple[float, float]:
    """Bootstrap 95% interval of median(a) - median(b), the samples resampled apart."""
    import numpy as np

    rng = np.random.default_rng(seed)
    xa, xb = np.array(a), np.array(b)
    diffs = [np.median(rng.choice(xa, len(xa))) - np.median(rng.choice(xb, len(xb)))
             for _ in range(1000)]
    return (float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5)))


# -- report -------------------------------------------------------------------------------


def ms(v: float) -> str:
    return f"{v * 1000:.0f}" if v < 10 else f"{v:.1f} s"


def ci(pair: Any, scale: float = 1000.0, digits: int = 0) -> str:
    low, high = pair
    if math.isnan(low):
        return "[n/a]"
    return f"[{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def table(results: dict[str, Any]) -> str:
    lines = ["| app | rate /s | shared p50 ms | shared p95 ms | per-request p50 ms | "
             "per-request p95 ms | p95 per-request / shared |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for app, r in results["apps"].items():
        for rate, ratio in r["ratios_p95"].items():
            s, p = r["runs"]["shared"][rate], r["runs"]["per-request"][rate]
            low, high = ratio["ci"]
            verdict = " parity" if parity((low, high)) else ""
            lines.append(
                f"| {app} | {float(rate):g} | {s['p50'] * 1000:.0f} {ci(s['p50_ci'])} | "
                f"{s['p95'] * 1000:.0f} {ci(s['p95_ci'])} | {p['p50'] * 1000:.0f} "
                f"{ci(p['p50_ci'])} | {p['p95'] * 1000:.0f} {ci(p['p95_ci'])} | "
                f"{ratio['value']:.2f} [{low:.2f}, {high:.2f}]{verdict} |")
    lines += ["", "| app | SLO (3x per-request unloaded p50) | highest rate under SLO: shared "
              "| per-request |", "|---|---:|---:|---:|"]
    def rate(x: dict[str, Any]) -> str:
        point = "none" if x["rate"] is None else f"{x['rate']:g}/s"
        low = "none" if x["low"] is None else f"{x['low']:g}"
        high = "none" if x["high"] is None else f"{x['high']:g}"
        return f"{point} [surely {low}, maybe {high}]"

    for app, r in results["apps"].items():
        lines.append(f"| {app} | {r['slo_s'] * 1000:.0f} ms | {rate(r['max_rate']['shared'])} | "
                     f"{rate(r['max_rate']['per-request'])} |")
    o = results.get("overhead")
    if o:
        d = o["difference_p50_s"]
        lines += ["", "| echo flow, one input per request | p50 µs | p95 µs |",
                  "|---|---:|---:|",
                  f"| POST /v1/runs (HTTP + JSON + service) | {o['http']['p50'] * 1e6:.0f} "
                  f"{ci(o['http']['p50_ci'], 1e6)} | {o['http']['p95'] * 1e6:.0f} "
                  f"{ci(o['http']['p95_ci'], 1e6)} |",
                  f"| in-process flow.stream | {o['in_process']['p50'] * 1e6:.0f} "
                  f"{ci(o['in_process']['p50_ci'], 1e6)} | {o['in_process']['p95'] * 1e6:.0f} "
                  f"{ci(o['in_process']['p95_ci'], 1e6)} |",
                  f"| service overhead per request (p50 difference) | {d['value'] * 1e6:.0f} "
                  f"{ci(d['ci'], 1e6)} | |",
                  f"| ratio of p50s | {o['ratio_p50']['value']:.1f} "
                  f"[{o['ratio_p50']['ci'][0]:.1f}, {o['ratio_p50']['ci'][1]:.1f}] | |"]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from alto.bench.emulator import EmulatorServer

    started = time.perf_counter()
    results: dict[str, Any] = {"settings": {"apps": args.apps, "arrivals": args.arrivals,
                                            "rates": args.rates, "seed": args.seed,
                                            "max_inflight": MAX_INFLIGHT,
                                            "unloaded": UNLOADED,
                                            "overhead_samples": OVERHEAD_SAMPLES},
                               "machine": machine(), "apps": {}}
    with EmulatorServer(mode="process") as emulator:
        for app in args.apps:
            print(f"{app}:", file=sys.stderr)
            results["apps"][app] = await measure_app(app, args.rates[app], args.arrivals,
                                                     emulator, args.seed)
    results["overhead"] = await measure_overhead(args.seed)
    results["wall_s"] = time.perf_counter() - started
    return results


def parse_rates(items: list[str]) -> dict[str, list[float]]:
    rates = dict(DEFAULT_RATES)
    for item in items:
        app, _, values = item.partition("=")
        rates[app] = [float(v) for v in values.split(",")]
    return rates


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command")
    server = sub.add_parser("server", help="(internal) one service process")
    server.add_argument("--app", required=True)
    server.add_argument("--mode", choices=MODES, required=True)
    server.add_argument("--llm-url", default="")
    p.add_argument("--apps", nargs="+", default=["factcheck", "summarize"])
    p.add_argument("--arrivals", type=int, default=40, help="requests per rate and service")
    p.add_argument("--rates", nargs="*", default=[], metavar="APP=R1,R2,...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for results.json and table.md")
    args = p.parse_args()
    if args.command == "server":
        return run_server(args)
    args.rates = parse_rates(args.rates)
    results = asyncio.run(main_async(args))
    text = table(results)
    print(text)
    print(f"\nwall time {results['wall_s']:.0f} s on {results['machine']['cpu']} "
          f"({results['machine']['cores']} cores)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        (out / "table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
