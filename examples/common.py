"""What the example applications share: their operators, and how to open them.

Every app calls its models through one :class:`Operators` bundle, and its
Alto flow, its plain-Python reference and its LangGraph baselines all call the
*same* objects, so comparisons measure orchestration only.

``open_operators`` builds the bundle an app needs from the command line's
choices: the LLM (embedded SmolLM2, an OpenAI-compatible server, llama.cpp's own
server started on loopback over the embedded SmolLM2, the serving-timing emulator, or
the scripted fake) and the embedder (MiniLM, or
the hashing test double); the passage retriever is built over the shipped
corpus and cached on disk, so only the first run pays for embedding it.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable, Literal

from alto.cache import cache_dir
from alto.console import Console
from alto.operators.llm.base import LLM

LLMKind = Literal["local", "openai", "llama-server-native", "emulated", "fake"]
EmbedderKind = Literal["minilm", "hash"]
Need = Literal["llm", "embedder", "retriever"]


MIN_LLM_CALLS = 8
"""Calls each LLM stage keeps in flight at least (see ``Operators.llm_replicas``)."""


@dataclass
class Operators:
    """The model clients an app calls.

    Attributes:
        llm: the language model.
        embedder: a sentence embedder (``embed``, ``token_embeddings``, ``dim``).
        retriever: a passage retriever over the shipped corpus.
        labels: how each was made, for reports (e.g. ``{"llm": "local SmolLM2"}``).
    """

    llm: LLM | None = None
    embedder: Any = None
    retriever: Any = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def llm_replicas(self) -> int:
        """How many calls each LLM stage runs at once: what the LLM serves well concurrently,
        and at least ``MIN_LLM_CALLS``.

        A model that serves fewer at once (the embedded one serves one) keeps the rest
        waiting, and picks the next by shared prompt prefix, so that calls of one prompt
        template run back to back and reuse its cached prefix. With one call per stage in
        flight it could not choose: factcheck's query and verdict calls alternated, and each
        re-read the other's long prompt (a 15% longer run on SmolLM2).
        """
        if self.llm is None:
            return 1
        return max(self.llm.max_concurrency, MIN_LLM_CALLS)


def make_embedder(kind: EmbedderKind = "minilm") -> Any:
    from alto.operators.embedding import Embedder, HashEmbedder

    if kind == "hash":
        return HashEmbedder()
    if kind == "minilm":
        return Embedder()
    msg = f"unknown embedder {kind!r}; expected 'minilm' or 'hash'"
    raise ValueError(msg)


async def passage_retriever(
    embedder: Any, *, limit: int | None = None, console: Console | None = None
) -> Any:
    """A retriever over the shipped passages, built once per embedder and cached on disk.

    ``console`` shows the first run's embedding of the corpus, and where the index is kept.
    """
    from alto.operators.embedding import describe_embedder
    from alto.operators.retriever import Retriever
    from examples import data

    passages = data.passages()[:limit]
    key = hashlib.sha256(
        repr((describe_embedder(embedder), [p.id for p in passages])).encode()
    ).hexdigest()[:16]
    folder = cache_dir() / "indexes" / f"passages-{key}"
    console = console or Console(enabled=False)
    if (folder / "index.faiss").exists():
        try:
            with console.step("loading the passage index"):
                return Retriever.load(folder, embedder)
        except Exception:  # a stale or partial cache: rebuild it below
            pass
    console.note(
        f"embedding {len(passages):,} passages for the search index, once: it is kept in "
        f"{folder} (delete that folder to rebuild it; set ALTO_CACHE to keep indexes elsewhere)"
    )
    bar = console.bar(len(passages), "embedding passages", "passage")
    done = 0
    started = time.perf_counter()

    def advance(now_done: int, total: int) -> None:
        nonlocal done
        bar.update(now_done - done)
        done = now_done

    try:
        retriever = await Retriever.build(
            [p.text for p in passages], embedder, ids=[p.id for p in passages],
            on_progress=advance,
        )
    finally:
        bar.close()
    console.note(f"passage index built in {time.perf_counter() - started:.1f} s")
    with contextlib.suppress(OSError):
        retriever.save(folder)
    return retriever


@contextlib.asynccontextmanager
async def open_llm(
    kind: LLMKind = "local",
    *,
    url: str | None = None,
    model: str | None = None,
    slots: int = 4,
    threads: int = 2,
) -> AsyncIterator[tuple[LLM, str]]:
    """The LLM of the given kind, and a label for reports; closed (and servers stopped) after.

    ``slots`` and ``threads`` are ``llama-server-native``'s: sequences the server decodes
    together, and its CPU threads; ``model`` is then a GGUF path (default the embedded
    SmolLM2).
    """
    if kind == "local":
        from alto.operators.llm.local import LocalLLM

        llm: LLM = LocalLLM(model) if model else LocalLLM()
        label = "local SmolLM2-135M (llama.cpp, CPU)" if not model else f"local {model}"
        async with llm:
            yield llm, label
    elif kind == "openai":
        from alto.operators.llm.openai import OpenAIClient

        if not url:
            msg = "--llm openai needs --llm-url, e.g. http://127.0.0.1:8000/v1"
            raise ValueError(msg)
        async with OpenAIClient(url, model or "default") as client:
            yield client, f"OpenAI-compatible server at {url}"
    elif kind == "llama-server-native":
        from alto.bench.llama_native import NativeLlamaServer
        from alto.operators.llm.openai import OpenAIClient

        async with NativeLlamaServer(slots=slots, threads=threads, model_path=model) as server:
            # the client's limit per replica is the server's slot count (from /props)
            async with OpenAIClient(
                server.base_url, server.alias, api_key_env=None, max_concurrency=slots
            ) as client:
                what = "SmolLM2-135M" if not model else model
                yield client, (f"llama.cpp's llama-server on loopback ({what}, {slots} slots, "
                               f"{threads} threads)")
    elif kind == "emulated":
        from alto.bench.emulator import EmulatorServer
        from alto.operators.llm.openai import OpenAIClient

        # its own process, so the emulated clock is not slowed by the pipeline's CPU work
        async with EmulatorServer(mode="process") as server:
            async with OpenAIClient(server.base_url, "emulated") as client:
                yield client, "serving-timing emulator (timing emulation, not a model)"
    elif kind == "fake":
        from alto.testing import FakeLLM

        yield FakeLLM(), "scripted fake LLM (tests)"
    else:
        msg = (
            f"unknown LLM kind {kind!r}; expected local, openai, llama-server-native, emulated "
            "or fake"
        )
        raise ValueError(msg)


@contextlib.asynccontextmanager
async def open_operators(
    needs: Iterable[Need],
    *,
    llm: LLMKind = "local",
    llm_url: str | None = None,
    llm_model: str | None = None,
    llm_slots: int = 4,
    llm_threads: int = 2,
    embedder: EmbedderKind = "minilm",
    console: Console | None = None,
) -> AsyncIterator[Operators]:
    """Open what an app needs; everything opened is closed on exit.

    ``console`` shows what takes time: loading models, embedding the corpus on a first run.
    ``llm_slots`` and ``llm_threads`` are for ``llm="llama-server-native"`` (see
    :func:`open_llm`).
    """
    needs = set(needs)
    ops = Operators()
    console = console or Console(enabled=False)
    async with contextlib.AsyncExitStack() as stack:
        if "embedder" in needs or "retriever" in needs:
            label = "all-MiniLM-L6-v2" if embedder == "minilm" else "hashing"
            with console.step(f"loading the embedder ({label})"):
                ops.embedder = make_embedder(embedder)
            ops.labels["embedder"] = label
        if "retriever" in needs:
            ops.retriever = await passage_retriever(ops.embedder, console=console)
            ops.labels["retriever"] = "faiss flat inner product over the shipped passages"
        if "llm" in needs:
            with console.step(f"starting the LLM ({llm})"):
                ops.llm, ops.labels["llm"] = await stack.enter_async_context(
                    open_llm(llm, url=llm_url, model=llm_model, slots=llm_slots,
                             threads=llm_threads)
                )
        yield ops


def parse_each(records: Iterable[Any], parse: Any) -> list[Any]:
    """``parse`` applied to every record; a bad one raises ``ValueError`` naming its index."""
    out = []
    for i, record in enumerate(records):
        try:
            out.append(parse(record))
        except (ValueError, TypeError) as exc:
            msg = f"input {i}: {exc}"
            raise ValueError(msg) from exc
    return out


async def fake_operators(*, passages: int | None = 400) -> Operators:
    """Operators for tests: the scripted fake LLM, the hashing embedder, a small retriever."""
    from alto.operators.embedding import HashEmbedder
    from alto.testing import FakeLLM

    embedder = HashEmbedder()
    from alto.operators.retriever import Retriever
    from examples import data

    chosen = data.passages()[:passages]
    retriever = await Retriever.build(
        [p.text for p in chosen], embedder, ids=[p.id for p in chosen]
    )
    return Operators(FakeLLM(), embedder, retriever, {"llm": "fake", "embedder": "hashing"})
