"""Orchestration cost per fragment: a no-op split -> map -> gather.

One root input splits into N fragments, each goes through a no-op async map,
and a gather collects them. Every system does exactly that work; runs are
interleaved in one process (repeats x sizes x systems) and the median of the
repeats is reported, since the machine is shared and noisy.

Systems:
  alto        this project's local runtime
  asyncio-seq hand-written sequential loop, no concurrency: what calling the
              functions alone costs. THE FLOOR: no orchestration can do the same
              work for less
  asyncio-tg  hand-written asyncio: iterate the split, one task per fragment in an
              asyncio.TaskGroup, then gather (what one task per fragment costs; a
              concurrent program need not pay it, so it is not the floor)
  langgraph   LangGraph's flat map-reduce: a split node, Send fan-out to an async
              map node with an operator.add reducer, a fan-in node;
              max_concurrency set at the top level of the config

Usage: python benchmarks/overhead.py [--sizes 1000,10000,100000] [--repeats 3]
       [--langgraph-max 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import statistics
import sys
import time
from typing import Annotated, Any, Awaitable, Callable, TypedDict

import alto
from alto import Gather, Split

# --- Alto ---------------------------------------------------------------------


@alto.stage
async def split(n: int) -> Split[int]:
    for i in range(n):
        yield i


@alto.stage
async def work(x: int) -> int:
    return x


@alto.stage
async def gather(xs: Gather[int]) -> int:
    return len(xs)


@alto.flow
def map_reduce(n: int):
    return gather(work(split(n)))


async def run_alto(n: int) -> int:
    (out,) = await map_reduce.run([n])
    return out


# --- hand-written asyncio ------------------------------------------------------


async def _items(n: int):  # the same async generator shape as the Alto split
    for i in range(n):
        yield i


async def _work(x: int) -> int:
    return x


async def run_asyncio_tg(n: int) -> int:
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(_work(x)) async for x in _items(n)]
    return len([t.result() for t in tasks])


async def run_asyncio_seq(n: int) -> int:
    return len([await _work(x) async for x in _items(n)])


# --- LangGraph -------------------------------------------------------------------


class State(TypedDict, total=False):  # module level: LangGraph resolves these hints
    n: int
    items: list[int]
    results: Annotated[list[int], operator.add]
    out: int


class Item(TypedDict):
    x: int


def build_langgraph() -> Any:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    async def split_node(state: State) -> dict[str, Any]:
        return {"items": [x async for x in _items(state["n"])]}

    def fan_out(state: State) -> list[Any]:
        return [Send("work", {"x": x}) for x in state["items"]]

    async def work_node(state: Item) -> dict[str, Any]:
        return {"results": [await _work(state["x"])]}

    async def gather_node(state: State) -> dict[str, Any]:
        return {"out": len(state["results"])}

    g = StateGraph(State)
    g.add_node("split", split_node)
    g.add_node("work", work_node)
    g.add_node("gather", gather_node)
    g.add_edge(START, "split")
    g.add_conditional_edges("split", fan_out, ["work"])
    g.add_edge("work", "gather")
    g.add_edge("gather", END)
    return g.compile()


def langgraph_runner() -> Callable[[int], Awaitable[int]]:
    app = build_langgraph()

    async def run(n: int) -> int:
        # max_concurrency at the top level of the config (not under "configurable")
        result = await app.ainvoke({"n": n}, {"max_concurrency": 1024})
        return int(result["out"])

    return run


# --- driver ---------------------------------------------------------------------


async def measure(fn: Callable[[int], Awaitable[int]], n: int) -> float:
    t0 = time.perf_counter()
    out = await fn(n)
    elapsed = time.perf_counter() - t0
    if out != n:
        msg = f"{fn.__name__} returned {out} for n={n}"
        raise AssertionError(msg)
    return elapsed


async def main(argv: list[str] | None = None) -> dict[str, dict[int, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--langgraph-max", type=int, default=10_000,
                        help="largest size LangGraph runs at (it is slow and superlinear)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    systems: dict[str, Callable[[int], Awaitable[int]]] = {
        "alto": run_alto,
        "asyncio-seq": run_asyncio_seq,
        "asyncio-tg": run_asyncio_tg,
    }
    try:
        systems["langgraph"] = langgraph_runner()
    except ImportError:
        print("langgraph is not installed (pip install 'alto[langgraph]'): skipping it")

    for fn in systems.values():  # warm up every code path once
        await measure(fn, 100)

    samples: dict[str, dict[int, list[float]]] = {s: {n: [] for n in sizes} for s in systems}
    for rep in range(args.repeats):
        for n in sizes:
            for name, fn in systems.items():
                if name == "langgraph" and n > args.langgraph_max:
                    continue
                samples[name][n].append(await measure(fn, n))
        print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr)

    per_frag = {
        name: {n: statistics.median(v) / n * 1e6 for n, v in by_n.items() if v}
        for name, by_n in samples.items()
    }
    print(f"\nper-fragment cost, µs (median of {args.repeats}; python {sys.version.split()[0]})")
    print(f"{'system':<13}" + "".join(f"{n:>12,}" for n in sizes))
    for name, by_n in per_frag.items():
        cells = "".join(f"{by_n[n]:>12.2f}" if n in by_n else f"{'-':>12}" for n in sizes)
        print(f"{name:<13}{cells}")

    alto_cost = per_frag["alto"]
    print("\nratios (the floor is asyncio-seq, the sequential loop)")
    for n in sizes:
        line = f"  n={n:<8,} alto / asyncio-seq (floor) = "
        line += f"{alto_cost[n] / per_frag['asyncio-seq'][n]:.2f}x"
        line += "   alto / asyncio-tg (task per fragment) = "
        line += f"{alto_cost[n] / per_frag['asyncio-tg'][n]:.2f}x"
        if "langgraph" in per_frag and n in per_frag["langgraph"]:
            line += f"   langgraph / alto = {per_frag['langgraph'][n] / alto_cost[n]:.0f}x"
        print(line)
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        print(f"  alto at {last:,} / alto at {first:,} = {alto_cost[last] / alto_cost[first]:.2f}x "
              "(1.00 = linear)")
    print("\nfloor: the sequential loop (asyncio-seq); one task per fragment (asyncio-tg) "
          "is shown beside it, not as the floor")
    return per_frag


if __name__ == "__main__":
    asyncio.run(main())
