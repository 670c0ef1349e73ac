"""Claude-written bilingual enrichment at ingestion, against the fake Claude through the real SDK."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.control import FakeAnthropic
from zantara_rag.knowledge.documents import load
from zantara_rag.knowledge.enrichment import SYSTEM, Enricher, needs_enrichment, parse_reply
from zantara_rag.knowledge.ingest import ingest
from zantara_rag.retrieval.embedder import Embedder
from zantara_rag.retrieval.store import VectorStore
from zantara_rag.settings import Settings

PLAIN = """---
title: Surf school permits
language: en
---
## Licences
A surf school needs a tourism business licence and insured instructors.
"""
WRITTEN = {
    "title_en": "Surf school permits",
    "title_id": "Izin sekolah selancar",
    "keywords_en": ["surf school", "tourism licence", "instructors"],
    "keywords_id": ["sekolah selancar", "izin usaha pariwisata", "instruktur"],
}


@pytest.fixture
def enricher_for() -> Iterator[Callable[[Settings], Enricher | None]]:
    """`Enricher.from_settings`, each one closed after the test (its HTTP client holds a pooled socket)."""
    made: list[Enricher] = []

    def make(settings: Settings) -> Enricher | None:
        enricher = Enricher.from_settings(settings)
        if enricher is not None:
            made.append(enricher)
        return enricher

    yield make
    for enricher in made:
        enricher.close()


def settings_for(claude: FakeAnthropic, tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        anthropic_api_key="sk-ant-test-SECRET-0123456789",  # type: ignore[arg-type]
        anthropic_base_url=claude.base_url,  # type: ignore[arg-type]
        enrichment_cache_dir=tmp_path / "enrichment",
        chroma_path=tmp_path / "chroma",
        **extra,  # type: ignore[arg-type]
    )


def knowledge_base(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    root.mkdir()
    (root / "surf.md").write_text(PLAIN)
    return root


def run(root: Path, store: VectorStore, embedder: Embedder, enricher: Enricher | None):  # type: ignore[no-untyped-def]
    return ingest(
        [root], store, embedder, root=root, max_chars=800, overlap=0, progress=False, enricher=enricher
    )


def test_claude_writes_what_the_front_matter_lacks_once_per_content(
    claude: FakeAnthropic,
    tmp_path: Path,
    embedder: Embedder,
    enricher_for: Callable[[Settings], Enricher | None],
) -> None:
    root = knowledge_base(tmp_path)
    settings = settings_for(claude, tmp_path)
    enricher = enricher_for(settings)
    assert enricher is not None
    store = VectorStore.open(settings)
    claude.enqueue({"text": "```json\n" + json.dumps(WRITTEN) + "\n```"})

    first = run(root, store, embedder, enricher)
    assert first.added == 1 and enricher.requests == 1
    (request,) = claude.requests()
    body = request["body"]
    assert body["model"] == settings.anthropic_model and body["system"] == SYSTEM
    assert "surf school needs a tourism business licence" in body["messages"][0]["content"]
    got = store._collection.get(include=["documents", "metadatas"])
    (text,), (meta,) = got["documents"], got["metadatas"]
    assert text.startswith("Surf school permits — Licences\nIzin sekolah selancar\n\n")
    assert meta["keywords"] == (
        "surf school; tourism licence; instructors; sekolah selancar; izin usaha pariwisata; instruktur"
    )

    # Unchanged: no request, nothing embedded again.
    again = run(root, store, embedder, enricher)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 1) and len(claude.requests()) == 1
    # Rebuilt from scratch (`ingest --reset`, or another machine with the same cache): still no request.
    fresh = VectorStore.open(settings, reset=True)
    assert run(root, fresh, embedder, enricher_for(settings)).added == 1
    assert len(claude.requests()) == 1

    # Changed content: asked again.
    (root / "surf.md").write_text(PLAIN.replace("insured instructors", "certified, insured instructors"))
    claude.enqueue({"text": json.dumps(WRITTEN)})
    assert run(root, fresh, embedder, enricher).updated == 1 and len(claude.requests()) == 2


def test_front_matter_wins_and_a_complete_one_costs_no_request(
    claude: FakeAnthropic, tmp_path: Path, enricher_for: Callable[[Settings], Enricher | None]
) -> None:
    path = tmp_path / "doc.md"
    path.write_text(PLAIN.replace("language: en\n", "language: en\ntitle_id: Izin selancar\n"))
    enricher = enricher_for(settings_for(claude, tmp_path))
    assert enricher is not None
    claude.enqueue({"text": json.dumps(WRITTEN)})
    document = enricher.enrich(load(path))
    assert document.titles == {"id": "Izin selancar"}, "the front matter wins over Claude's title"
    assert document.keywords["id"] == WRITTEN["keywords_id"]
    complete = load(Path(__file__).parents[1] / "apps" / "knowledge" / "overstay-fines.md")
    assert not needs_enrichment(complete) and enricher.enrich(complete) is complete
    assert len(claude.requests()) == 1


@pytest.mark.parametrize("scenario", [{"text": "Sorry, I cannot help with that."}, {"status": 400}])
def test_a_failed_enrichment_is_logged_and_the_document_indexed_without_it(
    claude: FakeAnthropic,
    tmp_path: Path,
    embedder: Embedder,
    caplog: pytest.LogCaptureFixture,
    scenario: dict[str, object],
    enricher_for: Callable[[Settings], Enricher | None],
) -> None:
    root = knowledge_base(tmp_path)
    settings = settings_for(claude, tmp_path)
    enricher = enricher_for(settings)
    claude.enqueue(scenario)
    with caplog.at_level(logging.WARNING, logger="zantara_rag.knowledge.enrichment"):
        report = run(root, VectorStore.open(settings), embedder, enricher)
    assert report.added == 1 and not report.failed
    assert "enrichment of 'Surf school permits'" in caplog.text and "sk-ant" not in caplog.text
    assert not list((tmp_path / "enrichment").glob("*.json")), "nothing cached: the next run asks again"


def test_no_key_or_off_means_no_enricher(claude: FakeAnthropic, tmp_path: Path) -> None:
    assert Enricher.from_settings(Settings(chroma_path=tmp_path)) is None
    assert Enricher.from_settings(settings_for(claude, tmp_path, ingest_enrichment="off")) is None


def test_parse_reply_keeps_only_what_was_asked_for() -> None:
    assert parse_reply("no json here") is None
    assert parse_reply('{"title_en": 3, "keywords_en": "not a list"}') is None
    parsed = parse_reply('{"title_id": "  Izin   selancar ", "keywords_en": ["surf", " ", 7], "other": 1}')
    assert parsed == {"titles": {"id": "Izin selancar"}, "keywords": {"en": ["surf", "7"]}}
