"""Retrieval: the question's vector, the nearest chunks, grouped into the numbered sources the model sees.

The grouping is what makes citations coherent: chunks are grouped by document in rank order and the first
`SOURCES_TOP_K` documents become sources `[1]`..`[n]`. The model sees exactly those passages and the
sources event lists exactly those documents, so `[n]` in the answer always points at `sources[n-1]`.

Before grouping, the nearest `RERANK_CANDIDATES` chunks are re-ranked by cosine similarity plus a small
bonus for the question's words found in the chunk (`lexical_overlap`): all-MiniLM-L6-v2 is English-only and
blurs exact terms (E33G, KBLI, THR, pesangon...), and local Chroma has no keyword search to combine with.
The `similarity` of a source stays the cosine one, which is also what `MIN_SIMILARITY` applies to.
Why and how much it helps: docs/retrieval.md (`python -m bench.retrieval_quality --sweep`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..domain import Passage
from ..errors import RetrievalUnavailable
from ..language import content_words
from ..settings import Settings
from .embedder import Embedder
from .store import Hit, VectorStore


@dataclass
class Retrieval:
    passages: list[Passage]
    embed_ms: float
    search_ms: float


def lexical_overlap(query_words: frozenset[str], text: str) -> float:
    """The share (0..1) of the question's content words that appear in `text` (title and section included)."""
    if not query_words:
        return 0.0
    return len(query_words & content_words(text)) / len(query_words)


class Retriever:
    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        *,
        top_k: int,
        sources_k: int,
        min_similarity: float,
        candidates: int,
        lexical_weight: float,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.top_k = top_k
        self.sources_k = sources_k
        self.min_similarity = min_similarity
        # Chunks fetched for the re-rank, of which the best `top_k` are kept; and the weight of the lexical
        # overlap (0..1) added to the cosine similarity (0..1) to rank them (0 turns re-ranking off).
        self.candidates = candidates
        self.lexical_weight = lexical_weight

    @classmethod
    def from_settings(cls, embedder: Embedder, store: VectorStore, settings: Settings) -> Retriever:
        return cls(
            embedder,
            store,
            top_k=settings.retrieval_top_k,
            sources_k=settings.sources_top_k,
            min_similarity=settings.min_similarity,
            candidates=settings.rerank_candidates,
            lexical_weight=settings.lexical_weight,
        )

    async def retrieve(self, query: str) -> Retrieval:
        try:
            t0 = time.perf_counter()
            vector = await self.embedder.embed_query(query)
            t1 = time.perf_counter()
            hits = await self.store.aquery(vector, self.fetch_k)
            t2 = time.perf_counter()
        except Exception as exc:
            # Store unreachable, embedder failure: never answer ungrounded. The cause is logged by the caller.
            raise RetrievalUnavailable() from exc
        return Retrieval(self.group(self.rerank(query, hits)), (t1 - t0) * 1000, (t2 - t1) * 1000)

    @property
    def fetch_k(self) -> int:
        """How many chunks to ask the store for: the re-rank candidates, or just top_k without re-ranking."""
        return max(self.top_k, self.candidates) if self.lexical_weight > 0 else self.top_k

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        """The best `top_k` of the hits at or above MIN_SIMILARITY, by cosine + weight × lexical overlap.

        Ties keep the store's order; without re-ranking this is the nearest `top_k` chunks as they came.
        """
        kept = [h for h in hits if h.similarity >= self.min_similarity]
        words = content_words(query) if self.lexical_weight > 0 else frozenset()
        if words:
            weight = self.lexical_weight
            kept.sort(key=lambda h: h.similarity + weight * lexical_overlap(words, h.text), reverse=True)
        return kept[: self.top_k]

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
