"""Operator figures: embedding throughput by batch size, retrieval latency, retrieval quality.

1. Embedding (all-MiniLM-L6-v2 on CPU through ``Embedder.embed``, the call an Alto ``batch=``
   stage makes): texts/s for short questions and ~100-word passages at batch sizes 1, 8, 32
   and 128, median of the repeats (all variants interleaved), and the speed-up over batch 1.
2. Retrieval over the shipped passage corpus (flat and HNSW faiss indexes): the time to embed
   and index it, then latency per query answered one at a time (``search([q])``) against
   batches of 32 (``search(queries[i:i + 32])``), end to end (embed + search) and for the
   faiss search alone (``search_vectors``).
3. With ``--quality``: recall@1/5/20 of the gold passages for the 500 shipped questions, by
   kind, for both indexes; recall@5 of the multi-hop sub-questions; and recall@5 after a
   MaxSim rerank of the top 20 (on ``--rerank-questions`` questions: it embeds every
   candidate token by token, so it is slow on CPU).
4. Then, when ``benchmarks/llm_operators.py`` is present, its ``main()`` (LLM operators), so
   one command prints every operator figure; ``--no-llm`` skips it.

The machine is shared and noisy: figures are medians, the load average is printed, and the
ratios are what carry over to other machines.

Usage: python benchmarks/operators.py [--repeats 5] [--texts 256] [--passages 0 (all)]
       [--queries 256] [--quality] [--rerank-questions 100] [--no-llm]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``examples.data`` importable
    sys.path.insert(0, str(ROOT))

from alto.operators.embedding import Embedder  # noqa: E402
from alto.operators.retriever import Hit, Retriever  # noqa: E402
from examples import data  # noqa: E402

BATCH_SIZES = (1, 8, 32, 128)
QUERY_BATCH = 32


def interleaved_medians(
    runs: dict[str, Callable[[], Awaitable[Any]]], repeats: int
) -> dict[str, float]:
    """Median wall time of each run, the runs interleaved round-robin ``repeats`` times.

    Interleaving spreads the machine's load drift evenly over the variants being compared.
    """

    async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
        start = time.perf_counter()
        await fn()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(anyio.run(timed, fn))
    return {name: statistics.median(values) for name, values in times.items()}


def chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


# ------------------------------------------------------------------ 1. embedding throughput


def embedding_runs(embedder: Embedder, texts: Sequence[str]) -> dict[int, Callable[[], Any]]:
    """For each batch size, a run that embeds ``texts`` in batches of that size, in order."""

    def run_for(size: int) -> Callable[[], Any]:
        batches = chunks(texts, size)

        async def run() -> None:
            for batch in batches:
                await embedder.embed(batch)

        return run

    return {size: run_for(size) for size in BATCH_SIZES}


def report_embedding(embedder: Embedder, n_texts: int, repeats: int) -> None:
    every = [q.question for q in data.questions()]  # in blocks by kind: sample across them
    questions = [every[i * len(every) // n_texts] for i in range(min(n_texts, len(every)))]
    passages = [p.text for p in data.passages() if 80 <= len(p.text.split()) <= 120]
    n_passages = min(max(1, n_texts // 2), len(passages))
    passages = [passages[i * len(passages) // n_passages] for i in range(n_passages)]
    embedder.embed_sync(questions[:8])  # warm up
    q_words = statistics.mean(len(t.split()) for t in questions)
    p_words = statistics.mean(len(t.split()) for t in passages)
    print(
        f"\nEmbedding: all-MiniLM-L6-v2, CPU, Embedder.embed; {len(questions)} questions "
        f"(~{q_words:.0f} words) and {len(passages)} passages (~{p_words:.0f} words); "
        f"median of {repeats}"
    )
    runs: dict[str, Callable[[], Any]] = {}
    for kind, texts in (("q", questions), ("p", passages)):
        for size, run in embedding_runs(embedder, texts).items():
            runs[f"{kind}{size}"] = run
    seconds = interleaved_medians(runs, repeats)
    short = {size: len(questions) / seconds[f"q{size}"] for size in BATCH_SIZES}
    long = {size: len(passages) / seconds[f"p{size}"] for size in BATCH_SIZES}
    print(f"{'batch':>6} {'questions/s':>12} {'speed-up':>9} {'passages/s':>11} {'speed-up':>9}")
    for size in BATCH_SIZES:
        print(
            f"{size:>6} {short[size]:>12.1f} {short[size] / short[1]:>8.2f}x "
            f"{long[size]:>11.1f} {long[size] / long[1]:>8.2f}x"
        )


# ------------------------------------------------------------------ 2. retrieval latency


def build_indexes(embedder: Embedder, limit: int) -> tuple[Retriever, Retriever]:
    corpus = data.passages()
    if limit:
        corpus = corpus[:limit]
    texts, ids = [p.text for p in corpus], [p.id for p in corpus]
    start = time.perf_counter()
    vectors = embedder.embed_sync(texts)
    embed_s = time.perf_counter() - start
    flat = Retriever(embedder)
    start = time.perf_counter()
    flat.add_vectors(vectors, texts, ids=ids)
    flat_s = time.perf_counter() - start
    hnsw = Retriever(embedder, index="hnsw")
    start = time.perf_counter()
    hnsw.add_vectors(vectors, texts, ids=ids)
    hnsw_s = time.perf_counter() - start
    print(
        f"\nIndex over {len(texts)} passages: embedding {embed_s:.1f} s "
        f"({len(texts) / embed_s:.0f} passages/s); faiss add: flat {flat_s * 1e3:.1f} ms, "
        f"HNSW {hnsw_s * 1e3:.0f} ms"
    )
    return flat, hnsw


def report_latency(
    embedder: Embedder, flat: Retriever, hnsw: Retriever, n_queries: int, repeats: int
) -> None:
    questions = [q.question for q in data.questions()]
    queries = (questions * (1 + n_queries // len(questions)))[:n_queries]
    vectors = embedder.embed_sync(queries)
    print(
        f"\nRetrieval latency, k=5, {len(queries)} queries, ms per query (per call in "
        f"brackets), median of {repeats}"
    )
    print(
        f"{'index':>6} {'what':>16} {'one at a time':>14} {f'batches of {QUERY_BATCH}':>22} "
        f"{'speed-up':>9}"
    )
    for name, retriever in (("flat", flat), ("hnsw", hnsw)):

        async def one_text(r: Retriever = retriever) -> None:
            for query in queries:
                await r.search([query], k=5)

        async def batch_text(r: Retriever = retriever) -> None:
            for batch in chunks(queries, QUERY_BATCH):
                await r.search(batch, k=5)

        async def one_vector(r: Retriever = retriever) -> None:
            for row in range(len(vectors)):
                r.search_vectors(vectors[row : row + 1], k=5)

        async def batch_vector(r: Retriever = retriever) -> None:
            for start in range(0, len(vectors), QUERY_BATCH):
                r.search_vectors(vectors[start : start + QUERY_BATCH], k=5)

        seconds = interleaved_medians(
            {"t1": one_text, "tb": batch_text, "v1": one_vector, "vb": batch_vector}, repeats
        )
        for what, single, batched in (
            ("embed + search", "t1", "tb"),
            ("faiss search", "v1", "vb"),
        ):
            t1 = seconds[single] / len(queries)
            tb = seconds[batched] / len(queries)
            per_call = f"{tb * 1e3:.3f} ({tb * QUERY_BATCH * 1e3:.2f})"
            print(f"{name:>6} {what:>16} {t1 * 1e3:>14.3f} {per_call:>22} {t1 / tb:>8.1f}x")


# ------------------------------------------------------------------ 3. retrieval quality


def recall(found: Sequence[Sequence[Hit]], gold: Sequence[Sequence[str]], k: int) -> float:
    return float(
        np.mean([any(g in {h.id for h in hits[:k]} for g in ids) for hits, ids in zip(found, gold)])
    )


def report_quality(flat: Retriever, hnsw: Retriever, rerank_questions: int) -> None:
    questions = data.questions()
    gold = [q.gold_ids for q in questions]
    print(f"\nRetrieval quality over {len(flat)} passages: recall of the gold passage")
    print(f"{'index':>6} {'questions':>18} {'n':>4} {'R@1':>6} {'R@5':>6} {'R@20':>6}")
    for name, retriever in (("flat", flat), ("hnsw", hnsw)):
        found = anyio.run(retriever.search, [q.question for q in questions], 20)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, q in enumerate(questions):
            groups[q.kind].append(i)
        groups["all"] = list(range(len(questions)))
        for kind, rows in groups.items():
            sub_found = [found[i] for i in rows]
            sub_gold = [gold[i] for i in rows]
            print(
                f"{name:>6} {kind:>18} {len(rows):>4} {recall(sub_found, sub_gold, 1):>6.3f} "
                f"{recall(sub_found, sub_gold, 5):>6.3f} {recall(sub_found, sub_gold, 20):>6.3f}"
            )
    subs = [s for q in data.questions(multihop=True) for s in q.subquestions]
    found = anyio.run(flat.search, [s.question for s in subs], 5)
    print(
        f"{'flat':>6} {'multi-hop subq.':>18} {len(subs):>4} {'':>6} "
        f"{recall(found, [s.gold_ids for s in subs], 5):>6.3f}"
    )

    sample = questions[:: max(1, len(questions) // rerank_questions)][:rerank_questions]

    async def reranked() -> tuple[list[list[Hit]], list[list[Hit]], float]:
        first = await flat.search([q.question for q in sample], 20)
        start = time.perf_counter()
        second = [await flat.rerank(q.question, hits, k=5) for q, hits in zip(sample, first)]
        return first, second, time.perf_counter() - start

    first, second, seconds = anyio.run(reranked)
    sample_gold = [q.gold_ids for q in sample]
    print(
        f"\nMaxSim rerank of the top 20 on {len(sample)} questions: R@5 "
        f"{recall(first, sample_gold, 5):.3f} -> {recall(second, sample_gold, 5):.3f} "
        f"({seconds / len(sample) * 1e3:.0f} ms per question)"
    )


# ------------------------------------------------------------------ 4. the LLM operators


def run_llm_benchmark() -> None:
    path = Path(__file__).resolve().parent / "llm_operators.py"
    if not path.exists():
        print(f"\n({path.name} not found: no LLM operator figures)")
        return
    spec = importlib.util.spec_from_file_location("benchmarks_llm_operators", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"\n--- {path.name} ---")
    argv = sys.argv
    sys.argv = [str(path)]  # its own defaults, not this script's flags
    try:
        result = module.main()
        if inspect.iscoroutine(result):
            anyio.run(lambda: result)
    finally:
        sys.argv = argv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--texts", type=int, default=256, help="questions per throughput run")
    parser.add_argument("--passages", type=int, default=0, help="index size (0: whole corpus)")
    parser.add_argument("--queries", type=int, default=256, help="queries per latency run")
    parser.add_argument("--quality", action="store_true", help="also measure recall")
    parser.add_argument("--rerank-questions", type=int, default=100)
    parser.add_argument("--no-llm", action="store_true", help="skip benchmarks/llm_operators.py")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    print(f"machine: {cores} usable cores, load average {os.getloadavg()[0]:.1f}")
    start = time.perf_counter()
    embedder = Embedder()
    print(f"Embedder() loaded in {time.perf_counter() - start:.1f} s (imports included)")
    report_embedding(embedder, args.texts, args.repeats)
    flat, hnsw = build_indexes(embedder, args.passages)
    report_latency(embedder, flat, hnsw, args.queries, args.repeats)
    if args.quality:
        report_quality(flat, hnsw, args.rerank_questions)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    if not args.no_llm:
        run_llm_benchmark()


if __name__ == "__main__":
    main()
