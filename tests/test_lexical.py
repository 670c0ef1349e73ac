"""The lexical index (BM25 over the collection's chunks) and the mirror that keeps it in step."""

from __future__ import annotations

from pathlib import Path

import pytest

from zantara_rag.language import index_terms
from zantara_rag.retrieval.lexical import Chunk, LexicalIndex, lexical_text
from zantara_rag.retrieval.mirror import LexicalMirror
from zantara_rag.retrieval.store import VectorStore, connect
from zantara_rag.settings import DEFAULT_EMBEDDING_MODEL, Settings

CHUNKS = [
    Chunk("a", "Overstay fines — The fine\n\nThe overstay charge is IDR 1,000,000 per person per day.", {}),
    Chunk("b", "Severance — Payments\n\nSeverance pay (uang pesangon) depends on the years of service.", {}),
    Chunk("c", "BPJS Kesehatan — Iuran\n\nIuran 5% dari upah, 4% pemberi kerja dan 1% pekerja.", {}),
    Chunk(
        "d",
        "BPJS Kesehatan — Siapa yang wajib\n\nPemberi kerja wajib mendaftarkan pekerja asing.",
        {"keywords": "national health insurance; compulsory; employees"},
    ),
]


@pytest.fixture(scope="module")
def index() -> LexicalIndex:
    return LexicalIndex(CHUNKS, "v1")


def best(index: LexicalIndex, *groups: tuple[list[str], float]) -> list[str]:
    return [index.chunks[s.position].id for s in index.top(index.scores(groups), 4)]


def test_bm25_finds_the_chunk_with_the_questions_rare_words(index: LexicalIndex) -> None:
    assert best(index, (["overstay", "fine"], 1.0))[0] == "a"
    # Stems meet across languages: "pesangonnya" finds the English chunk that quotes "pesangon".
    assert best(index, (index_terms("pesangonnya"), 1.0)) == ["b"]
    assert best(index, (["nothing", "matches"], 1.0)) == []


def test_keywords_are_indexed_with_the_chunk(index: LexicalIndex) -> None:
    assert lexical_text("body", {"keywords": "a; b"}) == "body\na; b"
    assert best(index, (["compulsori", "health"], 1.0)) == ["d"]


def test_weighted_groups_count_each_term_once_at_its_best_weight(index: LexicalIndex) -> None:
    once = index.scores([(["overstay"], 1.0)])
    twice = index.scores([(["overstay"], 1.0), (["overstay"], 0.3)])
    assert (once == twice).all()
    low = index.scores([(["overstay"], 0.3)])
    assert low[0] == pytest.approx(0.3 * once[0])


def test_coverage_counts_the_questions_words_by_rarity(index: LexicalIndex) -> None:
    overstay = (frozenset({"overstay"}), frozenset())
    unknown = (frozenset({"rendang"}), frozenset())
    translated = (frozenset({"denda"}), frozenset({"fine", "penalti"}))
    assert index.coverage([overstay], 0) == 1.0
    assert index.coverage([overstay, translated], 0) == 1.0  # "denda" found through its translation
    assert index.coverage([unknown], 0) == 0.0
    # A word no chunk contains weighs the most: it drags the coverage of an off-topic question down.
    assert index.idf("rendang") == index.max_idf > index.idf("overstay")
    assert 0 < index.coverage([overstay, unknown], 0) < 0.5
    assert index.coverage([], 0) == 0.0


def test_the_best_coverage_of_several_chunks_is_the_largest_of_each(index: LexicalIndex) -> None:
    overstay = (frozenset({"overstay"}), frozenset())
    fine = (frozenset({"denda"}), frozenset({"fine"}))
    severance = (frozenset({"pesangon"}), frozenset({"sever"}))
    unknown = (frozenset({"rendang"}), frozenset())
    words = [overstay, fine, severance, unknown]
    each = [index.coverage(words, p) for p in range(len(CHUNKS))]
    assert each[0] > each[1] > 0 and each[2] == 0.0
    assert index.best_coverage(words, [0, 1, 2]) == max(each[:3])
    assert index.best_coverage(words, [2, 1]) == each[1]
    assert index.best_coverage(words, []) == 0.0


def test_an_empty_index_scores_nothing() -> None:
    empty = LexicalIndex([])
    assert len(empty) == 0 and empty.top(empty.scores([(["visa"], 1.0)]), 5) == []
    assert empty.best_coverage([(frozenset({"visa"}), frozenset())], [0]) == 0.0


def test_the_mirror_follows_the_collections_version_marker(tmp_path: Path) -> None:
    store = VectorStore(
        connect(Settings(chroma_path=tmp_path / "chroma")), "kb-mirror", DEFAULT_EMBEDDING_MODEL
    )
    store.upsert(["a"], [[1.0, 0.0]], [CHUNKS[0].text], [{"doc": "kb/a.md"}])
    store.bump_version()
    mirror = LexicalMirror(store)
    assert mirror.refresh() is True and len(mirror.index) == 1
    assert mirror.refresh() is False, "nothing changed: no rebuild"
    # Another writer (another process or machine) adds a chunk and moves the marker.
    other = VectorStore(
        connect(Settings(chroma_path=tmp_path / "chroma")), "kb-mirror", DEFAULT_EMBEDDING_MODEL
    )
    other.upsert(["b"], [[0.0, 1.0]], [CHUNKS[1].text], [{"doc": "kb/b.md"}])
    other.bump_version()
    assert mirror.refresh() is True and [c.id for c in mirror.index.chunks] == ["a", "b"]
    # A writer that forgets the marker is still noticed by the count.
    other.delete(["a"])
    assert mirror.refresh() is True and [c.id for c in mirror.index.chunks] == ["b"]


def test_two_mirrors_of_one_collection_build_the_same_index(tmp_path: Path) -> None:
    store = VectorStore(
        connect(Settings(chroma_path=tmp_path / "chroma")), "kb-same", DEFAULT_EMBEDDING_MODEL
    )
    for chunk in reversed(CHUNKS):  # written in another order than the ids sort
        store.upsert([chunk.id], [[1.0, 0.0]], [chunk.text], [{"doc": chunk.id, **chunk.metadata}])
    first, second = LexicalMirror(store), LexicalMirror(store)
    first.refresh()
    second.refresh()
    groups = [(["wajib", "pekerja", "overstay"], 1.0)]
    assert [c.id for c in first.index.chunks] == ["a", "b", "c", "d"]
    assert (first.index.scores(groups) == second.index.scores(groups)).all()
