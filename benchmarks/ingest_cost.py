"""Ingest's cost per corpus: where Alto's time goes against the asyncio reference.

Ingest makes no model calls but the hashing embedder's, so its rate under an SLO is set by
how much CPU each corpus costs on the event loop. This measures that cost directly, with no
arrival process in between: the bench's varied corpora (1 to 32 documents each, reused in
turn past the 156 the shipped documents make) run with a fixed number of corpora in flight,
and each system's CPU time and wall time per corpus are taken from the process clock.

Systems:
  reference   examples/ingest/asyncio_reference.py: one coroutine per corpus, its chunks
              embedded in batches of 64 and checked against the corpus's index. THE FLOOR
              here: it is the cheapest correct program (no hop between stages at all)
  alto        the ingest app's Alto flow (examples/ingest/flow.py), as the benchmark runs it
  alto-flat   CONTROL: the same work with the document level taken out (corpus -> chunks ->
              embed -> index -> report, the report grouping chunk results by document): what
              one level of nesting costs, and so about what fusing the documents -> chunks
              splits and the per-document -> corpus gathers in the compiler would save

Every system's reports are compared with the reference's (a mismatch is an error). Rounds
are interleaved (round x in-flight x system, the order of systems rotating per round) and
each figure is the median of the rounds with [min, max]; a ratio's interval is the min and
max of the per-round ratios, and one that holds 1 is parity.

``--embedder one-hot`` swaps the hashing embedder for one that costs almost nothing (each
chunk's vector is a fixed unit vector plus one coordinate picked by a CRC of its text, so
equal chunks still match and others do not), leaving what orchestration costs: the
systems' CPU per corpus then differs only by their own code, not by the model's work.

OpenBLAS's worker threads busy-wait after each small matrix product of the duplicate check
and burn a second core, which CPU time then counts for every system alike; the script runs
with one BLAS thread unless --blas-threads says otherwise.

Usage: python benchmarks/ingest_cost.py [--corpora 600] [--in-flight 1,16,64] [--rounds 5]
       [--blas-threads 1] [--embedder hash|one-hot]
"""

from __future__ import annotations

import argparse
import os
import sys


def _blas_threads(argv: list[str]) -> None:
    """Set the BLAS thread count before numpy is imported (it is read once, at load)."""
    threads = "1"
    for i, arg in enumerate(argv):
        if arg == "--blas-threads" and i + 1 < len(argv):
            threads = argv[i + 1]
        elif arg.startswith("--blas-threads="):
            threads = arg.split("=", 1)[1]
    if threads != "default":
        os.environ["OPENBLAS_NUM_THREADS"] = threads
        os.environ["OMP_NUM_THREADS"] = threads


if __name__ == "__main__":
    _blas_threads(sys.argv[1:])

import asyncio  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any, Awaitable, Callable  # noqa: E402

import numpy as np  # noqa: E402

import alto  # noqa: E402
from alto import Gather, Split  # noqa: E402
from alto.apps import load_app  # noqa: E402
from alto.bench.runner import bench_inputs  # noqa: E402
from alto.bench.stats import rotation  # noqa: E402
from alto.operators.embedding import HashEmbedder  # noqa: E402

ingest = load_app("ingest")  # puts the repository's examples/ on the path
from examples.common import Operators, make_embedder  # noqa: E402
from examples.ingest import steps  # noqa: E402
from examples.ingest.asyncio_reference import asyncio_reference  # noqa: E402
from examples.ingest.steps import (  # noqa: E402, I001
    Chunk,
    ChunkResult,
    Config,
    Corpus,
    CorpusReport,
    Deduper,
    EmbeddedChunk,
)

SYSTEMS = ("reference", "alto", "alto-flat")

Runner = Callable[[list[Corpus], int], Awaitable[list[CorpusReport]]]


class OneHotEmbedder(HashEmbedder):
    """An embedder that costs almost nothing: a fixed unit vector plus one coordinate chosen
    by the text's CRC-32, normalised (equal texts score 1, others at most 0.5)."""

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        for row, text in enumerate(texts):
            out[row, 1 + zlib.crc32(text.encode()) % (self.dim - 1)] += 1.0
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def build_flat(ops: Operators, config: Config) -> alto.Flow:
    """Ingest with one level fewer: chunks split straight from the corpus, gathered per corpus."""
    deduper = Deduper(ops, config)
    jobs: dict[str, str] = {}

    @alto.stage
    async def chunks(corpus: Corpus) -> Split[Chunk]:
        job = jobs[corpus.name] = deduper.start(corpus)
        for doc in corpus.documents:
            for chunk in steps.chunks(replace(doc, job=job), config):
                yield chunk

    @alto.stage(batch=64, batch_timeout=config.embed_batch_timeout)  # as in the flow
    async def embed(chunk: list[Chunk]) -> list[EmbeddedChunk]:
        return await steps.embed(ops, chunk)

    @alto.stage(batch=64)
    async def index(item: list[EmbeddedChunk]) -> list[ChunkResult]:
        return deduper.check_and_add(item)

    @alto.stage
    async def report(results: Gather[ChunkResult], corpus: Corpus) -> CorpusReport:
        deduper.finish(jobs.pop(corpus.name, None))
        by_doc: dict[str, list[ChunkResult]] = {}
        for result in results:
            by_doc.setdefault(result.id.rsplit("#", 1)[0], []).append(result)
        docs = [steps.document_result(d, by_doc.get(d.id, [])) for d in corpus.documents]
        return steps.corpus_report(corpus, docs)

    @alto.flow(name="ingest_flat")
    def ingest_flat(corpus: Corpus):
        return report(index(embed(chunks(corpus))), corpus)

    return ingest_flat


def runners(ops: Operators, config: Config) -> dict[str, Runner]:
    """Each system as a function of (corpora, corpora in flight) -> reports, in input order."""

    async def reference(corpora: list[Corpus], in_flight: int) -> list[CorpusReport]:
        gate = asyncio.Semaphore(in_flight)

        async def one(corpus: Corpus) -> CorpusReport:
            async with gate:
                return await asyncio_reference(ops, corpus, config)

        return list(await asyncio.gather(*(one(c) for c in corpora)))

    def flow_runner(build: Callable[[], alto.Flow]) -> Runner:
        async def run(corpora: list[Corpus], in_flight: int) -> list[CorpusReport]:
            return list(await build().run(corpora, concurrency=in_flight))

        return run

    return {
        "reference": reference,
        "alto": flow_runner(lambda: ingest.build(ops, config)),
        "alto-flat": flow_runner(lambda: build_flat(ops, config)),
    }


def measure(run: Runner, corpora: list[Corpus], in_flight: int) -> tuple[float, float, Any]:
    """CPU and wall seconds per corpus for one run, and its reports."""
    cpu, wall = time.process_time(), time.perf_counter()
    reports = asyncio.run(run(corpora, in_flight))
    n = len(corpora)
    return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n, reports


def same(a: list[CorpusReport], b: list[CorpusReport]) -> bool:
    return [r.model_dump() for r in a] == [r.model_dump() for r in b]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpora", type=int, default=600, help="corpora per run")
    p.add_argument("--in-flight", default="1,16,64", help="corpora in flight, comma-separated")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--blas-threads", default="1", help="BLAS threads, or 'default'")
    p.add_argument(
        "--embedder",
        choices=("hash", "one-hot"),
        default="hash",
        help="hash: the bench's hashing embedder; one-hot: one that costs almost "
        "nothing (orchestration alone)",
    )
    args = p.parse_args(argv)
    levels = [int(x) for x in args.in_flight.split(",")]

    embedder = make_embedder("hash") if args.embedder == "hash" else OneHotEmbedder()
    ops = Operators(embedder=embedder, labels={"embedder": args.embedder})
    config = Config(**getattr(steps, "VARIED_FANOUT", {}))
    # as many distinct corpora as the shipped documents make, then reused in turn, as
    # ``alto bench`` does (each use under a name of its own, so each gets its own index)
    distinct = bench_inputs(
        ingest, min(args.corpora, ingest.available_inputs() // 32), 16, fanout="varied", seed=0
    )
    corpora = [
        Corpus(f"{distinct[i % len(distinct)].name}.{i}", distinct[i % len(distinct)].documents)
        for i in range(args.corpora)
    ]
    chunks = sum(len(steps.chunks(d, config)) for c in corpora for d in c.documents)
    systems = runners(ops, config)
    measure(systems["alto"], corpora[:20], 4)  # warm up imports and caches, not timed

    cpu: dict[tuple[str, int], list[float]] = {}
    wall: dict[tuple[str, int], list[float]] = {}
    expected: dict[int, list[CorpusReport]] = {}
    for turn in range(args.rounds):
        for in_flight in levels:
            for name in rotation(SYSTEMS, turn):
                c, w, reports = measure(systems[name], corpora, in_flight)
                if in_flight not in expected and name == "reference":
                    expected[in_flight] = reports
                if in_flight in expected and not same(reports, expected[in_flight]):
                    msg = f"{name} at {in_flight} in flight: reports differ from the reference's"
                    raise SystemExit(msg)
                cpu.setdefault((name, in_flight), []).append(c)
                wall.setdefault((name, in_flight), []).append(w)

    print(
        f"{len(corpora)} corpora ({len(distinct)} distinct, 1 to 32 documents each), "
        f"{chunks / len(corpora):.1f} chunks per corpus on average; "
        f"{args.rounds} rounds; BLAS threads: {args.blas_threads}; embedder: {args.embedder}"
    )
    print(
        "ms per corpus: median of the rounds [min, max]; / reference: per-round ratios, "
        "median [min, max]\n"
    )
    print("| in flight | system | CPU | wall | CPU / reference |")
    print("|---|---|---|---|---|")

    def cell(values: list[float]) -> str:
        ms = [v * 1e3 for v in values]
        return f"{statistics.median(ms):.2f} [{min(ms):.2f}, {max(ms):.2f}]"

    for in_flight in levels:
        base = cpu[("reference", in_flight)]
        for name in SYSTEMS:
            mine = cpu[(name, in_flight)]
            ratios = [m / b for m, b in zip(mine, base)]
            low, high = min(ratios), max(ratios)
            verdict = "parity" if low <= 1 <= high else ("higher" if low > 1 else "lower")
            shown = (
                "–"
                if name == "reference"
                else (f"{statistics.median(ratios):.2f}x [{low:.2f}, {high:.2f}] {verdict}")
            )
            print(
                f"| {in_flight} | {name} | {cell(mine)} | {cell(wall[(name, in_flight)])} "
                f"| {shown} |"
            )
    return {"cpu": cpu, "wall": wall}


if __name__ == "__main__":
    main()
