"""Memory under backpressure: a fast split feeding a slow stage stays bounded by the buffers.

One root splits into N fragments as fast as it can; a slower stage takes them
one by one; a streaming gather counts them. With bounded channels the split
waits for the slow stage, so peak memory depends on the buffers, not on N.
Each size runs in a fresh process (peak RSS is per process); the script prints
peak RSS per size and the ratio between the largest and the smallest.

Usage: python benchmarks/memory.py [--sizes 10000,1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import anyio

import alto
from alto import GatherStream, Split


@alto.stage
async def produce(n: int) -> Split[bytes]:
    for i in range(n):
        yield i.to_bytes(8, "little") * 16  # 128-byte payloads, made as fast as possible


@alto.stage
async def slow(item: bytes) -> int:
    if item[0] == 0:  # every 256th fragment waits a little: the consumer is the slow side
        await anyio.sleep(0.0005)
    return len(item)


@alto.stage
async def count(sizes: GatherStream[int]) -> int:
    n = 0
    async for _ in sizes:
        n += 1
    return n


@alto.flow
def backpressure(n: int):
    return count(slow(produce(n)))


def child(n: int) -> None:
    t0 = time.perf_counter()
    (out,) = alto.run(backpressure, [n])
    assert out == n, (out, n)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps({"n": n, "peak_rss_mib": peak_kib / 1024, "seconds": time.perf_counter() - t0})
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], check=True,
                             capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'fragments':>12} {'peak RSS MiB':>13} {'seconds':>9}")
    for row in rows:
        print(f"{row['n']:>12,} {row['peak_rss_mib']:>13.1f} {row['seconds']:>9.2f}")
    ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"peak RSS at {rows[-1]['n']:,} / at {rows[0]['n']:,} = {ratio:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
