"""Real llama.cpp servers on loopback, and the prompt tokens each one evaluated.

:class:`LlamaServers` starts ``python -m llama_cpp.server`` processes (the embedded SmolLM2 by
default, one CPU thread each), one per replica of a deployment. llama.cpp keeps one sequence in
its KV cache and reuses the longest common prefix of the next prompt with it; what it did is
only in its log, so each server's log is read as it is written and counted by a
:class:`PromptLog`:

* ``Llama.generate: H prefix-match hit, remaining M prompt tokens to eval``: H tokens came from
  the cache and M are evaluated;
* ``llama_perf_context_print: prompt eval time = ... / N tokens``: one request's prompt
  evaluation ended (N tokens evaluated in batches; M is used when the hit line came first,
  since a one-token remainder is counted by llama.cpp as a decode step, not a prompt batch).

The counts are llama-cpp-python 0.3's verbose log (``Llama.generate`` in ``llama_cpp/llama.py``
and llama.cpp's ``llama_perf_context_print``); a server run with ``--verbose false`` prints
neither, and nothing is counted.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from alto.bench.loopback import BackgroundServer, bind, wait_until_ready
from alto.errors import UsageError

_HIT = re.compile(r"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens")
_FULL = re.compile(r"Llama\.generate: full prompt already cached")
_EVAL = re.compile(r"prompt eval time\s*=\s*[\d.]+ ms /\s*(\d+) tokens")

FLUSH_PROMPT = "Reply with one word: ready."
"""What :meth:`LlamaServers.flush` sends: after it no server holds a previous run's prompt."""


@dataclass
class PromptCounts:
    """One server's counters since it started."""

    requests: int = 0
    prompt_tokens: int = 0  # evaluated + from the cache
    evaluated_tokens: int = 0
    cached_tokens: int = 0
    full_hits: int = 0  # prompts found whole in the cache (their length is not logged)

    def as_stats(self, replica: int) -> dict[str, Any]:
        """In the shape of the emulator's ``/stats`` ``per_replica`` entries."""
        return replica_stats(
            replica, self.requests, self.prompt_tokens, self.cached_tokens,
            evaluated_tokens=self.evaluated_tokens, full_hits=self.full_hits,
        )  # fmt: skip


def replica_stats(
    replica: int, requests: int, prompt_tokens: int, cached_tokens: int, **more: int
) -> dict[str, Any]:
    """One real server's counters in the shape of the emulator's ``/stats`` ``per_replica`` entries.

    That is what the report's per-replica columns read; ``more`` sits beside them.
    """
    return {
        "replica": replica,
        "requests": requests,
        "prefix_cache": {"queried_tokens": prompt_tokens, "hit_tokens": cached_tokens},
        **more,
    }


class PromptLog:
    """Counts a llama-cpp-python server's prompt tokens from its log, one line at a time.

    Example:
        >>> log = PromptLog()
        >>> log.feed("Llama.generate: 28 prefix-match hit, remaining 9 prompt tokens to eval")
        >>> log.feed("llama_perf_context_print: prompt eval time = 59.90 ms / 9 tokens")
        >>> log.counts.prompt_tokens, log.counts.cached_tokens, log.counts.evaluated_tokens
        (37, 28, 9)
    """

    def __init__(self) -> None:
        self.counts = PromptCounts()
        self.last_line_at = time.monotonic()
        self._hit: tuple[int, int] | None = None
        self._full = False

    def feed(self, line: str) -> None:
        """Read one line of the server's log, counting a request when its prompt evaluation ends."""
        self.last_line_at = time.monotonic()
        if match := _HIT.search(line):
            self._hit = (int(match.group(1)), int(match.group(2)))
        elif _FULL.search(line):
            self._full = True
        elif match := _EVAL.search(line):
            counts = self.counts
            cached, evaluated = self._hit if self._hit else (0, int(match.group(1)))
            counts.requests += 1
            counts.prompt_tokens += cached + evaluated
            counts.cached_tokens += cached
            counts.evaluated_tokens += evaluated
            counts.full_hits += self._full
            self._hit, self._full = None, False


def default_model_path() -> Path:
    """The embedded SmolLM2-135M-Instruct GGUF (see :mod:`alto.operators.llm.local`)."""
    from alto.operators.llm.local import default_model_path as path

    return path()


class LlamaServers(BackgroundServer):
    """``count`` ``python -m llama_cpp.server`` processes on free loopback ports.

    Args:
        count: how many servers (replicas).
        model_path: the GGUF each serves; default the embedded SmolLM2-135M-Instruct.
        threads: CPU threads per server, for decoding and for prompt batches.
        n_ctx: each server's context length in tokens.

    Raises:
        RuntimeError: from :meth:`start`, when a server exits or does not answer
            ``GET /v1/models`` within the timeout; the message holds its log's tail.
    """

    def __init__(
        self,
        count: int,
        *,
        model_path: str | Path | None = None,
        threads: int = 1,
        n_ctx: int = 2048,
    ) -> None:
        if count < 1:
            msg = f"count must be at least 1, got {count}"
            raise UsageError(msg)
        self.count = count
        self.model_path = Path(model_path) if model_path else None
        self.threads = threads
        self.n_ctx = n_ctx
        self.urls: list[str] = []
        self.logs: list[PromptLog] = []
        self._tails: list[list[str]] = []
        self._processes: list[subprocess.Popen[str]] = []
        self._readers: list[threading.Thread] = []

    def start(self, timeout: float = 180.0) -> list[str]:
        """Start every server and wait until each answers; returns their base URLs."""
        if self.urls:
            return self.urls
        model = self.model_path or default_model_path()
        try:
            for i in range(self.count):
                with bind("127.0.0.1", 0) as sock:  # a free port, released for the server
                    port = sock.getsockname()[1]
                cmd = [
                    sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                    "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(self.n_ctx),
                    "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
                    "--verbose", "true",
                    # by default a new request cuts off a stream in progress
                    "--interrupt_requests", "false",
                ]  # fmt: skip
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
                )
                log, tail = PromptLog(), list[str]()
                reader = threading.Thread(
                    target=_read, args=(proc, log, tail), name=f"llama-server-{i}", daemon=True
                )
                reader.start()
                self._processes.append(proc)
                self._readers.append(reader)
                self.logs.append(log)
                self._tails.append(tail)
                self.urls.append(f"http://127.0.0.1:{port}/v1")
            deadline = time.monotonic() + timeout
            for i, url in enumerate(self.urls):
                wait_until_ready(
                    f"{url}/models",
                    self._processes[i],
                    what=f"llama_cpp.server {i}",
                    log=functools.partial(self._tail, i),
                    deadline=deadline,
                    timeout=timeout,
                    every=0.25,
                )
        except BaseException:
            self.stop()
            raise
        return self.urls

    def _tail(self, i: int) -> str:
        return "".join(self._tails[i][-30:])

    def stop(self) -> None:
        """Stop every server. Calling it twice is harmless."""
        for proc in self._processes:
            proc.terminate()
        for proc in self._processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for proc in self._processes:
            if proc.stdout is not None:
                proc.stdout.close()
        self._processes, self._readers, self.urls = [], [], []

    def counts(self) -> list[PromptCounts]:
        """Each server's counters, as its log has been read so far."""
        return [PromptCounts(**vars(log.counts)) for log in self.logs]

    def settle(self, quiet: float = 0.3, timeout: float = 10.0) -> None:
        """Wait until no server has logged anything for ``quiet`` seconds.

        What a request that has been answered logged is then counted.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = max((log.last_line_at for log in self.logs), default=0.0)
            if time.monotonic() - last >= quiet:
                return
            time.sleep(quiet / 3)

    def flush(self) -> None:
        """Send every server :data:`FLUSH_PROMPT`, so none holds a previous run's prompt."""
        import httpx

        body = {"messages": [{"role": "user", "content": FLUSH_PROMPT}], "max_tokens": 1}
        for url in self.urls:
            httpx.post(f"{url}/chat/completions", json=body, timeout=60).raise_for_status()


def _read(proc: subprocess.Popen[str], log: PromptLog, tail: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        log.feed(line)
        tail.append(line)
        if len(tail) > 200:
            del tail[:100]


class LlamaServerCounters:
    """The servers' prompt counters around each benchmark run, in the emulator's shape.

    The shape is that of :class:`~alto.bench.emulated.EmulatorCounters`.
    """

    def __init__(self, servers: LlamaServers) -> None:
        self.servers = servers

    async def reset_cache(self) -> None:
        """Send every server :data:`FLUSH_PROMPT`, so that none holds a previous run's prompt."""
        await anyio.to_thread.run_sync(self.servers.flush)

    async def read(self) -> tuple[int, int, int, list[dict[str, Any]]]:
        """(requests, prompt tokens, tokens served from the cache, per-server counters)."""
        await anyio.to_thread.run_sync(self.servers.settle)
        counts = self.servers.counts()
        return (
            sum(c.requests for c in counts),
            sum(c.prompt_tokens for c in counts),
            sum(c.cached_tokens for c in counts),
            [c.as_stats(i) for i, c in enumerate(counts)],
        )
