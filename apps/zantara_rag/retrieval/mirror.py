"""`LexicalMirror`: the lexical index of the collection, rebuilt whenever the collection changes.

The collection's metadata carries a version marker that ingestion moves after every change
(`VectorStore.bump_version`). The mirror remembers the marker its index was built from; `refresh` reads the
marker (one small request), and only when it moved (or the chunk count no longer matches, for a writer that
did not move it) reads every chunk and builds a new index, which then replaces the old one in one assignment,
so a question in flight keeps the index it started with. The knowledge base's change signal
(`retrieval.changes`) calls `refresh` after every write of this process and, in server mode, when another
machine's write moved the marker (polled every `KNOWLEDGE_POLL_SECONDS`). docs/retrieval.md, "Keeping the
lexical index in step".
"""

from __future__ import annotations

import logging
import threading
import time

from .lexical import Chunk, LexicalIndex
from .store import VectorStore

log = logging.getLogger(__name__)


class LexicalMirror:
    def __init__(self, store: VectorStore) -> None:
        self.store = store
        self.index = LexicalIndex([])
        self.built_at: float | None = None
        self._lock = threading.Lock()  # one rebuild at a time

    def refresh(self, force: bool = False) -> bool:
        """Rebuild the index if the collection changed since it was built; True if it was rebuilt."""
        with self._lock:
            version = self.store.version()
            current = self.built_at is not None and version == self.index.version
            if not force and current and self.store.count() == len(self.index):
                return False
            started = time.perf_counter()
            chunks = [Chunk(id_, text, meta) for id_, text, meta in self.store.all_chunks()]
            self.index = LexicalIndex(chunks, version)
            self.built_at = time.time()
            log.info(
                "lexical index built: %d chunks in %.2f s (collection version %s)",
                len(chunks),
                time.perf_counter() - started,
                version or "unset",
            )
            return True
