"""Retrieval: a question in English or Indonesian becomes the numbered sources the model sees.

1. The question's language (`language.detect_language`) and what the glossary makes of it (`Glossary.expand`):
   the concepts it names in both languages and its gloss in the other language.
2. Three rankings of the chunks: the question's vector and the gloss's vector (one embedding batch, one
   Chroma request), and BM25 over the lexical index for the question's terms plus, at a lower weight, the
   glossary's translations of them.
3. Reciprocal rank fusion of the three (the first `FUSION_CANDIDATES` of each), the best `RETRIEVAL_TOP_K`
   chunks kept.
4. Off-topic questions are turned away: the relevance of the question (the cosine similarity of its view to
   the nearest chunk, plus `COVERAGE_WEIGHT` × the share of its words the best passage answers) must reach the
   cut-off of its language (`MIN_RELEVANCE_EN`, `MIN_RELEVANCE_ID`), else no sources at all. The view of an
   English question is the mean of the question's similarity and its gloss's (what the glossary knows of it;
   0 without a gloss); an Indonesian question's, its English gloss's alone (the model reads English).
5. Chunks are grouped by document in rank order; the first `SOURCES_TOP_K` documents become sources
   `[1]`..`[n]`. The model sees exactly those passages and the sources event lists exactly those documents,
   so `[n]` in the answer always points at `sources[n-1]`.

Why each step, and what it was measured against: docs/retrieval.md (`python -m bench.retrieval_quality`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from ..domain import Passage
from ..errors import RetrievalUnavailable
from ..language import Language, detect_language
from ..settings import Settings
from .embedder import Embedder
from .glossary import Expansion, Glossary
from .lexical import Chunk, LexicalIndex, Scored
from .mirror import LexicalMirror
from .store import SUPERSEDED, Hit, VectorStore

# Reciprocal rank fusion: a chunk at rank r of a ranking scores 1 / (RRF_K + r). A small constant lets the
# first places of each ranking count (Cormack et al. use 60 for long ranked lists; measured here: 10).
RRF_K = 10
# Weight of the glossary's translations in the BM25 query, against 1 for the question's own words.
EXPANSION_WEIGHT = 0.3
# The relevance of a question, by its language: QUESTION_WEIGHT × the similarity of the question's vector to
# its nearest chunk + (1 - QUESTION_WEIGHT) × that of its gloss's vector (0 without a gloss) + COVERAGE_WEIGHT
# × the coverage. An Indonesian question is judged on its English gloss alone (the English model places any
# Indonesian sentence near the Indonesian documents); an English one on both: a question about Bali the
# glossary knows nothing of (the weather, a beach, a boat) has an empty or thin gloss, and that halves its
# similarity however near its words put it to the knowledge base. Measured on the development questions
# (docs/retrieval.md, "Off-topic questions").
QUESTION_WEIGHT: dict[Language, float] = {"en": 0.5, "id": 0.0}
COVERAGE_WEIGHT: dict[Language, float] = {"en": 0.25, "id": 0.5}
# How many of the fused chunks the coverage is measured on (the best of them counts).
COVERAGE_CHUNKS = 3


@dataclass
class Retrieval:
    passages: list[Passage]
    embed_ms: float
    search_ms: float
    language: Language = "en"
    relevance: float = 0.0
    # Diagnostics for benchmarks and tests: the fused ranking before the cut-off and grouping.
    ranked: list[Hit] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Lexical:
    """The BM25 ranking of a question, with the lexical index it was computed on (a refresh may replace the
    mirror's index meanwhile: the fusion reads the chunks of this one)."""

    index: LexicalIndex
    ranking: list[Scored]


def _complete(index: LexicalIndex, chunk_id: str, hit: Hit | None) -> Hit:
    """A kept chunk as a full hit: a dense hit without text gets it from the lexical index; a chunk found
    only by its words gets similarity -1 (completed by the store, `Retriever.retrieve`)."""
    if hit is None:  # BM25 ranks only the chunks of its index
        chunk = index.chunks[index.positions[chunk_id]]
        return Hit(chunk_id, chunk.text, chunk.metadata, -1.0)
    position = index.positions.get(chunk_id)
    if not hit.metadata and position is not None:
        chunk = index.chunks[position]
        return Hit(chunk_id, chunk.text, chunk.metadata, hit.similarity)
    return hit


@dataclass
class Signals:
    """What retrieval saw of one question, before the cut-off."""

    language: Language
    expansion: Expansion
    ranked: list[Hit]
    view_similarity: float  # the similarity part of the relevance (QUESTION_WEIGHT)
    coverage: float
    relevance: float


class Retriever:
    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        mirror: LexicalMirror,
        glossary: Glossary,
        *,
        top_k: int,
        sources_k: int,
        candidates: int,
        min_relevance: dict[Language, float],
        rrf_k: float = RRF_K,
        expansion_weight: float = EXPANSION_WEIGHT,
        question_weight: dict[Language, float] | None = None,
        coverage_weight: dict[Language, float] | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.mirror = mirror
        self.glossary = glossary
        self.top_k = top_k
        self.sources_k = sources_k
        self.candidates = candidates
        self.min_relevance = min_relevance
        # Tuned to the embedding model and measured with it (docs/retrieval.md); parameters for the benchmark.
        self.rrf_k = rrf_k
        self.expansion_weight = expansion_weight
        self.question_weight = question_weight if question_weight is not None else QUESTION_WEIGHT
        self.coverage_weight = coverage_weight if coverage_weight is not None else COVERAGE_WEIGHT

    @classmethod
    def from_settings(
        cls,
        embedder: Embedder,
        store: VectorStore,
        settings: Settings,
        *,
        mirror: LexicalMirror | None = None,
        glossary: Glossary | None = None,
    ) -> Retriever:
        """The configured retriever; builds the mirror and the glossary when not given (reads the store)."""
        if mirror is None:
            mirror = LexicalMirror(store)
            mirror.refresh()
        if glossary is None:
            glossary = Glossary.load(settings.glossary_path)
        return cls(
            embedder,
            store,
            mirror,
            glossary,
            top_k=settings.retrieval_top_k,
            sources_k=settings.sources_top_k,
            candidates=settings.fusion_candidates,
            min_relevance={"en": settings.min_relevance_en, "id": settings.min_relevance_id},
        )

    async def retrieve(self, query: str) -> Retrieval:
        try:
            t0 = time.perf_counter()
            language = detect_language(query)
            expansion = self.glossary.expand(query, "id" if language == "en" else "en")
            texts = [query, expansion.gloss] if expansion.gloss else [query]
            k = max(self.candidates, self.top_k)
            # An embedded Chroma is queried on the embedding's worker thread when it is free (one hand-over
            # less; `Embedder.submit_queries`); a Chroma server is not: a network round trip there would
            # hold up the next question's embedding.
            then = self._nearest(k) if self.store.local else None
            pending = self.embedder.submit_queries(texts, then)
            try:
                # BM25 on this thread while the worker thread embeds (ONNX Runtime releases the GIL).
                words = self.rank_words(query, expansion)
            except BaseException:
                pending.cancel()
                raise
            ranked_words = time.perf_counter()
            embedded = await pending
            vectors = embedded.vectors
            # The first stage ends when both the vectors and BM25 are ready: Chroma's query is the second.
            t1 = max(embedded.ready, ranked_words)
            if embedded.followed:
                dense = cast(list[list[Hit]], embedded.result)
            else:
                dense = await self.store.aquery_many(vectors, k, texts=False)
            signals = self.fuse(query, language, expansion, dense, words)
            incomplete = [h.id for h in signals.ranked if h.similarity < 0 or not h.metadata]
            if incomplete:
                # Found only by their words (no similarity yet), or newer than the lexical index (no text
                # yet): one more read completes them.
                found = await self.store.ahits(incomplete, vectors)
                signals.ranked = [
                    Hit(
                        h.id,
                        found[h.id].text,
                        found[h.id].metadata,
                        max(h.similarity, found[h.id].similarity),
                    )
                    if h.id in found
                    else h
                    for h in signals.ranked
                ]
                self.cover_newer(signals, words.index)
            # A document's older version, marked while its new one is written (knowledge/ingest.py).
            signals.ranked = [h for h in signals.ranked if not h.metadata.get(SUPERSEDED)]
            t2 = time.perf_counter()
        except Exception as exc:
            # Store unreachable, embedder failure: never answer ungrounded. The cause is logged by the caller.
            raise RetrievalUnavailable() from exc
        passages = self.group(signals.ranked) if self.accepts(signals) else []
        return Retrieval(
            passages,
            (t1 - t0) * 1000,
            (t2 - t1) * 1000,
            language=language,
            relevance=signals.relevance,
            ranked=signals.ranked,
        )

    def _nearest(self, k: int) -> Callable[[list[list[float]]], list[list[Hit]]]:
        """Chroma's `k` nearest chunks of each vector: ids and similarities only, the texts are in the
        lexical index (a third of Chroma's time)."""
        return lambda vectors: self.store.query_many(vectors, k, texts=False)

    def accepts(self, signals: Signals) -> bool:
        """Whether the question is about the knowledge base at all (the cut-off of its language)."""
        return bool(signals.ranked) and signals.relevance >= self.min_relevance[signals.language]

    def cover_newer(self, signals: Signals, index: LexicalIndex) -> None:
        """Coverage counted on the chunks the lexical index does not have yet, now that their text is read:
        a document written since the last refresh (another machine's, in server mode) is judged on its words
        like every other, not turned away as off-topic until the refresh."""
        newer = [
            Chunk(h.id, h.text, h.metadata)
            for h in signals.ranked[:COVERAGE_CHUNKS]
            if h.id not in index.positions and h.text
        ]
        if not newer:
            return
        signals.coverage = max(signals.coverage, index.coverage_of(signals.expansion.words, newer))
        signals.relevance = self.relevance(signals.language, signals.view_similarity, signals.coverage)

    def relevance(self, language: Language, similarity: float, coverage: float) -> float:
        """What the off-topic cut-off compares: the view's similarity plus the weighted coverage."""
        return similarity + self.coverage_weight[language] * coverage

    def rank_words(self, query: str, expansion: Expansion) -> Lexical:
        """The BM25 ranking: the question's own terms at weight 1, the glossary's translations lower."""
        index = self.mirror.index
        own = index.analyze(query)
        translated = [t for term in expansion.terms for t in index.analyze(term)]
        scores = index.scores([(own, 1.0), (translated, self.expansion_weight)])
        return Lexical(index, index.top(scores, self.candidates))

    def fuse(
        self,
        query: str,
        language: Language,
        expansion: Expansion,
        dense: Sequence[list[Hit]],
        words: Lexical | None = None,
    ) -> Signals:
        """The three rankings fused, the best `top_k` chunks first, and the question's relevance signals.

        `words` is the BM25 ranking (`rank_words`), computed here when not given.
        """
        if words is None:
            words = self.rank_words(query, expansion)
        index = words.index
        fused: dict[str, float] = {}
        nearest: dict[str, Hit] = {}  # each chunk's dense hit of the highest similarity (the first on ties)
        for ranking in dense:
            for rank, hit in enumerate(ranking[: self.candidates], start=1):
                fused[hit.id] = fused.get(hit.id, 0.0) + 1.0 / (self.rrf_k + rank)
                best = nearest.get(hit.id)
                if best is None or hit.similarity > best.similarity:
                    nearest[hit.id] = hit
        chunks = index.chunks
        for rank, scored in enumerate(words.ranking, start=1):
            chunk_id = chunks[scored.position].id
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (self.rrf_k + rank)
        order = sorted(fused, key=lambda i: (-fused[i], i))[: self.top_k]
        # Only the kept chunks become full hits: their text and metadata from the lexical index.
        ranked = [_complete(index, i, nearest.get(i)) for i in order]
        # The question's view: its own nearest chunk and its gloss's (dense[1], when it has a gloss), weighted
        # by its language (QUESTION_WEIGHT).
        question = dense[0][0].similarity if dense and dense[0] else 0.0
        gloss = dense[1][0].similarity if len(dense) > 1 and dense[1] else 0.0
        weight = self.question_weight[language]
        similarity = weight * question + (1.0 - weight) * gloss
        positions = [index.positions[h.id] for h in ranked[:COVERAGE_CHUNKS] if h.id in index.positions]
        coverage = index.best_coverage(expansion.words, positions)
        relevance = self.relevance(language, similarity, coverage)
        return Signals(language, expansion, ranked, similarity, coverage, relevance)

    def group(self, hits: list[Hit]) -> list[Passage]:
        by_doc: dict[str, Passage] = {}
        for hit in hits:
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
                    language=str(hit.metadata.get("language") or "") or None,
                )
            passage.chunks.append(hit.text)
        return list(by_doc.values())
