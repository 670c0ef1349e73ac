"""The ONNX embedding path gives the sentence-transformers vectors: retrieval results must not change."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from zantara_rag.retrieval._onnx import layout
from zantara_rag.retrieval.embedder import Embedder
from zantara_rag.settings import DEFAULT_EMBEDDING_MODEL

TEXTS = [
    "How long can I stay on a second home visa?",
    "PT PMA minimum paid-up capital",
    "Berapa denda overstay untuk WNA di Bali?",
    "Visa d'investisseur — Überweisung, 印度尼西亚 签证, ½ price.",
    "?",
    "The KITAS holder must report to the immigration office within 30 days of arrival. " * 30,
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="module")
def onnx_embedder(cache_dir: Path) -> Iterator[Embedder]:
    embedder = Embedder(DEFAULT_EMBEDDING_MODEL, backend="onnx", cache_dir=cache_dir)
    yield embedder
    embedder.close()


@pytest.fixture(scope="module")
def torch_embedder() -> Iterator[Embedder]:
    embedder = Embedder(DEFAULT_EMBEDDING_MODEL, backend="torch")
    yield embedder
    embedder.close()


def cosines(a: list[list[float]], b: list[list[float]]) -> np.ndarray:
    x, y = np.asarray(a), np.asarray(b)
    return np.sum(x * y, axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))


def test_the_default_model_uses_onnx_and_the_torch_backend_stays_available(
    onnx_embedder: Embedder, torch_embedder: Embedder
) -> None:
    assert (onnx_embedder.backend, torch_embedder.backend) == ("onnx", "torch")
    assert onnx_embedder.dimension == torch_embedder.dimension == 384


def test_onnx_embeddings_equal_torch_embeddings_within_1e_4_cosine(
    onnx_embedder: Embedder, torch_embedder: Embedder
) -> None:
    batched = cosines(onnx_embedder.embed(TEXTS), torch_embedder.embed(TEXTS))
    one_by_one = cosines([onnx_embedder.embed([t])[0] for t in TEXTS], torch_embedder.embed(TEXTS))
    assert batched.min() >= 1 - 1e-4, batched
    assert one_by_one.min() >= 1 - 1e-4, one_by_one


def test_onnx_embeddings_are_unit_vectors(onnx_embedder: Embedder) -> None:
    norms = np.linalg.norm(np.asarray(onnx_embedder.embed(TEXTS)), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


async def test_embed_query_is_the_single_text_embedding(onnx_embedder: Embedder) -> None:
    vector = await onnx_embedder.embed_query(TEXTS[0])
    assert cosines([vector], onnx_embedder.embed([TEXTS[0]]))[0] >= 1 - 1e-6


async def test_a_question_and_its_gloss_use_two_threads_only_when_no_other_question_waits(
    onnx_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    splits: list[bool] = []
    encode = onnx_embedder._impl.encode

    def recording(texts: list[str], batch_size: int, split: bool = True) -> np.ndarray:
        splits.append(split)
        return encode(texts, batch_size, split)

    monkeypatch.setattr(onnx_embedder._impl, "encode", recording)
    alone = await onnx_embedder.embed_queries(TEXTS[:2])
    # Three questions at once: the first finds the worker idle, the two behind it are one run each.
    together = await asyncio.gather(*(onnx_embedder.submit_queries(TEXTS[:2]) for _ in range(3)))
    assert splits == [True, True, False, False]
    again = await onnx_embedder.embed_queries(TEXTS[:2])  # the count went back to zero
    assert splits[-1] is True
    # Split or not, the vectors are the same.
    for vectors in (*together, again):
        assert cosines(vectors, alone).min() >= 1 - 1e-6


async def test_a_cancelled_question_counts_until_its_embedding_really_ends(
    onnx_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    splits: list[bool] = []
    release = threading.Event()
    encode = onnx_embedder._impl.encode

    def slow(texts: list[str], batch_size: int, split: bool = True) -> np.ndarray:
        splits.append(split)
        release.wait(5)
        return encode(texts, batch_size, split)

    monkeypatch.setattr(onnx_embedder._impl, "encode", slow)
    first = onnx_embedder.submit_queries(TEXTS[:2])
    await asyncio.sleep(0.05)  # running on the worker thread
    first.cancel()  # the question gave up; its job still holds the worker
    await asyncio.sleep(0.01)  # every callback of the cancellation has run
    second = onnx_embedder.submit_queries(TEXTS[:2])
    release.set()
    await second
    assert splits == [True, False]
    for _ in range(100):  # the count goes back to zero once both jobs have ended
        if onnx_embedder._queries_waiting == 0:
            break
        await asyncio.sleep(0.01)
    assert onnx_embedder._queries_waiting == 0
    await onnx_embedder.embed_queries(TEXTS[:2])
    assert splits[-1] is True


def test_the_export_is_cached_and_reused(onnx_embedder: Embedder, cache_dir: Path) -> None:
    files = list((cache_dir / "onnx").glob("*.onnx"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    Embedder(DEFAULT_EMBEDDING_MODEL, backend="onnx", cache_dir=cache_dir).close()
    assert files[0].stat().st_mtime_ns == mtime
    assert not list((cache_dir / "onnx").glob("*.tmp"))


def test_an_unsupported_model_directory_has_no_onnx_layout(tmp_path: Path) -> None:
    assert layout(tmp_path) is None
    with pytest.raises(ValueError, match="supported layout"):
        Embedder(str(tmp_path), backend="onnx", cache_dir=tmp_path)


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown embedding backend"):
        Embedder(DEFAULT_EMBEDDING_MODEL, backend="tensorflow")
