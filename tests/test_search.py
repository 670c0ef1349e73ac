"""The hybrid retriever, in process, with the real embedder and an embedded Chroma: a few sample documents
of each language, asked across languages; the fusion and the off-topic cut-off in isolation."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from zantara_rag.errors import RetrievalUnavailable
from zantara_rag.knowledge.ingest import ingest
from zantara_rag.retrieval.embedder import Embedder
from zantara_rag.retrieval.glossary import Expansion
from zantara_rag.retrieval.mirror import LexicalMirror
from zantara_rag.retrieval.search import Retriever, Signals
from zantara_rag.retrieval.store import Hit, VectorStore
from zantara_rag.settings import DEFAULT_EMBEDDING_MODEL, DEFAULT_KNOWLEDGE_PATH, Settings

DOCUMENTS = [
    "overstay-fines.md",  # en
    "severance-termination.md",  # en
    "visa-on-arrival-evoa.md",  # en
    "bpjs-kesehatan.md",  # id
    "sim-untuk-wna.md",  # id
    "lkpm.md",  # id
]


@dataclass
class Setup:
    retriever: Retriever
    store: VectorStore
    mirror: LexicalMirror


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("bilingual") / "knowledge"
    root.mkdir()
    for name in DOCUMENTS:
        shutil.copy(DEFAULT_KNOWLEDGE_PATH / name, root / name)
    settings = Settings(chroma_path=root.parent / "chroma", knowledge_path=root)
    embedder = Embedder(DEFAULT_EMBEDDING_MODEL)
    store = VectorStore.open(settings)
    ingest([root], store, embedder, root=root, max_chars=1200, overlap=150, progress=False)
    mirror = LexicalMirror(store)
    mirror.refresh()
    yield Setup(Retriever.from_settings(embedder, store, settings, mirror=mirror), store, mirror)
    embedder.close()


def ask(setup: Setup, question: str) -> list[str]:
    passages = asyncio.run(setup.retriever.retrieve(question)).passages
    return [p.doc.rsplit("/", 1)[-1] for p in passages]


@pytest.mark.parametrize(
    ("question", "document"),
    [
        # The examples (its exact first one is q090 of the labelled set: on these six documents alone
        # the SIM page, which says "tidak melebihi masa berlaku izin tinggal", outranks it).
        (
            "Berapa denda overstay per hari kalau saya tinggal melewati masa berlaku izin tinggal?",
            "overstay-fines.md",
        ),
        ("Is health insurance compulsory for my staff?", "bpjs-kesehatan.md"),
        ("berapa pesangon kalau di-PHK setelah kerja 5 tahun?", "severance-termination.md"),
        ("how much does a motorbike licence cost for a foreigner with a KITAS?", "sim-untuk-wna.md"),
        ("when is the quarterly investment report due?", "lkpm.md"),
        ("kapan batas lapor LKPM triwulan?", "lkpm.md"),
        ("how much is the visa on arrival?", "visa-on-arrival-evoa.md"),
    ],
)
def test_questions_find_their_document_in_either_language(setup: Setup, question: str, document: str) -> None:
    assert ask(setup, question)[0] == document


@pytest.mark.parametrize(
    "question",
    [
        "Bagaimana cara membuat rendang yang empuk?",
        "siapa presiden pertama Amerika Serikat?",
        "what's the capital of France?",
        "recipe for nasi goreng",
        # Near the domain: Bali, but nothing the knowledge base is about (its gloss is empty).
        "when does the rainy season start in Bali?",
        "cuaca di Bali bulan Desember biasanya gimana?",
    ],
)
def test_off_topic_questions_get_no_sources_in_either_language(setup: Setup, question: str) -> None:
    result = asyncio.run(setup.retriever.retrieve(question))
    assert result.passages == []
    assert result.relevance < setup.retriever.min_relevance[result.language]
    assert result.ranked, "the chunks were ranked; only the cut-off turned the question away"


def test_every_source_carries_a_cosine_similarity_even_when_found_by_its_words(setup: Setup) -> None:
    result = asyncio.run(setup.retriever.retrieve("pesangon PHK karyawan masa kerja 3 tahun"))
    assert result.language == "id" and result.passages
    for hit in result.ranked:
        assert 0.0 <= hit.similarity <= 1.0
    found = setup.store.hits([h.id for h in result.ranked], [[0.0] * 383 + [1.0]])
    assert set(found) == {h.id for h in result.ranked}
    assert all(found[h.id].text == h.text and found[h.id].metadata == h.metadata for h in result.ranked)


def _hit(setup: Setup, position: int, similarity: float) -> Hit:
    chunk = setup.mirror.index.chunks[position]
    return Hit(chunk.id, chunk.text, chunk.metadata, similarity)


def test_reciprocal_rank_fusion_prefers_agreement_over_one_first_place(setup: Setup) -> None:
    retriever = setup.retriever
    a, b, c = (_hit(setup, i, s) for i, s in ((0, 0.9), (1, 0.8), (2, 0.7)))
    # a is first in one ranking only; b is second in both: 2 / (k + 2) beats 1 / (k + 1).
    signals = retriever.fuse("zzz", "en", Expansion(), [[a, b], [c, b]])
    # a and c tie (first once each) and are ordered by id, so every machine ranks them the same way.
    assert [h.id for h in signals.ranked] == [b.id, a.id, c.id]
    assert [h.similarity for h in signals.ranked] == [0.8, 0.9, 0.7], "each hit keeps its best similarity"
    # Without a word of the question in any chunk, the view alone decides ("zzz" covers nothing): for an
    # English question, the mean of the nearest chunk's similarity in the question's ranking and the gloss's.
    assert signals.coverage == 0.0
    assert signals.view_similarity == pytest.approx((0.9 + 0.7) / 2) == signals.relevance


def test_the_lexical_ranking_joins_the_fusion(setup: Setup) -> None:
    # No dense ranking at all: the chunks come from BM25 alone, marked for a similarity lookup.
    signals = setup.retriever.fuse("Satpas SIM C", "id", Expansion(), [[]])
    assert signals.ranked and all(h.similarity == -1.0 for h in signals.ranked)
    assert signals.ranked[0].metadata["doc"].endswith("sim-untuk-wna.md")


def test_the_cut_off_is_per_language(setup: Setup) -> None:
    retriever = setup.retriever
    ranked = [_hit(setup, 0, 0.5)]

    def signals(language: str, relevance: float) -> Signals:
        return Signals(language, Expansion(), ranked, relevance, 0.0, relevance)  # type: ignore[arg-type]

    low_en, low_id = retriever.min_relevance["en"], retriever.min_relevance["id"]
    assert low_en != low_id
    assert retriever.accepts(signals("en", low_en)) and not retriever.accepts(signals("en", low_en - 0.01))
    assert retriever.accepts(signals("id", low_id)) and not retriever.accepts(signals("id", low_id - 0.01))
    assert not retriever.accepts(Signals("en", Expansion(), [], 1.0, 1.0, 2.0)), "nothing ranked: nothing"


def test_an_indonesian_questions_relevance_is_judged_on_its_english_gloss(setup: Setup) -> None:
    retriever = setup.retriever
    question = "berapa iuran BPJS kesehatan untuk karyawan?"
    expansion = retriever.glossary.expand(question, "en")
    assert expansion.gloss.startswith("contribution")
    vectors = asyncio.run(retriever.embedder.embed_queries([question, expansion.gloss]))
    dense = setup.store.query_many(vectors, 20)
    signals = retriever.fuse(question, "id", expansion, dense)
    assert signals.view_similarity == dense[1][0].similarity  # the gloss's nearest chunk alone
    assert signals.view_similarity != dense[0][0].similarity
    assert signals.relevance == pytest.approx(signals.view_similarity + 0.5 * signals.coverage)
    assert retriever.accepts(signals)


def test_an_english_questions_relevance_is_judged_on_itself_and_its_gloss(setup: Setup) -> None:
    retriever = setup.retriever
    question = "how much is the overstay fine per day?"
    expansion = retriever.glossary.expand(question, "id")
    assert expansion.gloss  # "overstay denda hari"-like: what the glossary knows of it
    vectors = asyncio.run(retriever.embedder.embed_queries([question, expansion.gloss]))
    dense = setup.store.query_many(vectors, 20)
    signals = retriever.fuse(question, "en", expansion, dense)
    both = (dense[0][0].similarity + dense[1][0].similarity) / 2
    assert signals.view_similarity == pytest.approx(both)
    assert signals.relevance == pytest.approx(both + 0.25 * signals.coverage)
    assert retriever.accepts(signals)


def test_an_english_question_the_glossary_knows_nothing_of_keeps_half_its_similarity(setup: Setup) -> None:
    retriever = setup.retriever
    question = "is it safe to drink tap water in Bali?"
    expansion = retriever.glossary.expand(question, "id")
    assert expansion.gloss == ""  # no concept of the domain: no gloss, no second vector
    vectors = asyncio.run(retriever.embedder.embed_queries([question]))
    dense = setup.store.query_many(vectors, 20)
    signals = retriever.fuse(question, "en", expansion, dense)
    assert signals.view_similarity == pytest.approx(dense[0][0].similarity / 2)
    assert not retriever.accepts(signals)


QUOKKA = """---
title: Quokka permit
language: en
---
# Quokka permit

The Quokka permit is a fictional permit used by the Zantara test suite. The Quokka permit costs
IDR 4,321 per day and is issued by the Bali Zero test office in Denpasar within three working days.
"""


def test_a_document_newer_than_the_lexical_index_is_judged_on_its_own_words(tmp_path: Path) -> None:
    # A service on an empty collection; another machine writes a document (server mode): the vectors find it
    # before this machine's lexical index is rebuilt, and its words must count already.
    root = tmp_path / "knowledge"
    root.mkdir()
    settings = Settings(chroma_path=tmp_path / "chroma", knowledge_path=root)
    embedder = Embedder(DEFAULT_EMBEDDING_MODEL)
    try:
        store = VectorStore.open(settings)
        mirror = LexicalMirror(store)
        mirror.refresh()
        retriever = Retriever.from_settings(embedder, store, settings, mirror=mirror)
        (root / "quokka-permit.md").write_text(QUOKKA, encoding="utf-8")
        ingest([root], store, embedder, root=root, max_chars=1200, overlap=150, progress=False)
        question = "How much does the Quokka permit cost per day?"
        before = asyncio.run(retriever.retrieve(question))
        assert len(mirror.index) == 0  # not refreshed yet
        assert [p.title for p in before.passages] == ["Quokka permit"]
        mirror.refresh()
        after = asyncio.run(retriever.retrieve(question))
        assert [p.title for p in after.passages] == ["Quokka permit"]
        # The same words answer the question before and after the refresh (only their rarity differs).
        assert before.relevance == pytest.approx(after.relevance, abs=0.05)
    finally:
        embedder.close()


def test_an_embedded_chroma_is_queried_on_the_embedding_worker_a_server_is_not(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One hand-over fewer for an embedded store; a server's network round trip stays off the worker thread.
    threads: list[str] = []
    query_many = setup.store.query_many

    def recording(*args: object, **kwargs: object) -> list[list[Hit]]:
        threads.append(threading.current_thread().name)
        return query_many(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(setup.store, "query_many", recording)
    question = "Is health insurance compulsory for my staff?"
    on_worker = asyncio.run(setup.retriever.retrieve(question))
    assert setup.store.local
    monkeypatch.setattr(setup.store, "local", False)
    off_worker = asyncio.run(setup.retriever.retrieve(question))
    assert len(threads) == 2
    assert threads[0].startswith("embed") and not threads[1].startswith("embed")
    # The same answer either way, and the embedding and search stages are both timed.
    assert [p.doc for p in on_worker.passages] == [p.doc for p in off_worker.passages]
    assert on_worker.relevance == pytest.approx(off_worker.relevance, abs=1e-6)
    assert min(on_worker.embed_ms, on_worker.search_ms, off_worker.embed_ms, off_worker.search_ms) > 0


def test_a_store_failing_on_the_worker_thread_is_retrieval_unavailable(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The query that runs on the embedder's worker thread fails as one on the default executor does: the
    # request gets retrieval_unavailable, and the worker counts no question as waiting afterwards.
    def down(*args: object, **kwargs: object) -> list[list[Hit]]:
        raise ConnectionError("chroma is down")

    monkeypatch.setattr(setup.store, "query_many", down)
    embedder = setup.retriever.embedder

    async def ask() -> int:
        with pytest.raises(RetrievalUnavailable):
            await setup.retriever.retrieve("Is health insurance compulsory for my staff?")
        for _ in range(100):
            if embedder._queries_waiting == 0:
                break
            await asyncio.sleep(0.01)
        return embedder._queries_waiting

    assert asyncio.run(ask()) == 0
