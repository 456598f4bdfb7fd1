"""Dense passage retrieval over faiss, with an optional late-interaction rerank.

A :class:`Retriever` holds a faiss index of unit-norm passage embeddings (exact inner product
by default, HNSW on request) and a passage store (ids, texts, JSON metadata). Queries are
embedded in one batch and searched in one faiss call, so an Alto ``batch=`` stage can send
queries of many fragments at once::

    from alto.operators.embedding import Embedder
    from alto.operators.retriever import Hit, Retriever

    retriever = await Retriever.build(texts, Embedder(), ids=ids)

    @alto.stage(batch=16)
    async def retrieve(questions: list[str]) -> list[list[Hit]]:
        return await retriever.search(questions, k=5)

``save(directory)`` writes ``index.faiss`` (faiss' own binary format), ``passages.jsonl`` and
``config.json``; ``load(directory, embedder)`` reads them back. Nothing is pickled.

Laws: ``search`` returns, per query, at most ``k`` hits with distinct ids, scores
non-increasing and ranks ``1..n``; with the flat index the scores are the exact inner products
(cosine similarities) and ``add(a); add(b)`` gives the same results as ``build(a + b)``;
``load(save(r))`` gives the same results as ``r``.

faiss is imported when the first index is created, not when this module is imported.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio.to_thread
import numpy as np

from alto.errors import MissingDependency, MissingFile, UsageError, UsageTypeError
from alto.operators._model_spans import model_call
from alto.operators.embedding import TextEmbedder, check_strings, describe_embedder

if TYPE_CHECKING:
    import faiss

__all__ = ["INDEX_KINDS", "Hit", "Retriever", "maxsim"]

IndexKind = Literal["flat", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw")
"""Index kinds: ``flat`` (exact inner product) and ``hnsw`` (approximate, graph-based)."""

FORMAT = "alto-retriever"
FORMAT_VERSION = 1
_FILES = ("config.json", "passages.jsonl", "index.faiss")
# Above this many query x passage products a search leaves the event loop (about 1-2 ms of
# flat search at 384 dimensions on one core).
_OFFLOAD_PRODUCTS = 2_000_000
_PARALLEL_PRODUCTS = 16_000_000
"""Below this many query x passage products a search runs on its calling thread alone.

faiss spreads every search over all cores with OpenMP. For a small search the team's start
and barrier cost more than the search, and far more when another process holds a core: on a
2-core machine with the other core busy, 30 queries against 60 passages of 384 dimensions
took 10 ms on two threads and 0.05 ms on one; 64 against 1,000, 11 ms and 1.4 ms. A search
already runs beside others (in worker threads, or between other work on the event loop), so
across calls is where parallelism pays; above this size (about 10 ms on one core) the
parallel search does."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved passage.

    Attributes:
        id: the passage id given when it was added.
        text: the passage text.
        score: inner product of query and passage embeddings (cosine similarity for unit
            vectors); after :meth:`Retriever.rerank`, the MaxSim score.
        rank: position in the result list, 1 for the best hit.
    """

    id: str
    text: str
    score: float
    rank: int


def maxsim(query_tokens: np.ndarray, passage_tokens: np.ndarray) -> float:
    """Late-interaction score: for each query token, its best match in the passage, summed.

    Args:
        query_tokens: ``(q, dim)`` unit-norm token embeddings of the query.
        passage_tokens: ``(p, dim)`` unit-norm token embeddings of the passage.

    Returns:
        ``sum_i max_j <q_i, p_j>``; 0.0 when either side has no tokens.
    """
    if len(query_tokens) == 0 or len(passage_tokens) == 0:
        return 0.0
    return float((query_tokens @ passage_tokens.T).max(axis=1).sum())


def _import_faiss() -> Any:
    try:
        import faiss
    except ModuleNotFoundError as exc:
        msg = "the retriever needs faiss: pip install faiss-cpu (or 'alto[models]')"
        raise MissingDependency(msg) from exc
    return faiss


@contextmanager
def _threads_for(faiss: Any, products: int) -> Iterator[None]:
    """One OpenMP thread for a search of fewer than :data:`_PARALLEL_PRODUCTS` products.

    OpenMP keeps the thread count per calling thread, so this sets and restores this
    thread's own; searches in other threads keep theirs.
    """
    if products >= _PARALLEL_PRODUCTS:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class Retriever:
    """Dense retriever: a faiss index plus the passages it points to.

    Not safe for concurrent mutation from several threads; concurrent searches, and searches
    interleaved with ``add`` on one event loop, are fine (index access is locked).

    Args:
        embedder: embeds passages and queries (:class:`~alto.operators.embedding.Embedder`,
            or anything with the same ``dim``/``embed``/``token_embeddings``).
        index: ``"flat"`` (exact inner product, the default) or ``"hnsw"``.
        hnsw_m: HNSW graph degree (links per vector).
        ef_construction: HNSW candidate list size while inserting.
        ef_search: HNSW candidate list size while searching (raised to ``k`` when smaller).

    Raises:
        UsageError: on an unknown index kind or a non-positive parameter.
    """

    def __init__(
        self,
        embedder: TextEmbedder,
        *,
        index: IndexKind | str = "flat",
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
    ) -> None:
        if index not in INDEX_KINDS:
            msg = f"unknown index kind {index!r}; choose one of {list(INDEX_KINDS)}"
            raise UsageError(msg)
        for name, value in (
            ("hnsw_m", hnsw_m),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
        ):
            if value < 1:
                msg = f"{name} must be >= 1, got {value}"
                raise UsageError(msg)
        self._embedder = embedder
        self._dim = int(embedder.dim)
        self._kind = str(index)
        self._hnsw_m = hnsw_m
        self._ef_construction = ef_construction
        self._ef_search = ef_search
        self._lock = threading.Lock()
        self._index: faiss.Index = self._new_index()
        self._ids: list[str] = []
        self._texts: list[str] = []
        self._metadata: list[dict[str, Any] | None] = []
        self._positions: dict[str, int] = {}

    # ---------------------------------------------------------------- construction

    @classmethod
    async def build(
        cls,
        texts: Sequence[str],
        embedder: TextEmbedder,
        *,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        index: IndexKind | str = "flat",
        batch_size: int = 256,
        on_progress: Callable[[int, int], object] | None = None,
        **index_options: int,
    ) -> Retriever:
        """Embed ``texts`` and index them.

        Args:
            texts: passage texts.
            embedder: the embedder; queries must later be embedded by the same model.
            ids: one unique id per text; ``"0"``, ``"1"``, ... when None.
            metadata: one JSON-serializable mapping (or None) per text.
            index: ``"flat"`` or ``"hnsw"``.
            batch_size: texts per embed call (the event loop runs between calls).
            on_progress: called as ``on_progress(done, total)`` after each embed call.
            **index_options: ``hnsw_m``, ``ef_construction``, ``ef_search``.
        """
        retriever = cls(embedder, index=index, **index_options)
        await retriever.add(
            texts, ids=ids, metadata=metadata, batch_size=batch_size, on_progress=on_progress
        )
        return retriever

    @classmethod
    def build_sync(
        cls,
        texts: Sequence[str],
        embedder: TextEmbedder,
        *,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        index: IndexKind | str = "flat",
        **index_options: int,
    ) -> Retriever:
        """Blocking variant of :meth:`build`."""
        retriever = cls(embedder, index=index, **index_options)
        retriever.add_sync(texts, ids=ids, metadata=metadata)
        return retriever

    def _new_index(self) -> faiss.Index:
        lib = _import_faiss()  # faiss, returned as Any: the casts restore its index types
        if self._kind == "flat":
            return cast("faiss.Index", lib.IndexFlatIP(self._dim))
        hnsw = lib.IndexHNSWFlat(self._dim, self._hnsw_m, lib.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self._ef_construction
        hnsw.hnsw.efSearch = self._ef_search
        return cast("faiss.Index", hnsw)

    # ---------------------------------------------------------------- adding passages

    def _prepare(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None,
        metadata: Sequence[Mapping[str, Any] | None] | None,
    ) -> tuple[list[str], list[str], list[dict[str, Any] | None]]:
        items = check_strings(texts, "texts", "add")
        if ids is None:
            start = len(self._ids)
            new_ids = [str(start + i) for i in range(len(items))]
        else:
            new_ids = check_strings(ids, "ids", "add")
            if len(new_ids) != len(items):
                msg = f"got {len(items)} texts but {len(new_ids)} ids; pass one id per text"
                raise UsageError(msg)
        seen: set[str] = set()
        for pid in new_ids:
            if pid in self._positions:
                msg = f"id {pid!r} is already in the index; ids must be unique"
                raise UsageError(msg)
            if pid in seen:
                msg = f"id {pid!r} appears twice in this call; ids must be unique"
                raise UsageError(msg)
            seen.add(pid)
        if metadata is None:
            meta: list[dict[str, Any] | None] = [None] * len(items)
        else:
            meta = [None if m is None else dict(m) for m in metadata]
            if len(meta) != len(items):
                msg = f"got {len(items)} texts but {len(meta)} metadata entries; pass one per text"
                raise UsageError(msg)
            for pid, m in zip(new_ids, meta, strict=True):
                try:
                    json.dumps(m)
                except (TypeError, ValueError) as exc:
                    msg = (
                        f"metadata of {pid!r} is not JSON-serializable ({exc}); the store is "
                        "saved as JSON, so use str/int/float/bool/None, lists and dicts"
                    )
                    raise UsageError(msg) from exc
        return items, new_ids, meta

    async def add(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        batch_size: int = 256,
        on_progress: Callable[[int, int], object] | None = None,
    ) -> None:
        """Embed and append passages; all of them or, if embedding fails, none.

        Args:
            texts: passage texts.
            ids: one unique id per text (continuing ``"<n>"`` numbering when None).
            metadata: one JSON-serializable mapping (or None) per text.
            batch_size: texts per embed call.
            on_progress: called as ``on_progress(done, total)`` after each embed call.

        Raises:
            UsageTypeError: on non-str texts or ids.
            UsageError: on duplicate ids or mismatched lengths.
        """
        if batch_size < 1:
            msg = f"batch_size must be >= 1, got {batch_size}"
            raise UsageError(msg)
        items, new_ids, meta = self._prepare(texts, ids, metadata)
        parts = []
        for start in range(0, len(items), batch_size):
            parts.append(await self._embedder.embed(items[start : start + batch_size]))
            if on_progress is not None:
                on_progress(min(start + batch_size, len(items)), len(items))
        vectors = np.concatenate(parts) if parts else np.zeros((0, self._dim), np.float32)
        self._append(vectors, items, new_ids, meta)

    def add_sync(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Blocking variant of :meth:`add`."""
        items, new_ids, meta = self._prepare(texts, ids, metadata)
        self._append(self._embedder.embed_sync(items), items, new_ids, meta)

    def add_vectors(
        self,
        vectors: np.ndarray,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Append passages whose embeddings were computed elsewhere (e.g. an embed stage).

        Args:
            vectors: ``(len(texts), dim)`` unit-norm embeddings from the same model as queries.
            texts: passage texts.
            ids: one unique id per text.
            metadata: one JSON-serializable mapping (or None) per text.

        Raises:
            UsageError: on a shape that does not match ``(len(texts), dim)`` or non-finite values.
        """
        items, new_ids, meta = self._prepare(texts, ids, metadata)
        self._append(vectors, items, new_ids, meta)

    def _append(
        self,
        vectors: np.ndarray,
        texts: list[str],
        ids: list[str],
        metadata: list[dict[str, Any] | None],
    ) -> None:
        matrix = self._as_matrix(vectors, "passage vectors")
        if matrix.shape[0] != len(texts):
            msg = f"got {matrix.shape[0]} vectors for {len(texts)} texts; pass one vector per text"
            raise UsageError(msg)
        if not len(texts):
            return
        with self._lock:
            # Re-check under the lock: another add may have taken an id meanwhile.
            for pid in ids:
                if pid in self._positions:
                    msg = f"id {pid!r} is already in the index; ids must be unique"
                    raise UsageError(msg)
            start = len(self._ids)
            self._index.add(matrix)
            self._ids.extend(ids)
            self._texts.extend(texts)
            self._metadata.extend(metadata)
            self._positions.update((pid, start + i) for i, pid in enumerate(ids))

    def _as_matrix(self, vectors: np.ndarray, what: str) -> np.ndarray:
        matrix = np.asarray(vectors)
        if matrix.ndim != 2:
            hint = " (for one vector use v.reshape(1, -1))" if matrix.ndim == 1 else ""
            msg = f"{what} must be a 2-D array (n, {self._dim}), got shape {matrix.shape}{hint}"
            raise UsageError(msg)
        if matrix.shape[1] != self._dim:
            msg = (
                f"{what} have dimension {matrix.shape[1]} but the index holds "
                f"{self._dim}-dimensional vectors; embed them with the embedder the index was "
                f"built with ({describe_embedder(self._embedder)})"
            )
            raise UsageError(msg)
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if not np.isfinite(matrix).all():
            msg = f"{what} contain NaN or infinite values"
            raise UsageError(msg)
        return matrix

    # ---------------------------------------------------------------- searching

    def _check_k(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            msg = f"k must be a positive int, got {k!r}"
            raise UsageError(msg)
        if not self._ids:
            msg = (
                "the index is empty; add passages first with Retriever.build(texts, embedder), "
                "add(texts) or add_vectors(vectors, texts)"
            )
            raise UsageError(msg)

    def search_vectors(self, vectors: np.ndarray, k: int = 5) -> list[list[Hit]]:
        """Top-``k`` passages for each query vector, in one faiss call.

        Args:
            vectors: ``(n, dim)`` query embeddings, unit norm.
            k: hits per query; fewer come back when the index holds fewer passages.

        Returns:
            one list of hits per query row, best first.

        Raises:
            UsageError: if the index is empty, ``k`` is not a positive int, or the vectors have
                the wrong shape.
        """
        self._check_k(k)
        matrix = self._as_matrix(vectors, "query vectors")
        if not len(matrix):
            return []
        with self._lock:
            return self._search_locked(matrix, int(k))

    def _search_locked(self, matrix: np.ndarray, k: int) -> list[list[Hit]]:
        k = min(k, len(self._ids))
        faiss = _import_faiss()
        with _threads_for(faiss, len(matrix) * len(self._ids)):
            if self._kind == "hnsw":
                params = faiss.SearchParametersHNSW(efSearch=max(self._ef_search, k))
                scores, positions = self._index.search(matrix, k, params=params)
            else:
                scores, positions = self._index.search(matrix, k)
        results: list[list[Hit]] = []
        for row_scores, row_positions in zip(scores, positions, strict=True):
            hits: list[Hit] = []
            for score, pos in zip(row_scores, row_positions, strict=True):
                if pos < 0:
                    continue
                hits.append(Hit(self._ids[pos], self._texts[pos], float(score), len(hits) + 1))
            results.append(hits)
        return results

    async def search(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        """Embed the queries in one batch and return the top-``k`` passages of each.

        Args:
            queries: query texts (an empty list gives an empty list).
            k: hits per query.

        Returns:
            one list of hits per query, best first.

        Raises:
            UsageTypeError: if ``queries`` is a str or holds a non-str item.
            UsageError: if the index is empty or ``k`` is not a positive int.
        """
        items = check_strings(queries, "queries", "search")
        self._check_k(k)
        if not items:
            return []
        with model_call("retrieval", f"faiss-{self._kind}", "faiss") as call:
            call.set("alto.retrieval.queries", len(items))
            call.set("alto.retrieval.k", k)
            call.set("alto.retrieval.passages", len(self._ids))
            vectors = await self._embedder.embed(items)
            if len(items) * len(self._ids) > _OFFLOAD_PRODUCTS:
                return await anyio.to_thread.run_sync(self.search_vectors, vectors, k)
            return self.search_vectors(vectors, k)

    async def rerank(self, query: str, hits: Sequence[Hit], k: int | None = None) -> list[Hit]:
        """Reorder hits by late interaction (MaxSim over token embeddings).

        The query and the hit texts are embedded token by token in one call; each hit's new
        score is :func:`maxsim` and ties keep the original order.

        Args:
            query: the query text.
            hits: candidates, typically ``search([query], k=20)[0]``.
            k: keep the best ``k`` (all when None).

        Returns:
            new :class:`Hit` objects with MaxSim scores and ranks ``1..n``.

        Raises:
            UsageTypeError: if the embedder has no ``token_embeddings``.
            UsageError: if ``k`` is not a positive int.
        """
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            msg = f"k must be None or a positive int, got {k!r}"
            raise UsageError(msg)
        if not isinstance(query, str):
            msg = f"query must be a str, got {type(query).__name__}"
            raise UsageTypeError(msg)
        if not hits:
            return []
        token_embeddings = getattr(self._embedder, "token_embeddings", None)
        if token_embeddings is None:
            msg = (
                f"{type(self._embedder).__name__} has no token_embeddings(); rerank needs an "
                "embedder with per-token output such as Embedder"
            )
            raise UsageTypeError(msg)
        tokens = await token_embeddings([query, *(hit.text for hit in hits)])
        scores = [maxsim(tokens[0], passage) for passage in tokens[1:]]
        order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))
        if k is not None:
            order = order[:k]
        return [Hit(hits[i].id, hits[i].text, scores[i], rank) for rank, i in enumerate(order, 1)]

    # ---------------------------------------------------------------- pickling

    def __getstate__(self) -> dict[str, Any]:
        """The index (faiss's own serialization), the passage store and the embedder.

        A copy in another process (a Ray actor) searches the same passages.
        """
        faiss = _import_faiss()
        with self._lock:
            state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_index")}
            state["_index_bytes"] = faiss.serialize_index(self._index)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        faiss = _import_faiss()
        index_bytes = state.pop("_index_bytes")
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._index = faiss.deserialize_index(index_bytes)
        if self._kind == "hnsw":  # faiss hands back the HNSW subclass
            cast(Any, self._index).hnsw.efSearch = self._ef_search

    # ---------------------------------------------------------------- the passage store

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, pid: object) -> bool:
        return pid in self._positions

    def __repr__(self) -> str:
        return f"Retriever(index={self._kind!r}, passages={len(self)}, dim={self._dim})"

    @property
    def dim(self) -> int:
        """Vector dimension of the index."""
        return self._dim

    @property
    def index_kind(self) -> str:
        """``"flat"`` or ``"hnsw"``."""
        return self._kind

    @property
    def embedder(self) -> TextEmbedder:
        """The embedder used for passages and queries."""
        return self._embedder

    @property
    def ids(self) -> tuple[str, ...]:
        """Passage ids in insertion order."""
        return tuple(self._ids)

    def _position(self, pid: str) -> int:
        try:
            return self._positions[pid]
        except KeyError:
            msg = f"no passage with id {pid!r} in the index"
            raise KeyError(msg) from None

    def text(self, pid: str) -> str:
        """Text of the passage ``pid``; KeyError if there is none."""
        return self._texts[self._position(pid)]

    def metadata(self, pid: str) -> dict[str, Any] | None:
        """A copy of the metadata of passage ``pid`` (None if none was given)."""
        meta = self._metadata[self._position(pid)]
        return None if meta is None else dict(meta)

    # ---------------------------------------------------------------- persistence

    def _config(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "dim": self._dim,
            "index": self._kind,
            "hnsw_m": self._hnsw_m,
            "ef_construction": self._ef_construction,
            "ef_search": self._ef_search,
            "count": len(self._ids),
            "embedder": describe_embedder(self._embedder),
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index and the passage store into ``directory`` (created if needed).

        Files: ``index.faiss`` (faiss binary format), ``passages.jsonl`` (one
        ``{"id", "text", "metadata"}`` per line, in index order) and ``config.json``. Existing
        files of those names are replaced; each is written to a temporary name first.

        Returns:
            the directory as a Path.
        """
        faiss = _import_faiss()
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        with self._lock:
            config = self._config()
            index_tmp = path / "index.faiss.tmp"
            faiss.write_index(self._index, str(index_tmp))
            store_tmp = path / "passages.jsonl.tmp"
            with store_tmp.open("w", encoding="utf-8") as fh:
                for pid, text, meta in zip(self._ids, self._texts, self._metadata, strict=True):
                    record = {"id": pid, "text": text, "metadata": meta}
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        config_tmp = path / "config.json.tmp"
        config_tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        os.replace(index_tmp, path / "index.faiss")
        os.replace(store_tmp, path / "passages.jsonl")
        os.replace(config_tmp, path / "config.json")
        return path

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], embedder: TextEmbedder, *, check_model: bool = True
    ) -> Retriever:
        """Read a retriever written by :meth:`save`.

        Args:
            directory: the folder given to :meth:`save`.
            embedder: embeds future queries and passages; it must be the model that built the
                index.
            check_model: compare the embedder's class and model name with the ones recorded at
                save time (the dimension is always checked).

        Raises:
            MissingFile: if the folder or one of its files is missing.
            UsageError: if the files are not a retriever store, disagree with each other, or
                the embedder does not match.
        """
        path = Path(directory)
        if not path.is_dir():
            msg = (
                f"retriever directory {str(path)!r} does not exist; write one with "
                "Retriever.save(directory) first"
            )
            raise MissingFile(msg)
        missing = [name for name in _FILES if not (path / name).is_file()]
        if missing:
            msg = (
                f"retriever directory {str(path)!r} lacks {', '.join(missing)}; it must hold "
                f"{', '.join(_FILES)} as written by Retriever.save()"
            )
            raise MissingFile(msg)
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            msg = f"{str(path / 'config.json')!r} is not valid JSON: {exc}"
            raise UsageError(msg) from exc
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            msg = f"{str(path / 'config.json')!r} is not a saved Retriever config"
            raise UsageError(msg)
        if config.get("version") != FORMAT_VERSION:
            msg = (
                f"{str(path)!r} was saved in format version {config.get('version')}; this "
                f"version of alto reads version {FORMAT_VERSION}"
            )
            raise UsageError(msg)
        if int(embedder.dim) != config["dim"]:
            msg = (
                f"the index in {str(path)!r} holds {config['dim']}-dimensional vectors from "
                f"{config.get('embedder')}, but the embedder gives {embedder.dim}; load it with "
                "the embedder that built it"
            )
            raise UsageError(msg)
        recorded = config.get("embedder", {})
        current = describe_embedder(embedder)
        if check_model and (
            recorded.get("class") != current["class"]
            or recorded.get("model") != current.get("model")
        ):
            msg = (
                f"the index in {str(path)!r} was built with {recorded} but the embedder is "
                f"{current}; queries from another model do not match its vectors "
                "(pass check_model=False if the model is the same under another name)"
            )
            raise UsageError(msg)
        retriever = cls(
            embedder,
            index=config["index"],
            hnsw_m=config["hnsw_m"],
            ef_construction=config["ef_construction"],
            ef_search=config["ef_search"],
        )
        faiss = _import_faiss()
        index = faiss.read_index(str(path / "index.faiss"))
        ids: list[str] = []
        texts: list[str] = []
        metadata: list[dict[str, Any] | None] = []
        with (path / "passages.jsonl").open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                try:
                    record = json.loads(line)
                    ids.append(record["id"])
                    texts.append(record["text"])
                    metadata.append(record.get("metadata"))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    msg = (
                        f"{str(path / 'passages.jsonl')!r} line {line_no} is not a passage "
                        f"record {{id, text, metadata}}: {exc}"
                    )
                    raise UsageError(msg) from exc
        if not (index.ntotal == len(ids) == config["count"]) or index.d != config["dim"]:
            msg = (
                f"{str(path)!r} is inconsistent: index.faiss holds {index.ntotal} vectors of "
                f"dimension {index.d}, passages.jsonl {len(ids)} passages, config.json says "
                f"{config['count']} of dimension {config['dim']}; save it again"
            )
            raise UsageError(msg)
        if len(set(ids)) != len(ids):
            msg = f"{str(path / 'passages.jsonl')!r} repeats passage ids"
            raise UsageError(msg)
        retriever._index = index
        retriever._ids = ids
        retriever._texts = texts
        retriever._metadata = metadata
        retriever._positions = {pid: i for i, pid in enumerate(ids)}
        return retriever
