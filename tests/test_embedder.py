"""The ONNX embedding path gives the sentence-transformers vectors: retrieval results must not change."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from zantara_rag.retrieval import _onnx
from zantara_rag.retrieval._onnx import QUANTIZED_TOLERANCE, layout
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


async def test_an_exact_query_is_the_single_text_embedding(onnx_embedder: Embedder) -> None:
    vector = await onnx_embedder.embed_query(TEXTS[0], exact=True)
    assert cosines([vector], onnx_embedder.embed([TEXTS[0]]))[0] >= 1 - 1e-6


async def test_a_question_and_its_gloss_are_one_job_each_embedded_as_if_alone(
    onnx_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[int] = []
    encode_queries = onnx_embedder._impl.encode_queries

    def recording(texts: list[str]) -> np.ndarray:
        runs.append(len(texts))
        return encode_queries(texts)

    monkeypatch.setattr(onnx_embedder._impl, "encode_queries", recording)
    vectors = await onnx_embedder.embed_queries(TEXTS[:2])
    assert runs == [2]
    # One run per text: the same vector as each alone (the 8-bit model scales each run by its own range).
    alone = [onnx_embedder.query_vectors([onnx_embedder.query_prefix + t])[0] for t in TEXTS[:2]]
    assert cosines(vectors, alone).min() >= 1 - 1e-6


def _follow_up(threads: list[str], times: list[float] | None = None) -> Callable[[list[list[float]]], int]:
    """A follow-up step that records the thread it ran on (and when) and returns the number of vectors."""

    def then(vectors: list[list[float]]) -> int:
        threads.append(threading.current_thread().name)
        if times is not None:
            times.append(time.perf_counter())
        return len(vectors)

    return then


async def test_the_follow_up_runs_on_the_worker_only_when_no_other_question_waits(
    onnx_embedder: Embedder,
) -> None:
    threads: list[str] = []
    started, ran = time.perf_counter(), []
    alone = await onnx_embedder.submit_queries(TEXTS[:2], _follow_up(threads, ran))
    assert alone.followed and alone.result == 2
    assert started < alone.ready <= ran[0]  # the vectors were ready before the follow-up ran
    assert threads and threads[0].startswith("embed")  # the worker thread, not the event loop's
    # Three at once: the first finds the worker free, the two behind it leave the step to the caller.
    together = await asyncio.gather(
        *(onnx_embedder.submit_queries(TEXTS[:2], _follow_up(threads)) for _ in range(3))
    )
    assert [e.followed for e in together] == [True, False, False]
    assert [e.result for e in together] == [2, None, None]
    assert len(threads) == 2
    again = await onnx_embedder.submit_queries(TEXTS[:2], _follow_up(threads))  # the count went back to zero
    assert again.followed
    # Followed or not, the vectors are the same.
    for embedded in (*together, again):
        assert cosines(embedded.vectors, alone.vectors).min() >= 1 - 1e-6


async def test_a_cancelled_question_counts_until_its_embedding_really_ends(
    onnx_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    encode_queries = onnx_embedder._impl.encode_queries

    def slow(texts: list[str]) -> np.ndarray:
        release.wait(5)
        return encode_queries(texts)

    monkeypatch.setattr(onnx_embedder._impl, "encode_queries", slow)
    threads: list[str] = []
    first = onnx_embedder.submit_queries(TEXTS[:2], _follow_up(threads))
    await asyncio.sleep(0.05)  # running on the worker thread
    first.cancel()  # the question gave up; its job still holds the worker
    await asyncio.sleep(0.01)  # every callback of the cancellation has run
    second = onnx_embedder.submit_queries(TEXTS[:2], _follow_up(threads))
    release.set()
    assert not (await second).followed  # the worker was still busy with the first question's job
    assert threads == []  # and the first one, given up, skipped its follow-up
    for _ in range(100):  # the count goes back to zero once both jobs have ended
        if onnx_embedder._queries_waiting == 0:
            break
        await asyncio.sleep(0.01)
    assert onnx_embedder._queries_waiting == 0
    assert (await onnx_embedder.submit_queries(TEXTS[:2], _follow_up(threads))).followed
    assert len(threads) == 1


def test_the_export_and_its_8_bit_questions_model_are_cached_and_reused(
    onnx_embedder: Embedder, cache_dir: Path
) -> None:
    files = sorted((cache_dir / "onnx").glob("*.onnx"))
    assert [f.name.endswith("-int8.onnx") for f in files] == [True, False]
    assert files[0].name == files[1].name.replace(".onnx", "-int8.onnx")
    # A quarter of the weights' bytes (the embedding table and the graph stay): what makes it fast.
    assert files[0].stat().st_size < files[1].stat().st_size * 0.4
    mtimes = [f.stat().st_mtime_ns for f in files]
    Embedder(DEFAULT_EMBEDDING_MODEL, backend="onnx", cache_dir=cache_dir).close()
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert not list((cache_dir / "onnx").glob("*.tmp"))


async def test_questions_run_on_the_8_bit_model_within_its_tolerance(onnx_embedder: Embedder) -> None:
    assert onnx_embedder.query_precision == "int8"
    quick = await onnx_embedder.embed_queries(TEXTS)
    exact = await onnx_embedder.embed_queries(TEXTS, exact=True)
    assert np.allclose(np.linalg.norm(np.asarray(quick), axis=1), 1.0, atol=1e-5)
    similarity = cosines(quick, exact)
    assert similarity.min() >= 1 - QUANTIZED_TOLERANCE, similarity
    assert similarity.max() < 1 - 1e-5  # really another model: not the full one under a new name
    # `exact` is the passages' model, one run: what ingestion stores for the same text.
    assert cosines(exact, onnx_embedder.embed(TEXTS)).min() >= 1 - 1e-6


async def test_query_precision_fp32_keeps_questions_on_the_full_model(cache_dir: Path) -> None:
    embedder = Embedder(DEFAULT_EMBEDDING_MODEL, backend="onnx", cache_dir=cache_dir, query_precision="fp32")
    try:
        assert embedder.query_precision == "fp32"
        vectors = await embedder.embed_queries(TEXTS[:3])
        assert cosines(vectors, embedder.embed(TEXTS[:3])).min() >= 1 - 1e-6
    finally:
        embedder.close()


def test_a_refused_quantization_leaves_questions_on_the_full_model(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A model whose 8-bit copy is too far from it: refused at the check, nothing half-written left behind,
    # the service still starts (full-precision questions) and says why.
    for exported in (cache_dir / "onnx").glob("*.onnx"):
        if not exported.name.endswith("-int8.onnx"):
            (tmp_path / "onnx").mkdir(exist_ok=True)
            shutil.copy(exported, tmp_path / "onnx" / exported.name)
    monkeypatch.setattr(_onnx, "QUANTIZED_TOLERANCE", 1e-6)
    with caplog.at_level(logging.INFO):
        embedder = Embedder(DEFAULT_EMBEDDING_MODEL, backend="onnx", cache_dir=tmp_path)
    try:
        assert embedder.query_precision == "fp32"
        assert [f.name.endswith("-int8.onnx") for f in (tmp_path / "onnx").iterdir()] == [False]
        assert "8-bit question embeddings unavailable (ExportRefused" in caplog.text
        # The quantizer's own sixty lines of tensor-by-tensor chatter stay out of the service's log.
        assert "quantizing the questions' embedding model" in caplog.text
        assert not [r for r in caplog.records if "onnxruntime" in r.pathname], caplog.text[:500]
        vectors = embedder.query_vectors(TEXTS[:2])
        assert cosines(vectors, embedder.embed(TEXTS[:2])).min() >= 1 - 1e-6
    finally:
        embedder.close()


def test_a_damaged_8_bit_file_leaves_questions_on_the_full_model_not_the_service_without_onnx(
    tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "onnx").mkdir()
    for exported in (cache_dir / "onnx").glob("*.onnx"):
        shutil.copy(exported, tmp_path / "onnx" / exported.name)
    (damaged,) = (tmp_path / "onnx").glob("*-int8.onnx")
    damaged.write_bytes(damaged.read_bytes()[: 1 << 20])  # cut short, as a full disk would leave it
    with caplog.at_level(logging.WARNING, logger="zantara_rag.retrieval.backends"):
        embedder = Embedder(DEFAULT_EMBEDDING_MODEL, backend="onnx", cache_dir=tmp_path)
    try:
        assert (embedder.backend, embedder.query_precision) == ("onnx", "fp32")
        assert "8-bit question embeddings unavailable" in caplog.text
        assert cosines(embedder.query_vectors(TEXTS[:2]), embedder.embed(TEXTS[:2])).min() >= 1 - 1e-6
    finally:
        embedder.close()


def test_an_unknown_query_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown query precision"):
        Embedder(DEFAULT_EMBEDDING_MODEL, query_precision="fp16")


def test_the_torch_backend_embeds_questions_at_full_precision(torch_embedder: Embedder) -> None:
    assert torch_embedder.query_precision == "fp32"
    assert cosines(torch_embedder.query_vectors(TEXTS[:2]), torch_embedder.embed(TEXTS[:2])).min() >= 1 - 1e-6


def test_an_unsupported_model_directory_has_no_onnx_layout(tmp_path: Path) -> None:
    assert layout(tmp_path) is None
    with pytest.raises(ValueError, match="supported layout"):
        Embedder(str(tmp_path), backend="onnx", cache_dir=tmp_path)


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown embedding backend"):
        Embedder(DEFAULT_EMBEDDING_MODEL, backend="tensorflow")
