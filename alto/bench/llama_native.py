"""llama.cpp's own HTTP server (``llama-server``) on loopback, with the embedded SmolLM2.

``python -m llama_cpp.server`` (llama-cpp-python's server, :mod:`alto.bench.llama_servers`)
holds one sequence. ``llama-server`` is what llama.cpp itself ships for serving: ``slots``
sequences decoded together in one batch (continuous batching), a prompt cache per slot, each
request given the idle slot whose cached prompt it shares most of, and the counters of a
production server: ``GET /props`` (``total_slots``), ``GET /slots``, and ``GET /metrics`` with
``--metrics`` (``llamacpp:prompt_tokens_total``, ``llamacpp:tokens_predicted_total``, ...).

``alto bench --llm llama-server-native`` starts one per replica of its deployment, each with
:attr:`NativeLlamaServer.erasable` set, and reads every run's prompt tokens from their own
``/metrics`` (:class:`NativeServerCounters`).

``bash install.sh llama-server`` (and ``bash install.sh all``) builds it into
``.venv/bin/llama-server`` from the llama.cpp sources vendored in the pinned llama-cpp-python
release, for a portable CPU baseline; ``$ALTO_LLAMA_SERVER`` names another binary.

Example:
    >>> async def main():  # doctest: +SKIP
    ...     async with NativeLlamaServer(slots=4, threads=2) as server:
    ...         async with OpenAIClient(server.base_url, "smollm2") as llm:
    ...             print(await llm.chat([{"role": "user", "content": "Hi"}]))
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread

from alto.bench.errors import BenchRunError, LlamaServerMissing
from alto.bench.llama_servers import replica_stats
from alto.bench.loopback import BackgroundServer, bind, stop_child, wait_until_ready
from alto.errors import StateError, UsageError

BINARY_ENV = "ALTO_LLAMA_SERVER"
"""Environment variable naming a ``llama-server`` binary to use instead of the one in .venv."""

INSTALL_COMMAND = "bash install.sh llama-server"
"""What builds the binary (about 7 minutes on 2 cores)."""

_REPO = Path(__file__).resolve().parents[2]
_METRIC = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)\s*$")
_LAUNCH = re.compile(rb"launch_slot_: .*processing task")  # a slot took up a request

EVALUATED = "llamacpp:prompt_tokens_total"
"""Prompt tokens the server evaluated ("excluding cached tokens", as its ``# HELP`` says)."""
CACHED = "llamacpp:prompt_tokens_cached_total"
"""Prompt tokens it took from a slot's KV cache instead (not in every llama.cpp build)."""
PREDICTED = "llamacpp:tokens_predicted_total"
"""Tokens it generated."""


def find_binary() -> Path:
    """The ``llama-server`` to run.

    ``$ALTO_LLAMA_SERVER``, else the one ``install.sh`` built into this environment's
    ``bin`` (or the repository's ``.venv/bin``).

    Raises:
        LlamaServerMissing: none is there (or ``$ALTO_LLAMA_SERVER`` names no executable
            file); the message names the install command.
    """
    named = os.environ.get(BINARY_ENV)
    if named:
        path = Path(named)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        msg = (
            f"${BINARY_ENV} is {named!r}, which is not an executable file; unset it to use "
            f"the build in .venv, or build one with: {INSTALL_COMMAND}"
        )
        raise LlamaServerMissing(msg)
    for path in (Path(sys.prefix) / "bin", _REPO / ".venv" / "bin"):
        path = path / "llama-server"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    msg = (
        "llama.cpp's llama-server is not built: build it (about 7 minutes on 2 cores) with: "
        f"{INSTALL_COMMAND} (or set ${BINARY_ENV} to a llama-server binary)"
    )
    raise LlamaServerMissing(msg)


def missing() -> str:
    """Why no ``llama-server`` can be run here (what to install), or ``""`` when one is found.

    For skipping what needs it.
    """
    try:
        find_binary()
    except LlamaServerMissing as exc:
        return str(exc)
    return ""


def version(binary: str | Path | None = None) -> str | None:
    """What ``llama-server --version`` says, or None when it says nothing within 30 s.

    The answer reads ``version: … (build …, commit …)``; ``binary`` defaults to
    :func:`find_binary`.
    """
    try:
        done = subprocess.run(
            [str(binary or find_binary()), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (done.stdout + done.stderr).splitlines()
    return next((line.strip() for line in lines if line.startswith("version:")), None)


def default_model_path() -> Path:
    """The embedded SmolLM2-135M-Instruct GGUF (see :mod:`alto.operators.llm.local`)."""
    from alto.operators.llm.local import default_model_path as path

    return path()


def parse_metrics(text: str) -> dict[str, float]:
    r"""The samples of a Prometheus text exposition, by metric name.

    Labels are dropped; the last sample of a name wins.

    Example:
        >>> parse_metrics("# HELP x y\nllamacpp:prompt_tokens_total 12\n")
        {'llamacpp:prompt_tokens_total': 12.0}
    """
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _METRIC.match(line)
        if match is None:
            continue
        try:
            samples[match.group(1)] = float(match.group(2))
        except ValueError:
            continue
    return samples


class NativeLlamaServer(BackgroundServer):
    """One ``llama-server`` process on a free loopback port.

    Args:
        slots: sequences it serves at once (``-np``), decoded in one batch, each with its
            own prompt cache.
        threads: CPU threads for decoding and for prompt batches (``-t``, ``-tb``).
        ctx_per_slot: context length of each slot in tokens (the server gets
            ``slots * ctx_per_slot``, ``-c``, shared out among its slots).
        model_path: the GGUF it serves; default the embedded SmolLM2-135M-Instruct.
        binary: the ``llama-server`` to run; default :func:`find_binary`.
        alias: the model name the server reports (``/v1/models``).
        erasable: keep prompts in the slots only, so that :meth:`erase_slots` empties every
            cache the server has. The server is then started with ``--cache-ram 0``: by
            default it also keeps the prompts a slot drops in a host-memory prompt cache
            (8 GiB), restores them from there, and has no endpoint that empties it; and with
            ``--slot-save-path`` (a temporary folder nothing is saved to), without which it
            refuses ``POST /slots/{id}?action=erase`` (501).
        extra_args: more command-line arguments for the server.

    Raises:
        UsageError: ``slots``, ``threads`` or ``ctx_per_slot`` below 1.
        LlamaServerMissing: from :meth:`start`, when no binary is found.
        BenchRunError: from :meth:`start`, when the server exits or does not answer
            ``GET /health`` within the timeout; the message holds its log's tail.
    """

    def __init__(
        self,
        *,
        slots: int = 4,
        threads: int = 2,
        ctx_per_slot: int = 2048,
        model_path: str | Path | None = None,
        binary: str | Path | None = None,
        alias: str = "smollm2",
        erasable: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        for name, value in (("slots", slots), ("threads", threads), ("ctx_per_slot", ctx_per_slot)):
            if type(value) is not int or value < 1:
                msg = f"{name} must be an int >= 1, got {value!r}"
                raise UsageError(msg)
        self.slots = slots
        self.threads = threads
        self.ctx_per_slot = ctx_per_slot
        self.model_path = Path(model_path) if model_path else None
        self.binary = Path(binary) if binary else None
        self.alias = alias
        self.erasable = erasable
        self.extra_args = tuple(extra_args)
        self.url = ""  # http://127.0.0.1:PORT, once started
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._save_dir: str | None = None  # --slot-save-path, while an erasable one runs
        self._launched = 0  # requests a slot took up, in the log up to _scanned
        self._scanned = 0

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``…/v1``); empty until started."""
        return f"{self.url}/v1" if self.url else ""

    def command(self, port: int) -> list[str]:
        """The command line the server is started with, on ``port``."""
        binary = self.binary or find_binary()
        model = self.model_path or default_model_path()
        erasable = (
            ["--cache-ram", "0", "--slot-save-path", self._save_dir or tempfile.gettempdir()]
            if self.erasable
            else []
        )
        return [
            str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-np", str(self.slots), "-c", str(self.slots * self.ctx_per_slot),
            "-t", str(self.threads), "-tb", str(self.threads),
            "--metrics", "--alias", self.alias, *erasable, *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 120.0) -> str:
        """Start the server and wait until ``GET /health`` answers 200.

        Returns :attr:`base_url`.
        """
        if self.process is not None:
            return self.base_url
        with bind("127.0.0.1", 0) as sock:  # a free port, released for the server
            port = sock.getsockname()[1]
        if self.erasable:
            self._save_dir = tempfile.mkdtemp(prefix="alto-llama-slots-")
        cmd = self.command(port)
        self._log = tempfile.TemporaryFile()
        self._launched = self._scanned = 0
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(
                f"{url}/health",  # 503 while the model loads
                self.process,
                what="llama-server",
                log=self.log_tail,
                deadline=time.monotonic() + timeout,
                timeout=timeout,
                every=0.1,
            )
        except BaseException:
            self.stop()
            raise
        self.url = url
        return self.base_url

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log (its standard output and error)."""
        if self._log is None or self._log.closed:
            return ""
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        start = max(0, size - 4 * chars)  # UTF-8: at most 4 bytes a character
        return _read_at(fd, start, size).decode(errors="replace")[-chars:]

    def requests_started(self) -> int:
        """Requests a slot took up since the server started, counted in its log.

        The log line is ``launch_slot_: ... processing task``; its ``/metrics`` has no
        request counter.
        """
        if self._log is None or self._log.closed:
            return self._launched
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        # the log is the server's standard output: read without moving its file offset,
        # and only up to its last complete line
        chunk = _read_at(fd, self._scanned, size)
        end = chunk.rfind(b"\n") + 1
        self._launched += sum(1 for line in chunk[:end].splitlines() if _LAUNCH.search(line))
        self._scanned += end
        return self._launched

    def stop(self) -> None:
        """Stop the server (killed after 10 s). Calling it twice is harmless."""
        proc, self.process = self.process, None
        if proc is not None:
            stop_child(proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._save_dir is not None:
            shutil.rmtree(self._save_dir, ignore_errors=True)
            self._save_dir = None
        self.url = ""

    def props(self) -> dict[str, Any]:
        """``GET /props``: the server's settings (``total_slots``, the model, ...)."""
        data: dict[str, Any] = self._get("/props").json()
        return data

    def slot_states(self) -> list[dict[str, Any]]:
        """``GET /slots``: each slot's state (``id``, ``is_processing``, ...)."""
        states: list[dict[str, Any]] = self._get("/slots").json()
        return states

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` by metric name.

        ``llamacpp:prompt_tokens_total`` (prompt tokens evaluated),
        ``llamacpp:tokens_predicted_total``, ``llamacpp:requests_processing``...
        """
        return parse_metrics(self._get("/metrics").text)

    def counts(self) -> ServerCounts:
        """Its prompt and generated tokens from ``/metrics``, and its requests from its log."""
        return ServerCounts.from_metrics(self.metrics(), self.requests_started())

    def erase_slots(self) -> int:
        """Empty every slot's prompt cache (``POST /slots/{id}?action=erase``).

        Returns the tokens erased. With :attr:`erasable` no prompt is then cached anywhere
        in the server.

        Raises:
            StateError: the server was not started :attr:`erasable` (it refuses erasing).
        """
        import httpx

        if not self.erasable:
            msg = (
                "this llama-server keeps prompts beyond its slots and refuses to erase them: "
                "make it with NativeLlamaServer(erasable=True)"
            )
            raise StateError(msg)
        erased = 0
        for state in self.slot_states():
            response = httpx.post(
                f"{self.url}/slots/{state['id']}", params={"action": "erase"}, timeout=30
            )
            response.raise_for_status()
            erased += int(response.json().get("n_erased", 0))
        return erased

    def _get(self, path: str) -> Any:
        import httpx

        if not self.url:
            msg = "the llama-server is not running: start() it first"
            raise StateError(msg)
        response = httpx.get(f"{self.url}{path}", timeout=10)
        response.raise_for_status()
        return response


def _read_at(fd: int, start: int, end: int) -> bytes:
    """Bytes ``start:end`` of the file ``fd``, its offset left where it is."""
    parts = []
    while start < end:
        part = os.pread(fd, min(end - start, 1 << 20), start)
        if not part:
            break
        parts.append(part)
        start += len(part)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class ServerCounts:
    r"""One ``llama-server``'s counters since it started.

    ``prompt_tokens`` (those it received) is ``evaluated_tokens + cached_tokens``. A build
    without :data:`CACHED` counts no cached tokens: there it is the evaluated ones alone.

    Example:
        >>> text = ("llamacpp:prompt_tokens_total 9\nllamacpp:prompt_tokens_cached_total 28\n"
        ...         "llamacpp:tokens_predicted_total 5\n")
        >>> ServerCounts.from_metrics(parse_metrics(text), requests=2).prompt_tokens
        37
    """

    requests: int
    evaluated_tokens: int
    cached_tokens: int
    predicted_tokens: int

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens received: those evaluated plus those taken from the cache."""
        return self.evaluated_tokens + self.cached_tokens

    @classmethod
    def from_metrics(cls, samples: dict[str, float], requests: int) -> ServerCounts:
        """The counts in ``samples`` (:func:`parse_metrics` of ``GET /metrics``).

        Raises:
            BenchRunError: :data:`EVALUATED` or :data:`PREDICTED` is missing (a server not
                started with ``--metrics`` answers 501 before this is reached).
        """
        missing = [name for name in (EVALUATED, PREDICTED) if name not in samples]
        if missing:
            msg = (
                f"llama-server's /metrics lacks {', '.join(missing)}: expected the counters "
                f"of llama.cpp's server, found {', '.join(sorted(samples)) or 'none'}"
            )
            raise BenchRunError(msg)
        return cls(
            requests=requests,
            evaluated_tokens=round(samples[EVALUATED]),
            cached_tokens=round(samples.get(CACHED, 0.0)),
            predicted_tokens=round(samples[PREDICTED]),
        )

    def as_stats(self, replica: int) -> dict[str, Any]:
        """In the shape of the emulator's ``/stats`` ``per_replica`` entries."""
        return replica_stats(
            replica, self.requests, self.prompt_tokens, self.cached_tokens,
            evaluated_tokens=self.evaluated_tokens, predicted_tokens=self.predicted_tokens,
        )  # fmt: skip


class NativeServerCounters:
    """Every server's own counters around each benchmark run, in the emulator's shape.

    The shape is that of :class:`~alto.bench.emulated.EmulatorCounters`: tokens from each
    server's ``/metrics``, requests from its log. Before each run every slot of every server
    is erased, so that no run finds the previous one's prompts cached; the servers must be
    started ``erasable``.
    """

    def __init__(self, servers: Sequence[NativeLlamaServer]) -> None:
        self.servers = list(servers)

    async def reset_cache(self) -> None:
        """Erase every slot of every server, so that no run finds a previous one's prompts."""
        for server in self.servers:
            await anyio.to_thread.run_sync(server.erase_slots)

    async def read(self) -> tuple[int, int, int, list[dict[str, Any]]]:
        """Read every server's counters.

        Returns (requests, prompt tokens received, of those taken from the cache, per-server
        counters).
        """
        counts = [await anyio.to_thread.run_sync(server.counts) for server in self.servers]
        return (
            sum(c.requests for c in counts),
            sum(c.prompt_tokens for c in counts),
            sum(c.cached_tokens for c in counts),
            [c.as_stats(i) for i, c in enumerate(counts)],
        )
