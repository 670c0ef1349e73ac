"""The vector store: one Chroma collection, embedded on disk or on a Chroma server (`CHROMA_URL`).

Vectors are computed by our `Embedder` and passed in, so Chroma never loads a model of its own. The
collection records which embedding model built it; opening it with another model is refused, because
comparing vectors from two models returns confident garbage.

The collection's metadata also carries the knowledge base's change marker (`kb_version`): every write path
(the admin API, `zantara-rag ingest`, the folder watcher, the first-start ingestion) sets it to a new random
token after writing, so any process that reads it (`version`) can tell that the content changed
(`retrieval.changes`). A chunk marked `superseded` belongs to an older version of its document and is
being removed: queries never return it (`knowledge.ingest` explains the swap).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import EmbeddingModelMismatch
from ..settings import Settings

MODEL_KEY = "embedding_model"
VERSION_KEY = "kb_version"
SUPERSEDED = "superseded"


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    text: str
    metadata: dict[str, Any]
    similarity: float


def connect(settings: Settings) -> Any:
    """A Chroma client for the configured mode. Telemetry off: the service must work offline."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url is not None:
        url = urlsplit(str(settings.chroma_url))
        return chromadb.HttpClient(
            host=url.hostname or "127.0.0.1",
            port=url.port or (443 if url.scheme == "https" else 8000),
            ssl=url.scheme == "https",
            settings=chroma_settings,
        )
    settings.chroma_path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(settings.chroma_path), settings=chroma_settings)


class VectorStore:
    """The knowledge base collection, checked against the embedding model on open."""

    def __init__(self, client: Any, collection: str, model_name: str) -> None:
        self._client = client
        self.name = collection
        self.model_name = model_name
        self._collection = client.get_or_create_collection(
            name=collection,
            embedding_function=None,
            metadata={MODEL_KEY: model_name},
            configuration={"hnsw": {"space": "cosine"}},
        )
        built_with = (self._collection.metadata or {}).get(MODEL_KEY)
        if built_with != model_name:
            raise EmbeddingModelMismatch(
                f"The collection {collection!r} was built with the embedding model {built_with!r}, "
                f"but EMBEDDING_MODEL is {model_name!r}. Re-index it with "
                f"`zantara-rag ingest --reset` (or set EMBEDDING_MODEL={built_with})."
            )

    @classmethod
    def reset(cls, client: Any, collection: str, model_name: str) -> VectorStore:
        """Drop the collection and create it afresh for `model_name`."""
        # Absent is fine; Chroma raises various types for it.
        with contextlib.suppress(Exception):
            client.delete_collection(collection)
        return cls(client, collection, model_name)

    def count(self) -> int:
        return int(self._collection.count())

    def flag(self, name: str) -> bool:
        """A boolean recorded on the collection (as its metadata), so every machine and restart sees it."""
        return bool(self._metadata().get(name))

    def set_flag(self, name: str, value: bool) -> None:
        metadata = {k: v for k, v in self._metadata().items() if k != name}
        if value:
            metadata[name] = True
        self._collection.modify(metadata=metadata)

    def _metadata(self) -> dict[str, Any]:
        """The collection's metadata as stored now: another process (a Chroma server's other clients) may
        have changed it since this one opened the collection. `modify` replaces it whole."""
        fresh = self._client.get_collection(self.name, embedding_function=None)
        return dict(fresh.metadata or {})

    def version(self) -> str:
        """The change marker: a token that every write path replaces (empty before the first)."""
        return str(self._metadata().get(VERSION_KEY) or "")

    def mark_changed(self) -> str:
        """Record that the content changed, after the write; returns the new token."""
        token = f"{time.time_ns():x}-{secrets.token_hex(4)}"
        metadata = self._metadata()
        metadata[VERSION_KEY] = token
        self._collection.modify(metadata=metadata)
        return token

    def max_batch(self) -> int:
        """The most records one write may carry (one write is one atomic step: `knowledge.ingest`)."""
        return int(self._client.get_max_batch_size())

    def query(self, vector: Sequence[float], k: int) -> list[Hit]:
        result = self._collection.query(
            query_embeddings=[list(vector)], n_results=k, include=["distances", "documents", "metadatas"]
        )
        hits = []
        for id_, text, meta, dist in zip(
            result["ids"][0],
            result["documents"][0],
            result["metadatas"][0],
            result["distances"][0],
            strict=True,
        ):
            if meta and meta.get(SUPERSEDED):
                continue
            # Cosine distance is 1 - cos_sim, in [0, 2]; clamp the similarity to [0, 1] for the contract.
            hits.append(Hit(id_, text or "", dict(meta or {}), max(0.0, min(1.0, 1.0 - float(dist)))))
        return hits

    async def aquery(self, vector: Sequence[float], k: int) -> list[Hit]:
        return await asyncio.to_thread(self.query, vector, k)

    def chunks_of(self, doc: str) -> dict[str, str]:
        """Existing chunk ids of one document mapped to their content hashes ("" for a superseded chunk,
        which must be written again to count)."""
        got = self._collection.get(where={"doc": doc}, include=["metadatas"])
        return {
            i: "" if (m or {}).get(SUPERSEDED) else str((m or {}).get("content_hash", ""))
            for i, m in zip(got["ids"], got["metadatas"], strict=True)
        }

    def metadatas_of(self, doc: str) -> list[dict[str, Any]]:
        got = self._collection.get(where={"doc": doc}, include=["metadatas"])
        return [dict(m or {}) for m in got["metadatas"]]

    def documents(self) -> set[str]:
        got = self._collection.get(include=["metadatas"])
        return {str((m or {}).get("doc")) for m in got["metadatas"]}

    def all_metadatas(self) -> list[dict[str, Any]]:
        """Every chunk's metadata (superseded ones left out): what the document list is made of."""
        got = self._collection.get(include=["metadatas"])
        return [dict(m or {}) for m in got["metadatas"] if not (m or {}).get(SUPERSEDED)]

    def records(self, ids: list[str]) -> dict[str, tuple[list[float], str, dict[str, Any]]]:
        """The stored vector, text and metadata of each of `ids` that exists."""
        if not ids:
            return {}
        got = self._collection.get(ids=ids, include=["embeddings", "documents", "metadatas"])
        return {
            i: ([float(x) for x in v], d or "", dict(m or {}))
            for i, v, d, m in zip(
                got["ids"], got["embeddings"], got["documents"], got["metadatas"], strict=True
            )
        }

    def superseded_ids(self) -> list[str]:
        """Chunks of older versions whose removal did not complete (`knowledge.ingest`)."""
        return list(self._collection.get(where={SUPERSEDED: True}, include=[])["ids"])

    def upsert(
        self,
        ids: list[str],
        vectors: list[list[float]],
        texts: list[str],
        metadatas: list[dict[str, Any]],
    ) -> None:
        if ids:
            self._collection.upsert(ids=ids, embeddings=vectors, documents=texts, metadatas=metadatas)

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self._collection.delete(ids=ids)
