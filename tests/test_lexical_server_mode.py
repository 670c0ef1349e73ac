"""The lexical index in server mode (`CHROMA_URL`): built from the shared collection, it answers the same as
the embedded store, and a machine that did not write a change follows it through the version marker."""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chroma_server import ChromaServer
from tests.harness import ROOT, ServerProcess, ingest_template, wait_until
from tests.sse import ask, assert_contract
from zantara_rag.language import detect_language
from zantara_rag.retrieval.embedder import Embedder
from zantara_rag.retrieval.mirror import LexicalMirror
from zantara_rag.retrieval.search import Retriever
from zantara_rag.retrieval.store import VectorStore
from zantara_rag.settings import Settings

pytestmark = [pytest.mark.server_mode, pytest.mark.slow]

QUESTIONS = [
    q for q in json.loads((ROOT / "tests" / "data" / "questions.json").read_text()) if q["split"] == "dev"
]
OFFTOPIC = json.loads((ROOT / "tests" / "data" / "offtopic.json").read_text())
# A fact no sample document has, with an Indonesian word of its own that only BM25 can match.
FACT = """---
title: Quokka permit
title_id: Izin Quokka
language: en
keywords_en: quokka, wildlife permit
keywords_id: izin satwa, quokka
---

# Quokka permit

The Quokka permit is a fictional permit used by the Zantara test suite. It costs IDR 4,321 per day and is
issued by the Bali Zero test office in Denpasar within three working days.
"""


OPENED: list[VectorStore] = []


def open_store(settings: Settings) -> VectorStore:
    OPENED.append(store := VectorStore.open(settings))
    return store


@pytest.fixture(scope="module", autouse=True)
def close_http_sessions() -> Iterator[None]:
    """Close the Chroma HTTP clients' connection pools here, not when a later test's garbage collection finds
    them (an unclosed socket is a ResourceWarning, and warnings are errors). chromadb's client has no public
    way to close its pool."""
    yield
    for store in OPENED:
        # The client and its admin client each hold a pool.
        for client in (store._client, getattr(store._client, "_admin_client", None)):
            session = getattr(getattr(client, "_server", None), "_session", None)
            if session is not None:
                session.close()
    OPENED.clear()
    gc.collect()


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    e = Embedder(Settings().embedding_model)
    yield e
    e.close()


def retriever_on(settings: Settings, embedder: Embedder) -> Retriever:
    store = open_store(settings)
    mirror = LexicalMirror(store)
    mirror.refresh()
    return Retriever.from_settings(embedder, store, settings, mirror=mirror)


def answers(retriever: Retriever, questions: list[str]) -> list[list[tuple[str, float]]]:
    async def run() -> list[list[tuple[str, float]]]:
        out = []
        for q in questions:
            result = await retriever.retrieve(q)
            out.append([(p.doc, round(p.similarity, 4)) for p in result.passages])
        return out

    return asyncio.run(run())


def word_ranking(retriever: Retriever, question: str) -> list[tuple[str, float]]:
    """The question's BM25 ranking (chunk ids and scores), as `Retriever.retrieve` computes it."""
    language = detect_language(question)
    expansion = retriever.glossary.expand(question, "id" if language == "en" else "en")
    words = retriever.rank_words(question, expansion)
    return [(words.index.chunks[s.position].id, round(s.score, 6)) for s in words.ranking]


def test_server_mode_ranks_as_the_embedded_store_and_every_machine_answers_alike(
    chroma_server: ChromaServer, kb_template: Path, embedder: Embedder, tmp_path: Path
) -> None:
    shutil.copytree(kb_template, tmp_path / "chroma")
    embedded = retriever_on(Settings(chroma_path=tmp_path / "chroma"), embedder)
    server = retriever_on(Settings(chroma_url=chroma_server.url), embedder)  # type: ignore[arg-type]
    later = retriever_on(Settings(chroma_url=chroma_server.url), embedder)  # type: ignore[arg-type]
    # The server's queries stay off the embedder's worker thread (a network round trip there would hold up the
    # next question's embedding); the embedded store's run on it (tests/test_search.py).
    assert (embedded.store.local, server.store.local) == (True, False)
    assert [c.id for c in server.mirror.index.chunks] == [c.id for c in embedded.mirror.index.chunks]
    asked = [q["question"] for q in QUESTIONS[::4]] + [q["question"] for q in OFFTOPIC]
    # The lexical index built from the server ranks every question exactly as the one built from the embedded
    # store.
    assert [word_ranking(server, q) for q in asked] == [word_ranking(embedded, q) for q in asked]
    # Whole answers: a machine that starts later on the same server answers exactly the same. (Against the
    # embedded store whole answers can differ: Chroma's vector search is approximate (HNSW), and two indexes
    # built apart miss different chunks near the 20th candidate: 6-15 of the ~500 question and gloss texts
    # measured, a different few on each build of the server's index.)
    got = answers(server, asked)
    assert got == answers(later, asked)
    assert any(got) and not all(got), "some found, the off-topic ones not"


def test_a_second_machine_follows_an_ingestion_it_did_not_make(
    chroma_server: ChromaServer, embedder: Embedder, tmp_path: Path
) -> None:
    settings = Settings(chroma_url=chroma_server.url, chroma_collection="kb-follow")  # type: ignore[arg-type]
    folder = tmp_path / "fact"
    folder.mkdir()
    (folder / "quokka-permit.md").write_text(FACT, encoding="utf-8")
    env = {"CHROMA_URL": chroma_server.url, "CHROMA_COLLECTION": "kb-follow"}
    ingest_template(tmp_path / "unused", ROOT / "apps" / "knowledge" / "overstay-fines.md", **env)
    machine_b = retriever_on(settings, embedder)
    before = machine_b.mirror.index.version
    question = "berapa biaya izin satwa quokka per hari?"
    assert "quokka" not in " ".join(c.text.lower() for c in machine_b.mirror.index.chunks)
    ingest_template(tmp_path / "unused", folder, **env)
    # Machine B reads one small record and sees the marker moved: it rebuilds, then finds the new document.
    assert machine_b.store.version() != before
    assert machine_b.mirror.refresh() is True
    assert machine_b.mirror.refresh() is False
    result = asyncio.run(machine_b.retrieve(question))
    assert result.language == "id" and result.passages[0].doc.endswith("quokka-permit.md")


def test_a_running_service_picks_up_the_change_within_the_refresh_interval(
    chroma_server: ChromaServer, tmp_path: Path
) -> None:
    env = {"CHROMA_URL": chroma_server.url, "CHROMA_COLLECTION": "kb-live", "AUTO_INGEST": "false"}
    ingest_template(tmp_path / "unused", ROOT / "apps" / "knowledge" / "overstay-fines.md", **env)
    settings = Settings(chroma_url=chroma_server.url, chroma_collection="kb-live")  # type: ignore[arg-type]
    with ServerProcess(**env, KNOWLEDGE_POLL_SECONDS="0.5") as server:
        folder = tmp_path / "fact"
        folder.mkdir()
        (folder / "quokka-permit.md").write_text(FACT, encoding="utf-8")
        ingest_template(tmp_path / "unused", folder, **env)
        chunks = open_store(settings).count()
        # The service's own log says when its index holds the new chunks (within about 0.5 s).
        wait_until(lambda: f"lexical index built: {chunks} chunks" in server.logs(), timeout=30, interval=0.2)
        got = ask(server.url, "berapa biaya izin satwa quokka per hari?")
        assert_contract(got)
        assert got.sources and got.sources[0]["id"].endswith("quokka-permit.md")
