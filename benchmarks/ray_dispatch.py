"""What sharing an endpoint's dispatcher across Ray actors costs per model call.

On the Ray backend the copies of an ``OpenAIClient`` in the stage actors share one
dispatcher, held by a small named actor (:mod:`alto.runtime.ray.shared_dispatcher`). Each
call then takes its lease with one remote round trip (the release is sent, not waited
for). This script times a lease (acquire, ``done``, release; no HTTP request) taken from
inside a Ray actor, with a stage call's lineage set, in two ways:

  in-process   the copy's own ``Dispatcher`` (what every actor had before)
  shared       the shared dispatcher actor

each one call at a time (the added latency per call) and with ``--concurrency`` calls at
once from each of ``--actors`` actors (the throughput one dispatcher actor sustains). No
limit is set (``max_inflight=None``), so no call waits for a slot: what is timed is the
dispatcher's own cost. The median over ``--repeats`` rounds is reported.

Usage: python benchmarks/ray_dispatch.py [--calls 2000] [--repeats 5] [--actors 2]
       [--concurrency 32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import anyio
import ray

from alto.operators.llm import OpenAIClient
from alto.operators.llm.dispatch import Dispatcher


class Bench:
    """A Ray actor holding a copy of the client (its dispatcher is the shared one)."""

    def __init__(self, llm: OpenAIClient) -> None:
        self.shared = llm.dispatcher
        self.local = Dispatcher(llm.base_urls, max_inflight=None)

    async def run(self, shared: bool, calls: int, concurrency: int) -> float:
        """Take ``calls`` leases, ``concurrency`` at a time; the seconds it took."""
        from alto.lineage import CallSite, fresh_slot

        dispatcher = self.shared if shared else self.local
        submitted = {root: float(root) for root in range(calls)}

        async def worker(first: int) -> None:
            slot = fresh_slot()
            slot.site = CallSite("bench", "ask", submitted)
            for root in range(first, calls, concurrency):
                slot.one = (root, 0)
                async with dispatcher.lease("You are a careful fact checker.") as lease:
                    lease.done(prompt_tokens=20, output_tokens=5)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for first in range(concurrency):
                tg.start_soon(worker, first)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="leases per actor and round")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    ray.init(include_dashboard=False, logging_level="WARNING")
    llm = OpenAIClient("http://127.0.0.1:9/v1", "m", api_key_env=None, max_inflight=None)
    bench_class: Any = ray.remote(Bench).options(num_cpus=0)
    actors = [bench_class.remote(llm) for _ in range(args.actors)]
    ray.get([a.run.remote(True, 50, 1) for a in actors])  # warm up: start both actors

    print(f"{args.calls} leases per actor and round, median of {args.repeats} rounds "
          f"(ray {ray.__version__})")
    for concurrency, who in ((1, actors[:1]), (args.concurrency, actors)):
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for shared in (False, True):  # interleaved
                took = ray.get([a.run.remote(shared, args.calls, concurrency) for a in who])
                times[shared].append(max(took))
        total = args.calls * len(who)
        local, shared = (statistics.median(times[s]) for s in (False, True))
        print(f"\n{len(who)} actor(s), {concurrency} call(s) at once each:")
        print(f"  in-process  {local / args.calls * 1e6:9.1f} us per call (latency)  "
              f"{total / local:10.0f} calls/s")
        print(f"  shared      {shared / args.calls * 1e6:9.1f} us per call (latency)  "
              f"{total / shared:10.0f} calls/s")
        print(f"  added       {(shared - local) / args.calls * 1e6:9.1f} us per call")
    time.sleep(1)  # the last releases are sent, not waited for
    stats = llm.dispatch_stats()
    print(f"\nshared dispatcher saw {stats.replicas[0].calls} calls, "
          f"{stats.replicas[0].inflight} in flight now")
    ray.shutdown()


if __name__ == "__main__":
    main()
