"""The collection's index format and version marker: ingestion moves the marker, a store built by the version
before issue #12 is upgraded on first start or refused with the command that rebuilds it."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

from zantara_rag.cli import main
from zantara_rag.errors import IndexOutdated
from zantara_rag.knowledge.ingest import ingest
from zantara_rag.retrieval.embedder import Embedder
from zantara_rag.retrieval.store import FORMAT_KEY, INDEX_FORMAT, VERSION_KEY, VectorStore
from zantara_rag.services import build_services, check_index_format, ingest_sample_if_empty
from zantara_rag.settings import DEFAULT_KNOWLEDGE_PATH, Settings

SAMPLE = ["overstay-fines.md", "bpjs-kesehatan.md"]
ENRICHMENT_KEYS = re.compile(r"^(title_[a-z]{2}|keywords_[a-z]{2}):.*\n", re.M)


def knowledge(tmp_path: Path, plain: bool = False) -> Path:
    root = tmp_path / ("plain" if plain else "enriched") / "knowledge"
    root.mkdir(parents=True)
    for name in SAMPLE:
        text = (DEFAULT_KNOWLEDGE_PATH / name).read_text(encoding="utf-8")
        (root / name).write_text(ENRICHMENT_KEYS.sub("", text) if plain else text, encoding="utf-8")
    return root


def old_store(tmp_path: Path, embedder: Embedder, *extra_docs: str) -> tuple[Settings, VectorStore]:
    """A store as the version before issue #12 left it: its chunk texts, no format, no version marker."""
    root = knowledge(tmp_path, plain=True)
    settings = Settings(chroma_path=tmp_path / "chroma", knowledge_path=knowledge(tmp_path))
    store = VectorStore.open(settings)
    ingest([root], store, embedder, root=root, max_chars=1200, overlap=150, progress=False)
    for doc in extra_docs:
        store.upsert([doc], [[1.0] + [0.0] * 383], ["An operator's own document"], [{"doc": doc}])
    metadata = {k: v for k, v in store.metadata().items() if k not in {FORMAT_KEY, VERSION_KEY}}
    store._collection.modify(metadata=metadata)
    return settings, VectorStore.open(settings)


def test_ingestion_moves_the_version_marker_only_when_chunks_change(
    tmp_path: Path, embedder: Embedder
) -> None:
    root = knowledge(tmp_path)
    store = VectorStore.open(Settings(chroma_path=tmp_path / "chroma"))
    assert store.index_format == INDEX_FORMAT and store.version() == ""
    ingest([root], store, embedder, root=root, max_chars=1200, overlap=150, progress=False)
    first = store.version()
    assert first
    ingest([root], store, embedder, root=root, max_chars=1200, overlap=150, progress=False)
    assert store.version() == first, "nothing changed"
    (root / SAMPLE[0]).unlink()
    ingest([root], store, embedder, root=root, max_chars=1200, overlap=150, prune=True, progress=False)
    assert store.version() != first


def test_chunks_carry_the_other_languages_title_and_the_keywords(tmp_path: Path, embedder: Embedder) -> None:
    root = knowledge(tmp_path)
    store = VectorStore.open(Settings(chroma_path=tmp_path / "chroma"))
    ingest([root], store, embedder, root=root, max_chars=1200, overlap=150, progress=False)
    got = store._collection.get(
        where={"doc": "knowledge/bpjs-kesehatan.md"}, include=["documents", "metadatas"]
    )
    assert all(
        t.startswith("BPJS Kesehatan: kepesertaan dan iuran — ")
        and "\nBPJS Kesehatan: national health insurance membership and contributions\n\n" in t
        for t in got["documents"]
    )
    assert all(
        "health insurance" in m["keywords"] and "asuransi kesehatan" in m["keywords"]
        for m in got["metadatas"]
    )


def test_an_old_store_of_the_knowledge_path_is_upgraded_on_first_start(
    tmp_path: Path, embedder: Embedder
) -> None:
    settings, store = old_store(tmp_path, embedder)
    assert store.index_format == 1 and store.count() > 0
    assert check_index_format(store, settings) is True

    async def start() -> None:
        services = await build_services(settings)
        try:
            assert services.upgrade
            await ingest_sample_if_empty(services)
            assert not services.upgrade and services.ingest_error is None
            assert services.store.index_format == INDEX_FORMAT
            assert services.mirror.index.version == services.store.version() != ""
            result = await services.retriever.retrieve("Is health insurance compulsory for my staff?")
            assert result.passages[0].doc == "knowledge/bpjs-kesehatan.md"
        finally:
            await services.aclose()

    asyncio.run(start())
    texts = VectorStore.open(settings)._collection.get(include=["documents"])["documents"]
    assert any("\nBPJS Kesehatan: national health insurance" in t for t in texts), (
        "re-ingested with enrichment"
    )


def test_an_old_store_with_other_documents_is_refused_with_the_command_to_run(
    tmp_path: Path, embedder: Embedder, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, store = old_store(tmp_path, embedder, "docs/extra/guide.md")
    with pytest.raises(IndexOutdated) as refused:
        check_index_format(store, settings)
    assert f"`zantara-rag ingest --reset {settings.knowledge_path} docs/extra`" in refused.value.message
    # Nothing was changed by the refusal.
    assert VectorStore.open(settings).index_format == 1
    with pytest.raises(IndexOutdated):
        asyncio.run(build_services(settings))
    # Without AUTO_INGEST the service does not upgrade either: refused.
    only_sample = Settings(chroma_path=tmp_path / "chroma2", knowledge_path=settings.knowledge_path)
    shutil.copytree(tmp_path / "chroma", tmp_path / "chroma2")
    VectorStore.open(only_sample).delete(["docs/extra/guide.md"])
    assert check_index_format(VectorStore.open(only_sample), only_sample) is True
    with pytest.raises(IndexOutdated):
        check_index_format(
            VectorStore.open(only_sample), only_sample.model_copy(update={"auto_ingest": False})
        )


def test_cli_ingest_refuses_an_old_store_unless_reset(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, _ = old_store(tmp_path, embedder)
    monkeypatch.setenv("CHROMA_PATH", str(settings.chroma_path))
    monkeypatch.setenv("KNOWLEDGE_PATH", str(settings.knowledge_path))
    assert main(["ingest", "--no-progress", str(settings.knowledge_path)]) == 2
    err = capsys.readouterr().err
    assert "earlier version of zantara-rag (index format 1" in err and "zantara-rag ingest --reset" in err
    assert main(["ingest", "--no-progress", "--reset", str(settings.knowledge_path)]) == 0
    assert VectorStore.open(settings).index_format == INDEX_FORMAT


def test_an_empty_old_collection_is_simply_marked_current(tmp_path: Path) -> None:
    settings = Settings(chroma_path=tmp_path / "chroma")
    store = VectorStore.open(settings)
    store._collection.modify(metadata={k: v for k, v in store.metadata().items() if k != FORMAT_KEY})
    assert store.index_format == 1
    assert check_index_format(store, settings) is False and store.index_format == INDEX_FORMAT
