"""The two ways the embedder runs its model: ONNX Runtime (`OnnxBackend`, with the 8-bit questions' copy) and
sentence-transformers (`TorchBackend`). `Embedder` (embedder.py) picks one and owns the threads around it."""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from . import _onnx

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zantara-rag"


class Backend(Protocol):
    dimension: int
    query_precision: str

    def encode(self, texts: list[str], batch_size: int, split: bool = True) -> Any: ...

    def encode_queries(self, texts: list[str]) -> Any: ...

    def close(self) -> None: ...


class TorchBackend:
    def __init__(self, path: str, device: str) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # transformers draws a "Loading weights" progress bar on stderr: not a log line, and not JSON.
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self._model = SentenceTransformer(path, device=device)
        self.dimension = int(self._model.get_embedding_dimension() or 0)
        self.query_precision = "fp32"

    def encode(self, texts: list[str], batch_size: int, split: bool = True) -> Any:
        return self._model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def encode_queries(self, texts: list[str]) -> Any:
        return self.encode(texts, len(texts), split=False)

    def close(self) -> None:
        pass


class OnnxBackend:
    def __init__(
        self,
        model_dir: Path,
        onnx_file: Path,
        max_seq_length: int,
        batch_threads: int = 0,
        query_file: Path | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        # One thread per run: a query is too small to split, and on a shared 2-core machine a second
        # spinning thread made single queries several times slower under load. Batches (ingestion) run
        # in parallel instead, one per core, on the same session (`run` is thread-safe).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        # Questions run on the 8-bit model when there is one (`_onnx.quantize`), passages on this one; a file
        # that does not load (damaged, another ONNX Runtime's) leaves questions on this one, not the service
        # without ONNX.
        self._query_session = self._session
        if query_file is not None:
            try:
                self._query_session = ort.InferenceSession(
                    str(query_file), options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:
                log.warning(
                    "8-bit question embeddings unavailable (%s loading %s); questions use the "
                    "full-precision model",
                    type(exc).__name__,
                    query_file.name,
                )
        self.query_precision = "fp32" if self._query_session is self._session else "int8"
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.dimension = int(self._session.get_outputs()[0].shape[-1])
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=max_seq_length)
        pad = _pad_token(model_dir)
        self._tokenizer.enable_padding(pad_id=self._tokenizer.token_to_id(pad) or 0, pad_token=pad)
        self._batch_threads = batch_threads or min(os.cpu_count() or 1, 4)
        self._pool: ThreadPoolExecutor | None = None

    def _run(self, texts: list[str], session: Any = None) -> Any:
        inputs = _onnx.feeds(self._tokenizer.encode_batch(texts), self._inputs)
        return (session or self._session).run(None, inputs)[0]

    def encode_queries(self, texts: list[str]) -> Any:
        import numpy as np

        if self._query_session is self._session:
            return self._run(texts)
        # One run per text on the 8-bit model: it scales each run's activations by that run's range, so a
        # text padded into a batch would get another vector than alone (0.99 cosine). The same question
        # gets the same vector whatever is asked with it; 0.4 ms more than one batch of two.
        return np.vstack([self._run([text], self._query_session) for text in texts])

    def encode(self, texts: list[str], batch_size: int, split: bool = True) -> Any:
        import numpy as np

        # Length-sorted batches waste the least on padding (as sentence-transformers does); several texts
        # are split into at least one batch per thread, so a document's few chunks use every core too.
        # Questions come through `encode_queries` (the 8-bit model), or here in one run (`split=False`)
        # when `exact`.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        threads = self._batch_threads if split else 1
        size = max(1, min(batch_size, -(-len(texts) // threads)))
        batches = [order[start : start + size] for start in range(0, len(texts), size)]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if len(batches) > 1 and self._batch_threads > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._batch_threads, thread_name_prefix="embed-batch")
            results = self._pool.map(lambda picked: self._run([texts[i] for i in picked]), batches)
        else:
            results = map(lambda picked: self._run([texts[i] for i in picked]), batches)
        for picked, vectors in zip(batches, results, strict=True):
            out[picked] = vectors
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _quantized(model_dir: Path, exported: Path, max_seq_length: int) -> Path | None:
    """The 8-bit questions' model beside the export (quantized once), or None when it cannot be made."""
    target = exported.with_name(f"{exported.stem}-int8.onnx")
    try:
        if not target.is_file():
            log.info("quantizing the questions' embedding model (once; cached at %s)", target)
            _onnx.quantize(exported, target, model_dir / "tokenizer.json", max_seq_length)
    except Exception as exc:
        log.warning(
            "8-bit question embeddings unavailable (%s: %s); questions use the full-precision model",
            type(exc).__name__,
            exc,
        )
        return None
    return target


def _pad_token(model_dir: Path) -> str:
    try:
        value = json.loads((model_dir / "special_tokens_map.json").read_text()).get("pad_token", "[PAD]")
    except (OSError, ValueError):
        return "[PAD]"
    return str(value.get("content", "[PAD]") if isinstance(value, dict) else value)


def onnx_backend(
    path: str, cache_dir: Path | None, required: bool, query_precision: str = "int8"
) -> OnnxBackend | None:
    """The ONNX backend, exporting the model first if needed; None (an error if required) when it cannot.
    With `query_precision` "int8", questions run on the 8-bit model (quantized once, cached beside the
    export), or on the full one with a warning when quantizing fails."""
    model_dir = Path(path)
    spec = _onnx.layout(model_dir) if model_dir.is_dir() else None
    if spec is None:
        if required:
            raise ValueError(
                f"EMBEDDING_BACKEND=onnx needs a local model directory of the supported layout: {path}"
            )
        return None
    target = (
        (cache_dir or default_cache_dir()) / "onnx" / f"{model_dir.name}-{_onnx.cache_key(model_dir)}.onnx"
    )
    try:
        if not target.is_file():
            log.info("exporting the embedding model to ONNX (once; cached at %s)", target)
            _onnx.export(model_dir, target)
        length = spec["max_seq_length"]
        query_file = _quantized(model_dir, target, length) if query_precision == "int8" else None
        return OnnxBackend(model_dir, target, length, query_file=query_file)
    except Exception as exc:
        if required:
            raise
        log.warning(
            "ONNX embedding backend unavailable (%s: %s); using sentence-transformers",
            type(exc).__name__,
            exc,
        )
        return None
