"""The vector store: one Chroma collection, embedded on disk or on a Chroma server (`CHROMA_URL`).

Vectors are computed by our `Embedder` and passed in, so Chroma never loads a model of its own. The
collection records which embedding model built it; opening it with another model is refused, because
comparing vectors from two models returns confident garbage.

The collection's metadata also carries the index format (`INDEX_FORMAT`: what a chunk's text and metadata
hold) and a version marker that every change of its chunks moves (`bump_version`). The lexical index is
rebuilt from the collection when the marker moves (retrieval/mirror.py), so a machine that did not write the
change (a second Fly machine, another process in server mode) follows it by reading one small record.
Every write path (the admin API, `zantara-rag ingest`, the folder watcher, the first-start ingestion)
moves that marker after writing, and `retrieval.changes` tells this process's copies (the lexical index).
A chunk marked `superseded` belongs to an older version of its document and is being removed: queries and
the lexical index leave it out (`knowledge.ingest` explains the swap).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import EmbeddingModelMismatch
from ..settings import Settings

MODEL_KEY = "embedding_model"
FORMAT_KEY = "index_format"
VERSION_KEY = "index_version"
SUPERSEDED = "superseded"
# 1: the chunk text alone (before issue #12); 2: the title in the other language is a second heading line,
# and the bilingual keywords are metadata. Stores of format 1 are upgraded or refused (services.py).
INDEX_FORMAT = 2
PAGE = 5000


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

    def __init__(self, client: Any, collection: str, model_name: str, passage_prefix: str = "") -> None:
        self._client = client
        # Chroma embedded in this process (a query costs CPU here), not a server reached over the network.
        self.local = str(client.get_settings().chroma_api_impl).endswith("RustBindingsAPI")
        self.name = collection
        # A passage marker changes every vector: it is part of what the collection records.
        model_name = f"{model_name} (passage prefix {passage_prefix!r})" if passage_prefix else model_name
        self.model_name = model_name
        self._collection = client.get_or_create_collection(
            name=collection,
            embedding_function=None,
            metadata={MODEL_KEY: model_name, FORMAT_KEY: INDEX_FORMAT},
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
    def reset(cls, client: Any, collection: str, model_name: str, passage_prefix: str = "") -> VectorStore:
        """Drop the collection and create it afresh for `model_name`."""
        # Absent is fine; Chroma raises various types for it.
        with contextlib.suppress(Exception):
            client.delete_collection(collection)
        return cls(client, collection, model_name, passage_prefix)

    @classmethod
    def open(cls, settings: Settings, reset: bool = False) -> VectorStore:
        """The configured collection (created if absent), for the configured model and passage marker."""
        from .embedder import prefixes

        passage = prefixes(settings.embedding_model, None, settings.embedding_passage_prefix)[1]
        opener = cls.reset if reset else cls
        return opener(connect(settings), settings.chroma_collection, settings.embedding_model, passage)

    def count(self) -> int:
        return int(self._collection.count())

    def metadata(self) -> dict[str, Any]:
        """The collection's metadata as the store has it now (another process may have changed it)."""
        fresh = self._client.get_collection(self.name, embedding_function=None)
        return dict(fresh.metadata or {})

    def flag(self, name: str) -> bool:
        """A boolean recorded on the collection (as its metadata), so every machine and restart sees it."""
        return bool(self.metadata().get(name))

    def set_flag(self, name: str, value: bool) -> None:
        self._set_metadata({name: True if value else None})

    @property
    def index_format(self) -> int:
        """The format the chunks were written in (`INDEX_FORMAT`); 1 for a store older than the record."""
        value = self.metadata().get(FORMAT_KEY)
        return int(value) if isinstance(value, int) else 1

    def set_index_format(self, value: int = INDEX_FORMAT) -> None:
        self._set_metadata({FORMAT_KEY: value})

    def version(self) -> str:
        """The marker that moves whenever chunks are added, changed or removed (one small read)."""
        return str(self.metadata().get(VERSION_KEY) or "")

    def bump_version(self) -> str:
        """Record that the chunks changed; every machine's lexical index follows (retrieval/mirror.py)."""
        marker = uuid.uuid4().hex
        self._set_metadata({VERSION_KEY: marker})
        return marker

    def _set_metadata(self, changes: dict[str, Any]) -> None:
        # Read fresh and write the whole record: a stale copy would undo another machine's marker.
        metadata = {k: v for k, v in self.metadata().items() if k not in changes}
        metadata.update({k: v for k, v in changes.items() if v is not None})
        self._collection.modify(metadata=metadata)

    def max_batch(self) -> int:
        """The most records one write may carry (one write is one atomic step: `knowledge.ingest`)."""
        return int(self._client.get_max_batch_size())

    def all_chunks(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every current chunk's id, text and metadata, sorted by id (a deterministic order on every machine);
        chunks of a document's older version, being removed (`superseded`), are left out."""
        out: list[tuple[str, str, dict[str, Any]]] = []
        offset = 0
        while True:
            got = self._collection.get(include=["documents", "metadatas"], limit=PAGE, offset=offset)
            for id_, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                if not (meta or {}).get(SUPERSEDED):
                    out.append((id_, text or "", dict(meta or {})))
            if len(got["ids"]) < PAGE:
                break
            offset += PAGE
        out.sort(key=lambda c: c[0])
        return out

    def query(self, vector: Sequence[float], k: int) -> list[Hit]:
        return self.query_many([vector], k)[0]

    def query_many(self, vectors: Sequence[Sequence[float]], k: int, texts: bool = True) -> list[list[Hit]]:
        """The `k` nearest chunks of each vector, in one request.

        Without `texts`, only ids and similarities (a third of the time at 10k chunks: the caller has the
        texts, in the lexical index).
        """
        result = self._collection.query(
            query_embeddings=[list(v) for v in vectors],
            n_results=k,
            include=["distances", "documents", "metadatas"] if texts else ["distances"],
        )
        out = []
        for row, ids in enumerate(result["ids"]):
            hits = []
            documents = result["documents"][row] if texts else [""] * len(ids)
            metadatas = result["metadatas"][row] if texts else [{}] * len(ids)
            for id_, text, meta, dist in zip(
                ids, documents, metadatas, result["distances"][row], strict=True
            ):
                if meta and meta.get(SUPERSEDED):
                    continue
                # Cosine distance is 1 - cos_sim, in [0, 2]; clamp the similarity to [0, 1] for the contract.
                hits.append(Hit(id_, text or "", dict(meta or {}), max(0.0, min(1.0, 1.0 - float(dist)))))
            out.append(hits)
        return out

    async def aquery(self, vector: Sequence[float], k: int) -> list[Hit]:
        return await asyncio.to_thread(self.query, vector, k)

    async def aquery_many(
        self, vectors: Sequence[Sequence[float]], k: int, texts: bool = True
    ) -> list[list[Hit]]:
        return await asyncio.to_thread(self.query_many, vectors, k, texts)

    def hits(self, ids: Sequence[str], vectors: Sequence[Sequence[float]]) -> dict[str, Hit]:
        """The chunks `ids`, each with its cosine similarity to the nearest of `vectors` (unit vectors)."""
        import numpy as np

        got = self._collection.get(ids=list(ids), include=["documents", "metadatas", "embeddings"])
        if not got["ids"]:
            return {}
        chunks = np.asarray(got["embeddings"], dtype=np.float32)
        queries = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(chunks, axis=1, keepdims=True)
        best = ((chunks / np.maximum(norms, 1e-12)) @ queries.T).max(axis=1)
        columns = (got["ids"], got["documents"], got["metadatas"], best)
        return {
            i: Hit(i, text or "", dict(meta or {}), max(0.0, min(1.0, float(sim))))
            for i, text, meta, sim in zip(*columns, strict=True)
        }

    async def ahits(self, ids: Sequence[str], vectors: Sequence[Sequence[float]]) -> dict[str, Hit]:
        return await asyncio.to_thread(self.hits, ids, vectors)

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
