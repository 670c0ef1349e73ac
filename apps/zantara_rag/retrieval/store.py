"""The vector store: one Chroma collection, embedded on disk or on a Chroma server (`CHROMA_URL`).

Vectors are computed by our `Embedder` and passed in, so Chroma never loads a model of its own. The
collection records which embedding model built it; opening it with another model is refused, because
comparing vectors from two models returns confident garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import EmbeddingModelMismatch
from ..settings import Settings

MODEL_KEY = "embedding_model"


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
        return bool((self._collection.metadata or {}).get(name))

    def set_flag(self, name: str, value: bool) -> None:
        metadata = {k: v for k, v in (self._collection.metadata or {}).items() if k != name}
        if value:
            metadata[name] = True
        self._collection.modify(metadata=metadata)

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
            # Cosine distance is 1 - cos_sim, in [0, 2]; clamp the similarity to [0, 1] for the contract.
            hits.append(Hit(id_, text or "", dict(meta or {}), max(0.0, min(1.0, 1.0 - float(dist)))))
        return hits

    async def aquery(self, vector: Sequence[float], k: int) -> list[Hit]:
        return await asyncio.to_thread(self.query, vector, k)

    def chunks_of(self, doc: str) -> dict[str, str]:
        """Existing chunk ids of one document mapped to their content hashes."""
        got = self._collection.get(where={"doc": doc}, include=["metadatas"])
        return {
            i: str((m or {}).get("content_hash", ""))
            for i, m in zip(got["ids"], got["metadatas"], strict=True)
        }

    def documents(self) -> set[str]:
        got = self._collection.get(include=["metadatas"])
        return {str((m or {}).get("doc")) for m in got["metadatas"]}

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
