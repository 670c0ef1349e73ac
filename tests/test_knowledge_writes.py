"""Writing the knowledge base: one step per version (a failure half-way keeps the previous version), the
change signal seen by another handle of the store, the one-writer lock, sniffing by content, the CLI.

Real embedded Chroma and the real embedder throughout; the failures are injected by wrapping the real
embedder and store and failing one call, the way a model or a store fails in production.
"""

from __future__ import annotations

import asyncio
import io
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.admin import ADMIN_SECRET, PNG, QUOKKA, brochure, pdf
from zantara_rag import cli
from zantara_rag.errors import StoreBusy
from zantara_rag.http.auth import verify_token
from zantara_rag.knowledge.ingest import sync_bytes
from zantara_rag.knowledge.sniffing import UnsupportedContent, sniff
from zantara_rag.retrieval.changes import KnowledgeChanges
from zantara_rag.retrieval.embedder import Embedder
from zantara_rag.retrieval.store import SUPERSEDED, VectorStore, connect
from zantara_rag.retrieval.writer_lock import WriterLock
from zantara_rag.settings import DEFAULT_EMBEDDING_MODEL, Settings

KEY = "uploads/brochure.pdf"


def write(store: Any, embedder: Any, data: bytes, kind: str = "pdf") -> Any:
    return sync_bytes(KEY, data, kind, "brochure.pdf", store, embedder, max_chars=400, overlap=60)


def snapshot(store: VectorStore) -> dict[str, Any]:
    got = store._collection.get(include=["documents", "metadatas"])
    return dict(zip(got["ids"], zip(got["documents"], got["metadatas"], strict=True), strict=True))


def live_texts(store: VectorStore) -> list[str]:
    return [text for text, meta in snapshot(store).values() if not meta.get(SUPERSEDED)]


class FailingEmbedder:
    """The real embedder, failing on its `fail_on`-th call (a model crash half-way through a document)."""

    def __init__(self, real: Embedder, fail_on: int) -> None:
        self.real, self.fail_on, self.calls = real, fail_on, 0

    def embed_passages(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("embedding failed")
        return self.real.embed_passages(texts)


class FailingStore:
    """The real store, failing one named method (the store going away at that moment)."""

    def __init__(self, real: VectorStore, method: str) -> None:
        self.real, self.method, self.failed = real, method, 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.real, name)
        if name != self.method:
            return attribute

        def fail(*args: Any, **kwargs: Any) -> Any:
            self.failed += 1
            raise ConnectionError("store went away")

        return fail


def two_versions() -> tuple[bytes, bytes]:
    old = brochure(10)
    new = pdf(
        [[f"New brochure page {n}: the platypus fee is now IDR 99,999 per applicant."] for n in range(1, 6)]
    )
    return old, new


# --- one step per version


def test_an_embedding_failure_half_way_leaves_the_previous_version(
    store: VectorStore, embedder: Embedder
) -> None:
    old, new = two_versions()
    first = write(store, embedder, old)
    assert first.status == "added" and first.chunks > 16  # more than one embedding slice
    before = snapshot(store)
    version = store.version()

    failing = FailingEmbedder(embedder, fail_on=2)
    with pytest.raises(RuntimeError):
        write(store, failing, brochure(10).replace(b"general conditions", b"special conditions"))
    assert failing.calls == 2  # the second slice failed, after the first had been embedded
    assert snapshot(store) == before and store.version() == version

    with pytest.raises(RuntimeError):
        write(store, FailingEmbedder(embedder, fail_on=1), new)
    assert snapshot(store) == before


def test_a_store_failure_on_the_write_leaves_the_previous_version(
    store: VectorStore, embedder: Embedder
) -> None:
    old, new = two_versions()
    write(store, embedder, old)
    before = snapshot(store)
    failing = FailingStore(store, "upsert")
    with pytest.raises(ConnectionError):
        write(failing, embedder, new)
    assert failing.failed == 1
    assert snapshot(store) == before
    assert any("13,131,313" in t for t in live_texts(store))


def test_a_failed_cleanup_leaves_the_new_version_whole_and_the_old_chunks_unretrievable(
    store: VectorStore, embedder: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = two_versions()
    write(store, embedder, old)
    failing = FailingStore(store, "delete")
    with caplog.at_level(logging.WARNING):
        result = write(failing, embedder, new)
    assert result.status == "updated" and failing.failed == 1
    assert any("left for later (ConnectionError)" in r.getMessage() for r in caplog.records)
    texts = live_texts(store)
    assert len(texts) == result.chunks and all("99,999" in t for t in texts)
    assert store.superseded_ids(), "the old chunks are still stored, marked superseded"
    # No query returns them: ask for the old fact, get only the new version back.
    hits = store.query(embedder.embed(["golden visa platypus fee 13,131,313"])[0], 50)
    assert hits and all("99,999" in h.text for h in hits)
    # The next write of the document deletes them.
    again = write(store, embedder, new.replace(b"99,999", b"88,888"))
    assert again.status == "updated" and store.superseded_ids() == []
    assert all(not m.get(SUPERSEDED) for _, m in snapshot(store).values())


def test_every_chunk_of_a_version_carries_that_version(store: VectorStore, embedder: Embedder) -> None:
    old = brochure(10)
    write(store, embedder, old)
    # One page changes: only its chunks are embedded again, but every chunk is rewritten with the new origin.
    changed = old.replace(b"13,131,313", b"31,313,131")
    result = write(store, embedder, changed)
    assert result.status == "updated" and 0 < result.report.updated < result.chunks
    hashes = {m["source_hash"] for _, m in snapshot(store).values()}
    assert len(hashes) == 1
    assert write(store, embedder, changed).status == "unchanged"


# --- the change signal


async def test_another_handle_of_the_store_notices_a_change_once(tmp_path: Path, embedder: Embedder) -> None:
    settings = Settings(chroma_path=tmp_path / "chroma")
    here = VectorStore(connect(settings), "test-kb", DEFAULT_EMBEDDING_MODEL)
    elsewhere = VectorStore(connect(settings), "test-kb", DEFAULT_EMBEDDING_MODEL)
    origins: list[str] = []
    changes = KnowledgeChanges(here, poll_seconds=0.05, on_refresh=origins.append)
    calls: list[int] = []
    changes.subscribe(lambda: calls.append(here.count()))
    await changes.start()
    assert await changes.check() is False

    write(elsewhere, embedder, QUOKKA.encode(), "markdown")
    elsewhere.bump_version()
    watcher = asyncio.create_task(changes.watch())
    try:
        for _ in range(100):
            if calls:
                break
            await asyncio.sleep(0.02)
    finally:
        watcher.cancel()
    assert calls == [here.count()] and calls[0] > 0 and origins == ["remote"]
    assert await changes.check() is False  # seen once, not again


async def test_a_refresh_that_failed_is_run_again_at_the_next_check(store: VectorStore) -> None:
    changes = KnowledgeChanges(store, poll_seconds=60)
    outcomes = iter([RuntimeError("the store blinked"), None])
    calls: list[int] = []

    def refresh() -> None:
        calls.append(1)
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    changes.subscribe(refresh)
    await changes.start()
    store.bump_version()
    assert await changes.check() is True and len(calls) == 1  # failed: the change is not marked seen
    assert await changes.check() is True and len(calls) == 2  # run again, and now it held
    assert await changes.check() is False and len(calls) == 2


def test_the_marker_survives_the_other_collection_flags(store: VectorStore) -> None:
    token = store.bump_version()
    store.set_flag("sample_ingestion_unfinished", True)
    store.set_flag("sample_ingestion_unfinished", False)
    assert store.version() == token and store.bump_version() != token


# --- one writer


def test_a_second_writer_of_an_embedded_store_is_refused_until_the_first_leaves(tmp_path: Path) -> None:
    first = WriterLock(tmp_path).acquire("zantara-rag serve")
    with pytest.raises(StoreBusy) as refused:
        WriterLock(tmp_path).acquire("zantara-rag ingest")
    assert "--server" in refused.value.message
    first.release()
    WriterLock(tmp_path).acquire("zantara-rag ingest").release()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("CHROMA_PATH", str(tmp_path / "chroma"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "quokka.md").write_text(QUOKKA, encoding="utf-8")
    monkeypatch.setenv("KNOWLEDGE_PATH", str(tmp_path / "kb"))
    root = logging.getLogger()
    handlers, level, converter = root.handlers[:], root.level, logging.Formatter.converter
    try:
        yield tmp_path
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.Formatter.converter = converter  # type: ignore[method-assign]


def test_cli_ingest_refuses_a_store_a_service_holds_and_names_server(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with WriterLock(cli_env / "chroma").acquire("zantara-rag serve"):
        assert cli.main(["ingest", "--no-progress", "kb"]) == 2
    err = capsys.readouterr().err
    assert "--server" in err and "running service" in err
    assert cli.main(["ingest", "--no-progress", "kb"]) == 0  # nobody holds it: works as before
    assert capsys.readouterr().out.startswith("1 files: ")


def test_cli_ingest_server_needs_a_token(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ingest", "--server", "http://127.0.0.1:9", "kb"]) == 2
    assert "admin token" in capsys.readouterr().err
    assert cli.main(["ingest", "--server", "http://127.0.0.1:9", "--token", "t", "kb"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_cli_token_admin_carries_the_admin_scope(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_SECRET", ADMIN_SECRET)
    assert cli.main(["token", "--sub", "ops@balizero.com", "--admin", "--ttl", "15m"]) == 0
    minted = capsys.readouterr().out.strip()
    assert jwt.decode(minted, ADMIN_SECRET, algorithms=["HS256"], audience="zantara-rag")["scope"] == "admin"
    assert verify_token(Settings(auth_secret=ADMIN_SECRET), minted).scopes == frozenset({"admin"})
    assert cli.main(["token", "--sub", "made@balizero.com"]) == 0
    plain = capsys.readouterr().out.strip()
    assert "scope" not in jwt.decode(plain, ADMIN_SECRET, algorithms=["HS256"], audience="zantara-rag")


# --- sniffing: by content, not by name


def docx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<document/>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "name", "kind"),
    [
        (QUOKKA.encode(), "quokka.md", "markdown"),
        (QUOKKA.encode(), "quokka.txt", "markdown"),  # front matter and headings: markdown whatever its name
        (b"Office notes\nNyepi closes the airport.", "notes.txt", "text"),
        (b"BMW service hours: 8 to 5.", "hours.bmp", "text"),  # starts like a BMP signature; is text
        (b"\xef\xbb\xbf<!DOCTYPE html><html><body><p>x</p></body></html>", "page.md", "html"),
        (b"<html lang='id'><body>x</body></html>", "page", "html"),
        (brochure(1), "brochure.txt", "pdf"),
        ("Biaya visa: Rp 1.000.000 — berlaku 60 hari.".encode(), "biaya", "text"),
    ],
)
def test_sniffing_goes_by_content(data: bytes, name: str, kind: str) -> None:
    assert sniff(data, name) == kind


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (PNG, "image/png"),
        (docx(), "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        (b"\x7fELF\x02\x01\x01" + bytes(60), "application/x-executable"),
        ("Visa".encode("utf-16"), None),
        (b"text\x00with a NUL", None),
        (bytes(range(1, 9)) * 100, None),
    ],
)
def test_sniffing_refuses_what_is_not_text_html_or_pdf(data: bytes, detected: str | None) -> None:
    with pytest.raises(UnsupportedContent) as refused:
        sniff(data, "innocent.md")
    assert refused.value.detected == detected
