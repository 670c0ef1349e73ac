"""Ingestion with the real embedder and a real embedded Chroma: idempotence, changes, prune, formats."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.admin import pdf
from tests.harness import ROOT, ServerProcess, base_env
from zantara_rag.errors import EmbeddingModelMismatch
from zantara_rag.knowledge.chunking import split_text
from zantara_rag.knowledge.documents import load, split_markdown
from zantara_rag.knowledge.ingest import ingest
from zantara_rag.retrieval.embedder import Embedder
from zantara_rag.retrieval.store import VectorStore, connect
from zantara_rag.settings import DEFAULT_EMBEDDING_MODEL, Settings

DOC = """---
title: Test visa
url: https://balizero.com/kb/test
updated: 2026-01-01
language: en
---
# Test visa

## Fees
The test visa costs IDR 2,000,000 and lasts 60 days.

## Sponsor
A local sponsor is required.
"""


def minimal_pdf(lines: list[str]) -> bytes:
    """A valid one-page PDF with Helvetica text, written by hand (no PDF library writes text)."""
    return pdf([lines])


def run(root: Path, store: VectorStore, embedder: Embedder, prune: bool = False):  # type: ignore[no-untyped-def]
    return ingest([root], store, embedder, root=root, max_chars=400, overlap=60, prune=prune, progress=False)


def test_reingesting_unchanged_files_embeds_and_changes_nothing(tmp_path: Path, store, embedder) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    (root / "visa.md").write_text(DOC)
    (root / "notes.txt").write_text("Office notes\n\nNyepi closes the airport for 24 hours every year.")
    first = run(root, store, embedder)
    assert (first.files, first.added, first.updated, first.removed) == (
        2,
        first.added,
        0,
        0,
    ) and first.added >= 3
    before = store._collection.get(include=["documents", "metadatas", "embeddings"])
    again = run(root, store, embedder)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, first.added)
    after = store._collection.get(include=["documents", "metadatas", "embeddings"])
    assert before["ids"] == after["ids"] and before["documents"] == after["documents"]
    assert before["metadatas"] == after["metadatas"]


def test_changed_file_replaces_its_chunks_and_prune_removes_gone_files(
    tmp_path: Path, store, embedder
) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    (root / "visa.md").write_text(DOC)
    (root / "other.md").write_text("---\ntitle: Other\n---\n## A\nSomething about BPJS contributions.\n")
    run(root, store, embedder)
    (root / "visa.md").write_text(
        DOC.replace("IDR 2,000,000", "IDR 3,500,000").replace(
            "## Sponsor\nA local sponsor is required.\n", ""
        )
    )
    changed = run(root, store, embedder)
    assert changed.updated == 1 and changed.removed == 1 and changed.added == 0
    texts = store._collection.get(where={"doc": "kb/visa.md"})["documents"]
    assert any("3,500,000" in t for t in texts) and not any("2,000,000" in t for t in texts)
    (root / "other.md").unlink()
    kept = run(root, store, embedder)
    assert kept.removed == 0 and "kb/other.md" in store.documents(), "without --prune nothing is removed"
    pruned = run(root, store, embedder, prune=True)
    assert pruned.removed == 1 and store.documents() == {"kb/visa.md"}


def test_chunk_metadata(tmp_path: Path, store, embedder) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    (root / "visa.md").write_text(DOC)
    run(root, store, embedder)
    got = store._collection.get(include=["metadatas", "documents"])
    metas = sorted(got["metadatas"], key=lambda m: m["chunk_index"])
    assert [m["section"] for m in metas] == ["Test visa > Fees", "Test visa > Sponsor"]
    assert {m["title"] for m in metas} == {"Test visa"}
    assert {m["url"] for m in metas} == {"https://balizero.com/kb/test"}
    assert {m["updated"] for m in metas} == {"2026-01-01"}
    assert {m["doc"] for m in metas} == {"kb/visa.md"} and "path" not in metas[0]
    assert all(d.startswith("Test visa — Test visa > ") for d in got["documents"])


def test_html_and_pdf_inputs(tmp_path: Path, store, embedder) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    (root / "page.html").write_text(
        "<html lang='id'><head><title>Panduan SIM</title><script>alert(1)</script></head><body>"
        "<nav>menu</nav><h2>Syarat</h2><p>Pemegang KITAS dapat mengajukan SIM A di Polresta.</p>"
        "<ul><li>Paspor</li><li>KITAS</li></ul></body></html>"
    )
    (root / "brochure.pdf").write_bytes(minimal_pdf(["Golden visa for investors", "Stay up to ten years"]))
    report = run(root, store, embedder)
    assert report.files == 2 and not report.failed
    html = load(root / "page.html")
    assert html.title == "Panduan SIM" and html.language == "id"
    assert html.sections[0].heading == "Syarat" and "alert" not in html.sections[0].text
    pdf = load(root / "brochure.pdf")
    assert pdf.title == "Golden visa brochure" and "ten years" in pdf.sections[0].text
    hits = store.query(embedder.embed(["golden visa ten years"])[0], 1)
    assert hits[0].metadata["title"] == "Golden visa brochure" and hits[0].metadata["section"] == "Page 1"


def test_unreadable_file_is_reported_and_the_rest_ingested(tmp_path: Path, store, embedder) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    (root / "ok.md").write_text(DOC)
    report = run(root, store, embedder)
    assert report.failed == ["broken.pdf"] and report.added >= 2
    assert "1 unreadable: broken.pdf" in report.summary()


def test_headings_bound_chunks_and_long_sections_split_with_overlap() -> None:
    sections = split_markdown("# T\n\nintro\n\n## A\none\n```\n# not a heading\n```\n### B\ntwo\n## C\nthree")
    assert [s.heading for s in sections] == ["T", "T > A", "T > A > B", "T > C"]
    assert "# not a heading" in sections[1].text
    sentences = " ".join(f"Sentence number {i} has some words." for i in range(60))
    pieces = split_text(sentences, 300, 60)
    assert len(pieces) > 5 and all(len(p) <= 300 for p in pieces)
    for prev, nxt in itertools.pairwise(pieces):
        assert nxt.split(".")[0] in prev, "each piece starts with the end of the previous one"


def test_model_mismatch_is_refused_with_reindex_instructions(tmp_path: Path) -> None:
    client = connect(Settings(chroma_path=tmp_path / "c"))
    VectorStore(client, "kb-x", DEFAULT_EMBEDDING_MODEL)
    with pytest.raises(EmbeddingModelMismatch, match="zantara-rag ingest --reset"):
        VectorStore(client, "kb-x", "intfloat/multilingual-e5-small")
    # --reset rebuilds it for the new model
    assert VectorStore.reset(client, "kb-x", "intfloat/multilingual-e5-small").count() == 0


def test_server_refuses_to_boot_on_a_collection_built_by_another_model(kb_template: Path) -> None:
    server = ServerProcess(kb_template, EMBEDDING_MODEL="all-MiniLM-L6-v2")
    try:
        server.start(wait=None)
        assert server.wait(timeout=120) != 0
        logs = server.logs()
        assert "zantara-rag ingest --reset" in logs and "Traceback" not in logs
    finally:
        server.cleanup()


@pytest.mark.slow  # starts the CLI as a subprocess
def test_cli_ingest_prints_a_summary_and_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    (root / "visa.md").write_text(DOC)
    env = base_env(CHROMA_PATH=tmp_path / "chroma")
    cmd = [sys.executable, "-m", "zantara_rag.cli", "ingest", str(root)]
    first = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    assert first.stdout.strip().startswith("1 files: 2 chunks added, 0 updated, 0 removed, 0 unchanged in ")
    second = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    assert "0 chunks added, 0 updated, 0 removed, 2 unchanged" in second.stdout
    missing = subprocess.run(
        [*cmd[:-1], str(tmp_path / "nope")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr


@pytest.mark.slow  # starts the CLI as a subprocess
def test_impossible_settings_refuse_to_boot_naming_the_variable() -> None:
    for env, var in (
        ((("PORT", "70000"),), "PORT"),
        ((("SOURCES_TOP_K", "9"), ("RETRIEVAL_TOP_K", "4")), "SOURCES_TOP_K"),
        ((("MIN_RELEVANCE_ID", "2.5"),), "MIN_RELEVANCE_ID"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "zantara_rag.cli", "serve"],
            env=base_env(**dict(env)),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2 and var in out.stderr, out.stderr


def test_stop_ends_ingestion_between_files(tmp_path: Path, store, embedder) -> None:
    from zantara_rag.knowledge.ingest import IngestionStopped

    root = tmp_path / "kb"
    root.mkdir()
    for n in range(4):
        (root / f"doc-{n}.md").write_text(f"# Doc {n}\n\nFact number {n} about the KITAS.\n")
    stop = threading.Event()
    synced: list[str] = []

    def after_file(key: str) -> None:
        synced.append(key)
        if len(synced) == 2:
            stop.set()  # as the shutdown does, from another thread, while a file is being synced

    with pytest.raises(IngestionStopped):
        ingest([root], store, embedder, root=root, max_chars=400, overlap=60, on_file=after_file, stop=stop)
    assert store.documents() == {"kb/doc-0.md", "kb/doc-1.md"}, "nothing is written after the stop"


async def test_an_interrupted_first_start_ingestion_is_carried_on_at_the_next_start(tmp_path: Path) -> None:
    from zantara_rag.services import SAMPLE_INGESTION_UNFINISHED, build_services, ingest_sample_if_empty

    root = tmp_path / "kb"
    root.mkdir()
    for n in range(3):
        (root / f"doc-{n}.md").write_text(f"# Doc {n}\n\nFact number {n} about the KITAS.\n")
    settings = Settings(chroma_path=tmp_path / "chroma", knowledge_path=root, anthropic_api_key=None)

    first = await build_services(settings)
    first.stop_ingestion.set()  # the shutdown came before the first file
    await ingest_sample_if_empty(first)
    assert first.store.count() == 0 and first.store.flag(SAMPLE_INGESTION_UNFINISHED)
    await first.aclose()

    second = await build_services(settings)
    await ingest_sample_if_empty(second)
    assert second.store.documents() == {f"kb/doc-{n}.md" for n in range(3)}
    assert not second.store.flag(SAMPLE_INGESTION_UNFINISHED)
    await second.aclose()

    # A finished knowledge base is left alone by later starts, even after a document is removed from it.
    third = await build_services(settings)
    third.store.delete(third.store.chunks_of("kb/doc-0.md"))
    await ingest_sample_if_empty(third)
    assert "kb/doc-0.md" not in third.store.documents()
    await third.aclose()
