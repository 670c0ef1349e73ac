"""Retrieval: the question's vector, the nearest chunks, grouped into the numbered sources the model sees.

The grouping is what makes citations coherent: chunks are grouped by document in rank order and the first
`SOURCES_TOP_K` documents become sources `[1]`..`[n]`. The model sees exactly those passages and the
sources event lists exactly those documents, so `[n]` in the answer always points at `sources[n-1]`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .embedder import Embedder
from .errors import RetrievalUnavailable
from .events import Source
from .store import Hit, VectorStore

SNIPPET_CHARS = 240


@dataclass
class Passage:
    """One source document and its retrieved chunks, in rank order."""

    number: int
    title: str
    url: str | None
    section: str | None
    doc: str
    similarity: float
    chunks: list[str] = field(default_factory=list)

    def source(self) -> Source:
        return Source(
            source=self.title,
            snippet=snippet(self.chunks[0]),
            similarity=round(self.similarity, 4),
            url=self.url or None,
            section=self.section or None,
            id=self.doc,
        )


@dataclass
class Retrieval:
    passages: list[Passage]
    embed_ms: float
    search_ms: float


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The chunk body without its title line, cut at a word boundary to at most `limit` characters."""
    body = text.split("\n\n", 1)[1] if "\n\n" in text else text
    body = " ".join(body.split())
    if len(body) <= limit:
        return body
    cut = body.rfind(" ", 0, limit - 1)
    return body[: cut if cut > limit // 2 else limit - 1].rstrip(" ,;:") + "…"


def chunk_body(text: str) -> str:
    return text.split("\n\n", 1)[1] if "\n\n" in text else text


class Retriever:
    def __init__(
        self, embedder: Embedder, store: VectorStore, top_k: int, sources_k: int, min_similarity: float
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.top_k = top_k
        self.sources_k = sources_k
        self.min_similarity = min_similarity

    async def retrieve(self, query: str) -> Retrieval:
        try:
            t0 = time.perf_counter()
            vector = await self.embedder.embed_query(query)
            t1 = time.perf_counter()
            hits = await self.store.aquery(vector, self.top_k)
            t2 = time.perf_counter()
        except Exception as exc:
            # Store unreachable, embedder failure: never answer ungrounded. The cause is logged by the caller.
            raise RetrievalUnavailable() from exc
        return Retrieval(self.group(hits), (t1 - t0) * 1000, (t2 - t1) * 1000)

    def group(self, hits: list[Hit]) -> list[Passage]:
        by_doc: dict[str, Passage] = {}
        for hit in hits:
            if hit.similarity < self.min_similarity:
                continue
            doc = str(hit.metadata.get("doc") or hit.id)
            passage = by_doc.get(doc)
            if passage is None:
                if len(by_doc) >= self.sources_k:
                    continue
                passage = by_doc[doc] = Passage(
                    number=len(by_doc) + 1,
                    title=str(hit.metadata.get("title") or doc),
                    url=str(hit.metadata.get("url") or "") or None,
                    section=str(hit.metadata.get("section") or "") or None,
                    doc=doc,
                    similarity=hit.similarity,
                )
            passage.chunks.append(hit.text)
        return list(by_doc.values())
