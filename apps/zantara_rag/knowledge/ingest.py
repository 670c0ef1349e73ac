"""Ingestion: files → documents → chunks → vectors in the store, touching only what changed.

Chunk ids are positional and stable (`<doc hash>-<index>`); each chunk's metadata carries a hash of its
content. A re-run compares hashes and embeds only chunks that are new or changed, so re-ingesting an
unchanged knowledge base embeds nothing and writes nothing.

A document's key (its `id` in the sources event) does not depend on the folder named on the command line:
it is the path inside the knowledge root (`KNOWLEDGE_PATH`), prefixed with the root's name, so `ingest kb/`
and `ingest kb/visas` give one file one key. Files outside the root are keyed by their path relative to the
working directory (as git names files), or by their absolute path when outside that too.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..retrieval.embedder import Embedder
from ..retrieval.store import VectorStore
from ..settings import INGEST_MAX_FILE_BYTES, INGEST_MAX_PDF_PAGES
from .chunking import Chunk, chunk_document, content_hash
from .documents import Document, UnreadableDocument, load
from .enrichment import Enricher
from .files import SkippedFile, discover

log = logging.getLogger(__name__)


class IngestionStopped(Exception):
    """`stop` was set between two files (the service is shutting down); what was done so far stands."""


@dataclass
class IngestReport:
    files: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # `name (reason)`: links, non-regular, over a cap
    seconds: float = 0.0

    def summary(self) -> str:
        line = (
            f"{self.files} files: {self.added} chunks added, {self.updated} updated, "
            f"{self.removed} removed, {self.unchanged} unchanged in {self.seconds:.1f}s"
        )
        if self.failed:
            line += f" ({len(self.failed)} unreadable: {', '.join(self.failed)})"
        if self.skipped:
            line += f" ({len(self.skipped)} skipped: {', '.join(self.skipped)})"
        return line


def doc_key(path: Path, root: Path) -> str:
    """A document's identity (see the module docstring); `path` may be a file or a folder."""
    path, root = path.resolve(), root.resolve()
    if path.is_relative_to(root):
        return "/".join((root.name, *path.relative_to(root).parts))
    cwd = Path.cwd().resolve()
    if path.is_relative_to(cwd) and path != cwd:
        return path.relative_to(cwd).as_posix()
    return path.as_posix().lstrip("/")


def chunk_id(key: str, index: int) -> str:
    return f"{hashlib.sha1(key.encode()).hexdigest()[:12]}-{index:04d}"


def ingest(
    paths: list[Path],
    store: VectorStore,
    embedder: Embedder,
    *,
    root: Path,
    max_chars: int,
    overlap: int,
    prune: bool = False,
    progress: bool | None = None,
    on_file: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    max_file_bytes: int = INGEST_MAX_FILE_BYTES,
    max_pdf_pages: int = INGEST_MAX_PDF_PAGES,
    enricher: Enricher | None = None,
) -> IngestReport:
    """Sync the files under `paths` into the store; `root` is the knowledge root that keys are relative to.

    With `prune`, documents of the store under a folder of `paths` whose file is gone are removed. Raises
    `IngestionStopped` when `stop` is set (checked before each file). Links, non-regular files and files
    over `max_file_bytes` (or `max_pdf_pages`) are skipped and listed in the report (`knowledge.files`).
    With an `enricher`, a document whose front matter lacks its bilingual titles or keywords gets Claude's
    (knowledge/enrichment.py).
    """
    started = time.perf_counter()
    report = IngestReport()
    found = discover(paths)
    files = found.files
    report.skipped.extend(found.skipped)
    seen: set[str] = set()
    folders = [f"{doc_key(p, root)}/" for p in paths if p.is_dir()]

    iterator: Any = files
    show = progress if progress is not None else (sys.stderr.isatty() and len(files) > 20)
    if show:
        from tqdm import tqdm

        iterator = tqdm(files, unit="file", desc="ingesting", file=sys.stderr)

    for file in iterator:
        if stop is not None and stop.is_set():
            raise IngestionStopped()
        key = doc_key(file, root)
        try:
            document: Document | None = load(file, max_bytes=max_file_bytes, max_pdf_pages=max_pdf_pages)
        except SkippedFile as exc:  # not a document any more: `prune` removes what it used to hold
            report.skipped.append(f"{file.name} ({exc.reason})")
            continue
        except UnreadableDocument as exc:  # maybe a passing fault: what it held stays
            log.warning("skipping unreadable document %s", exc)
            report.failed.append(file.name)
            document = None
        seen.add(key)
        report.files += 1
        if document is None:
            continue
        if enricher is not None:
            document = enricher.enrich(document)
        chunks = chunk_document(document, max_chars, overlap)
        _sync_document(key, document, chunks, store, embedder, report)
        if on_file is not None:
            on_file(key)

    for skipped in report.skipped:
        log.warning("not ingested: %s", skipped)
    if prune:
        for gone in sorted(store.documents() - seen):
            if any(gone.startswith(folder) for folder in folders):
                existing = store.chunks_of(gone)
                store.delete(existing)
                report.removed += len(existing)
    if report.added or report.updated or report.removed:
        # Every machine's lexical index follows this marker (retrieval/mirror.py).
        store.bump_version()
    report.seconds = time.perf_counter() - started
    return report


def keywords_of(document: Document) -> str:
    """The document's keywords in every language, as one metadata string (indexed lexically)."""
    return "; ".join(k for _, listed in sorted(document.keywords.items()) for k in listed)


def _sync_document(
    key: str,
    document: Document,
    chunks: list[Chunk],
    store: VectorStore,
    embedder: Embedder,
    report: IngestReport,
) -> None:
    existing = store.chunks_of(key)
    ids, texts, metas = [], [], []
    wanted: set[str] = set()
    also = " / ".join(document.other_titles)
    keywords = keywords_of(document)
    for chunk in chunks:
        cid = chunk_id(key, chunk.index)
        wanted.add(cid)
        text = chunk.embedding_text(document.title, also)
        parts = [text, document.title, chunk.section, document.url, document.updated]
        # Appended only when present, so a chunk without keywords keeps the hash it had before they existed.
        digest = content_hash(*parts, *([keywords] if keywords else []))
        if existing.get(cid) == digest:
            report.unchanged += 1
            continue
        if cid in existing:
            report.updated += 1
        else:
            report.added += 1
        ids.append(cid)
        texts.append(text)
        metas.append(
            {
                "doc": key,
                "title": document.title,
                "section": chunk.section,
                "url": document.url or "",
                "updated": document.updated or "",
                "language": document.language or "",
                "chunk_index": chunk.index,
                "content_hash": digest,
                "keywords": keywords,
            }
        )
    if ids:
        store.upsert(ids, embedder.embed_passages(texts), texts, metas)
    stale = [cid for cid in existing if cid not in wanted]
    store.delete(stale)
    report.removed += len(stale)
