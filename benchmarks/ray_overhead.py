"""What the Ray backend costs per fragment, and what a second node buys.

Part 1, orchestration cost: one root input splits into N no-op fragments, a
no-op map, a gather (the shape of ``benchmarks/overhead.py``), on

  local          the local runtime (one process)
  ray            the Ray backend, fragments sent in batches (up to 64 per remote
                 call, the default)
  ray-unbatched  the Ray backend with ``call_items=1``: one remote call per fragment
  ray-stagebatch the Ray backend with the map stage declared ``batch=64`` (the stage
                 function itself takes lists)

Runs are interleaved (repeats x systems) after one warm-up run each (the warm-up
starts the actors; later runs reuse them), and the median is reported as
microseconds per fragment.

Part 2, scaling out: the same pipeline with a CPU-heavy map (a pure-Python loop
of fixed work, about ``--heavy-ms`` per fragment) whose replicas each ask for one
CPU, on a ``ray.cluster_utils.Cluster`` of one node with 1 CPU (one replica) and
of two nodes with 1 CPU each (two replicas, one per node), both on this machine.
Reports the wall time of each and the speed-up.

Part 3, a partial batch: one input through a ``batch=32`` stage whose
``batch_timeout`` is ``--batch-timeout`` seconds, on the local runtime and on Ray,
with the input stream left open (as a service taking requests as they come: the next
input would come only after this result). Nothing upstream can send a second input,
so the partial batch should run at once on both (the batch policy of
:mod:`alto.runtime.batching`); a runtime that waited out the timeout shows it as
latency (time from the input to its result).

Usage: python benchmarks/ray_overhead.py [--fragments 10000] [--repeats 3]
       [--unbatched-max 10000] [--heavy-fragments 96] [--heavy-ms 50] [--parts 1,2]
       [--batch-timeout 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any, Awaitable, Callable

import anyio
import ray
from ray.cluster_utils import Cluster

import alto
from alto import Gather, Split

# --- the pipelines ------------------------------------------------------------------


@alto.stage
async def split(n: int) -> Split[int]:
    for i in range(n):
        yield i


@alto.stage
async def work(x: int) -> int:
    return x


@alto.stage(batch=64)
async def work_batched(xs: list[int]) -> list[int]:
    return xs


@alto.stage
async def gather(xs: Gather[int]) -> int:
    return len(xs)


@alto.flow
def map_reduce(n: int):
    return gather(work(split(n)))


@alto.flow
def map_reduce_batched(n: int):
    return gather(work_batched(split(n)))


def spin(loops: int) -> int:
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def calibrate() -> int:
    """Iterations of :func:`spin` per millisecond of CPU on this machine."""
    loops = 200_000
    t = time.process_time()
    spin(loops)
    return max(1, int(loops / ((time.process_time() - t) * 1000)))


def heavy_flow(replicas: int, loops: int) -> alto.Flow:
    @alto.stage(replicas=replicas, resources={"num_cpus": 1})
    async def crunch(x: int) -> int:
        # CPU-bound work belongs in a worker thread: the actor's event loop stays free to
        # ship results and take the next call (the GIL is shared, the core is not idle)
        await anyio.to_thread.run_sync(spin, loops)
        return x

    @alto.stage
    async def chunks(n: int) -> Split[int]:
        for i in range(n):
            yield i

    @alto.stage
    async def total(xs: Gather[int]) -> int:
        return sum(xs)

    @alto.flow
    def pipeline(n: int):
        return total(crunch(chunks(n)))

    return pipeline


# --- part 1 -------------------------------------------------------------------------


def systems(n: int) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "local": lambda: map_reduce.run([n]),
        "ray": lambda: map_reduce.run([n], backend="ray"),
        "ray-unbatched": lambda: map_reduce.run([n], backend="ray", call_items=1),
        "ray-stagebatch": lambda: map_reduce_batched.run([n], backend="ray"),
    }


async def part1(n: int, repeats: int, unbatched_max: int) -> dict[str, float]:
    runs = systems(n)
    if n > unbatched_max:
        runs.pop("ray-unbatched")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, run in runs.items():  # warm-up: starts the actors
        assert await run() == [n], name
    for _ in range(repeats):
        for name, run in runs.items():
            t = time.perf_counter()
            out = await run()
            times[name].append(time.perf_counter() - t)
            assert out == [n], (name, out)
    return {name: statistics.median(ts) for name, ts in times.items()}


# --- part 2 -------------------------------------------------------------------------


async def part2_on(nodes: int, fragments: int, loops: int, repeats: int) -> tuple[float, float]:
    """Median wall time of the heavy pipeline on ``nodes`` nodes of 1 CPU, and how many
    replicas of the heavy stage were busy on average (its busy seconds over the wall time).
    """
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    try:
        flow = heavy_flow(nodes, loops)
        roots = [fragments // 4] * 4
        expected = [sum(range(k)) for k in roots]
        assert await flow.run(roots[:1], backend="ray") == expected[:1]  # warm-up
        walls = []
        busy = []
        for _ in range(repeats):
            stats = alto.RunStats()
            t = time.perf_counter()
            assert await flow.run(roots, backend="ray", stats=stats) == expected
            walls.append(time.perf_counter() - t)
            busy.append(stats.stages["crunch"].busy_s / walls[-1])
        return statistics.median(walls), statistics.median(busy)
    finally:
        ray.shutdown()
        cluster.shutdown()


def busy_cores(seconds: float = 1.0) -> float | None:
    """Cores kept busy by everything on this machine (Linux), to judge the figures."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields) - fields[3] - fields[4], sum(fields)

    try:
        b0, t0 = sample()
        time.sleep(seconds)
        b1, t1 = sample()
    except OSError:
        return None
    return (b1 - b0) / max(t1 - t0, 1) * (os.cpu_count() or 1)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fragments", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--unbatched-max", type=int, default=10_000)
    parser.add_argument("--heavy-fragments", type=int, default=96)
    parser.add_argument("--heavy-ms", type=float, default=50.0)
    parser.add_argument("--parts", default="1,2", help="which parts to run, e.g. 2 or 1,2,3")
    parser.add_argument("--batch-timeout", type=float, default=0.5)
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    if 1 in parts:
        await part1_report(args)
    if 2 in parts:
        await part2_report(args)
    if 3 in parts:
        await part3_report(args)


async def part1_report(args: argparse.Namespace) -> None:
    n = args.fragments
    print(f"part 1: split -> map -> gather, {n} no-op fragments, median of {args.repeats}")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        medians = await part1(n, args.repeats, args.unbatched_max)
    finally:
        ray.shutdown()
    local = medians["local"]
    print(f"{'system':<16}{'wall s':>10}{'us/fragment':>14}{'x local':>10}")
    for name, wall in medians.items():
        print(f"{name:<16}{wall:>10.3f}{wall / n * 1e6:>14.1f}{wall / local:>10.1f}")


async def part2_report(args: argparse.Namespace) -> None:
    loops = int(calibrate() * args.heavy_ms)
    frags = args.heavy_fragments
    print(
        f"\npart 2: {frags} fragments of ~{args.heavy_ms:g} ms CPU each "
        f"(one replica per node, num_cpus=1 each), median of {args.repeats}"
    )
    busy = busy_cores()
    if busy is not None:
        print(f"(before: {busy:.1f} of {os.cpu_count()} cores busy with other work)")
    one, busy_one = await part2_on(1, frags, loops, args.repeats)
    two, busy_two = await part2_on(2, frags, loops, args.repeats)
    print(f"{'cluster':<16}{'wall s':>10}{'ms/fragment':>14}{'replicas busy':>15}")
    print(f"{'1 node x 1 CPU':<16}{one:>10.3f}{one / frags * 1e3:>14.1f}{busy_one:>15.2f}")
    print(f"{'2 nodes x 1 CPU':<16}{two:>10.3f}{two / frags * 1e3:>14.1f}{busy_two:>15.2f}")
    print(f"speed-up of 2 nodes over 1: {one / two:.2f}x")
    print("(replicas busy: the heavy stage's busy seconds over the wall time; the speed-up")
    print(" needs as many idle cores as nodes)")


# --- part 3 -------------------------------------------------------------------------


def one_batched(timeout: float) -> alto.Flow:
    @alto.stage(batch=32, batch_timeout=timeout)
    async def doubled(xs: list[int]) -> list[int]:
        return [2 * x for x in xs]

    @alto.flow
    def one(x: int):
        return doubled(x)

    return one


async def first_result_s(flow: alto.Flow, backend: str) -> float:
    """Seconds from one input to its result, the input stream staying open meanwhile."""
    done = anyio.Event()
    sent = [0.0]

    async def inputs() -> Any:
        sent[0] = time.perf_counter()
        yield 1
        await done.wait()

    async with flow.stream(inputs(), backend=backend) as results:
        async for result in results:
            assert result.value == 2, result
            took = time.perf_counter() - sent[0]
            done.set()
    return took


async def part3_report(args: argparse.Namespace) -> None:
    timeout = args.batch_timeout
    flow = one_batched(timeout)
    print(f"\npart 3: one input through a batch=32 stage, batch_timeout={timeout:g}s, "
          f"median of {args.repeats}")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        times: dict[str, list[float]] = {"local": [], "ray": []}
        for backend in times:  # warm-up: starts the actors
            assert await flow.run([1], backend=backend) == [2]
        for _ in range(args.repeats):
            for backend, ts in times.items():
                ts.append(await first_result_s(flow, backend))
    finally:
        ray.shutdown()
    print(f"{'backend':<16}{'latency ms':>12}{'of timeout':>12}")
    for backend, ts in times.items():
        wall = statistics.median(ts)
        print(f"{backend:<16}{wall * 1e3:>12.1f}{wall / timeout:>12.2f}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
