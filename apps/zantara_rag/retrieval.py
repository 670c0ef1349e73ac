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

import re
import time
from dataclasses import dataclass, field

from .embedder import Embedder
from .errors import RetrievalUnavailable
from .events import Source
from .store import Hit, VectorStore

SNIPPET_CHARS = 240
# Chunks fetched for the re-rank, of which the best RETRIEVAL_TOP_K are kept (at least RETRIEVAL_TOP_K).
RERANK_CANDIDATES = 20
# Weight of the lexical overlap (0..1) added to the cosine similarity (0..1) to rank; 0 turns re-ranking off.
LEXICAL_WEIGHT = 0.2

_WORD = re.compile(r"\w+")
# Question words and function words (English and Indonesian) that say nothing about the topic.
_STOPWORD_LIST = """
    a about also am an and any are as at be been but by can could did do does for from get got had has have
    how i if in into is it its just know like many may me might more most much must my need no not of on or
    our please should so some still such than that the then there these this those to too up very want was
    we were what when where which who why will with would you your
    ada aja akan aku anda apa apakah atau bagaimana belum berapa bisa dalam dan dari dengan di dimana dong
    ga gak gimana harus ini itu jadi jika juga kalau kami kapan karena ke kita lagi mana nggak nya oleh pada
    per pun saja saya se sih siapa sudah tak tapi tidak untuk ya yang
"""
_STOPWORDS = frozenset(_STOPWORD_LIST.split())


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


def content_words(text: str) -> frozenset[str]:
    """Lower-case words of two or more characters, without stop words."""
    return frozenset(w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in _STOPWORDS)


def lexical_overlap(query_words: frozenset[str], text: str) -> float:
    """The share (0..1) of the question's content words that appear in `text` (title and section included)."""
    if not query_words:
        return 0.0
    return len(query_words & content_words(text)) / len(query_words)


class Retriever:
    # Class-level so a benchmark can turn the re-rank off (`lexical_weight = 0.0`) on one instance.
    candidates: int = RERANK_CANDIDATES
    lexical_weight: float = LEXICAL_WEIGHT

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
