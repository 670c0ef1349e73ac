"""The lexical index: BM25 over every chunk of the collection, kept beside the vectors.

Chroma 1.5.9 has no sparse or BM25 index and no rank fusion outside Chroma Cloud, embedded or in server mode
("Sparse vector indexing is not enabled in local"; "Search operation is not implemented for local
executor"), so the index is built here, with bm25s, from what the collection stores: each chunk's text and
its `keywords` metadata (`lexical_text`). It is a pure function of the collection, so every machine that
reads the same collection (a restart, a second Fly machine, `CHROMA_URL` server mode) builds the same index,
and `LexicalMirror` rebuilds it whenever the collection's version marker moves (docs/retrieval.md).

Terms are `language.index_terms` (both Snowball stems of every meaningful word). A query is a list of
weighted term groups (the question's own words, then the glossary's additions), scored as BM25 (Lucene
variant, k1 = 1.2, b = 0.75) with each group's weight applied to its terms' contributions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..language import index_terms

K1 = 1.2
B = 0.75


def lexical_text(text: str, metadata: dict[str, Any]) -> str:
    """What a chunk is indexed under: its stored text (title, section, body) and its keywords."""
    keywords = str(metadata.get("keywords") or "")
    return f"{text}\n{keywords}" if keywords else text


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk as the collection holds it."""

    id: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Scored:
    position: int
    score: float


class LexicalIndex:
    """BM25 over `chunks`, in the order given (ids sorted by the builder, for a deterministic index).

    `analyze` turns a text into its terms, for the chunks and for queries alike (`language.index_terms`; the
    benchmark compares others).
    """

    def __init__(
        self, chunks: Sequence[Chunk], version: str = "", analyze: Callable[[str], list[str]] = index_terms
    ) -> None:
        import bm25s

        self.chunks = list(chunks)
        self.version = version
        self.analyze = analyze
        self.positions = {c.id: i for i, c in enumerate(self.chunks)}
        corpus = [analyze(lexical_text(c.text, c.metadata)) for c in self.chunks]
        self._bm25: Any = None
        self._vocab: dict[str, int] = {}
        self._terms: list[Any] = []
        self._idf: dict[str, float] = {}
        if any(corpus):
            bm25 = bm25s.BM25(k1=K1, b=B, method="lucene")
            bm25.index(corpus, create_empty_token=False, show_progress=False)
            self._bm25 = bm25
            self._vocab = bm25.vocab_dict
            # Each chunk's distinct terms as vocabulary ids, for the coverage: a few hundred bytes a chunk,
            # where sets of strings took ~6 KB (60 MB at 10k chunks).
            vocab = self._vocab
            self._terms = [
                np.unique(np.fromiter((vocab[t] for t in terms), dtype=np.int32)) for terms in corpus
            ]
            indptr = bm25.scores["indptr"]
            n = len(self.chunks)
            for term, column in self._vocab.items():
                df = int(indptr[column + 1] - indptr[column])
                self._idf[term] = math.log(1 + (n - df + 0.5) / (df + 0.5))
        self.max_idf = math.log(1 + (len(self.chunks) + 0.5) / 0.5)

    def __len__(self) -> int:
        return len(self.chunks)

    def idf(self, term: str) -> float:
        """Inverse document frequency; a term no chunk has gets the largest possible."""
        return self._idf.get(term, self.max_idf)

    def scores(self, groups: Iterable[tuple[Sequence[str], float]]) -> Any:
        """BM25 score of every chunk for weighted term groups (a term counts once, at its best weight)."""
        out = np.zeros(len(self.chunks), dtype=np.float32)
        if self._bm25 is None:
            return out
        weights: dict[int, float] = {}
        for terms, weight in groups:
            for term in terms:
                column = self._vocab.get(term)
                if column is not None and weight > weights.get(column, 0.0):
                    weights[column] = weight
        data = self._bm25.scores["data"]
        indices = self._bm25.scores["indices"]
        indptr = self._bm25.scores["indptr"]
        for column, weight in weights.items():
            start, end = indptr[column], indptr[column + 1]
            # A term's postings name each chunk once: a plain indexed add is exact (and faster than add.at).
            out[indices[start:end]] += data[start:end] * weight
        return out

    def top(self, scores: Any, k: int) -> list[Scored]:
        """The `k` best-scoring chunks with a positive score, best first (ties by position)."""
        positive = np.flatnonzero(scores > 0)
        if positive.size == 0:
            return []
        if positive.size > k:
            part = np.argpartition(-scores[positive], k - 1)[:k]
            positive = positive[part]
        order = sorted(positive.tolist(), key=lambda i: (-float(scores[i]), i))
        return [Scored(i, float(scores[i])) for i in order]

    def coverage(self, words: Sequence[tuple[frozenset[str], frozenset[str]]], position: int) -> float:
        """The share (0..1) of the question's words, weighted by rarity, that chunk `position` answers.

        Each word is `(its own terms, its glossary translations' terms)`; it counts as found when either
        set meets the chunk's terms, with the weight of its own rarest term (a word no chunk contains, the
        mark of an off-topic question, weighs the most). docs/retrieval.md, "Off-topic questions".
        """
        return self.best_coverage(words, [position])

    def _weighted(
        self, words: Sequence[tuple[frozenset[str], frozenset[str]]]
    ) -> tuple[list[tuple[frozenset[str], frozenset[str]]], list[float], float]:
        """The question's words that have terms, each weighted by its own rarest term, and their sum."""
        kept = [(own, alt) for own, alt in words if own]
        weights = [max(self.idf(t) for t in own) for own, _ in kept]
        return kept, weights, sum(weights)

    def coverage_of(
        self, words: Sequence[tuple[frozenset[str], frozenset[str]]], chunks: Sequence[Chunk]
    ) -> float:
        """The largest `coverage` of chunks that are not in this index (written since it was built): their
        terms analysed now, the words weighted by this index's rarity as for the indexed ones."""
        kept, weights, total = self._weighted(words)
        if total == 0:
            return 0.0
        best = 0.0
        for chunk in chunks:
            terms = set(self.analyze(lexical_text(chunk.text, chunk.metadata)))
            found = sum(w for w, (own, alt) in zip(weights, kept, strict=True) if own & terms or alt & terms)
            best = max(best, found / total)
        return best

    def best_coverage(
        self, words: Sequence[tuple[frozenset[str], frozenset[str]]], positions: Sequence[int]
    ) -> float:
        """The largest `coverage` of the chunks at `positions` (0 for none): the weights are computed once,
        and each chunk's terms are looked up in one vectorised search."""
        kept, weights, total = self._weighted(words)
        if total == 0 or not positions:
            return 0.0
        # Every vocabulary column of each word's terms (own or translated), and the word it belongs to.
        columns: list[int] = []
        owners: list[int] = []
        for i, (own, alt) in enumerate(kept):
            for term in own | alt:
                column = self._vocab.get(term)
                if column is not None:
                    columns.append(column)
                    owners.append(i)
        wanted = np.asarray(columns, dtype=np.int32)
        best = 0.0
        for position in positions:
            ids = self._terms[position] if self._terms else np.empty(0, dtype=np.int32)
            if ids.size == 0 or wanted.size == 0:
                found_words: set[int] = set()
            else:
                at = np.minimum(np.searchsorted(ids, wanted), ids.size - 1)
                found_words = {owners[j] for j in np.flatnonzero(ids[at] == wanted).tolist()}
            found = sum(w for i, w in enumerate(weights) if i in found_words)
            best = max(best, found / total)
        return best
