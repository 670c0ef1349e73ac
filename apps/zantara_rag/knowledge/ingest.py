"""Ingestion: files → documents → chunks → vectors in the store, touching only what changed.

Chunk ids are positional and stable (`<doc hash>-<index>`); each chunk's metadata carries a hash of its
content. A re-run compares hashes and embeds only chunks that are new or changed, so re-ingesting an
unchanged knowledge base embeds nothing and writes nothing.

A new version of a document is written in one step, so a failure halfway leaves the previous version in
place, never a mix: the document is parsed, chunked and every new or changed chunk embedded before anything
is written; then one upsert carries the whole new version (unchanged chunks with their stored vectors, so
every chunk says which version it belongs to) together with the old version's left-over chunks marked
`superseded`, which no query returns. Chroma applies one upsert as one log entry: either all of it lands or
none. The superseded chunks are deleted right after; if that fails they stay invisible and are deleted by the
next write of the document or the next start. After writing, a write path records the change on the
collection (`VectorStore.bump_version`), which every service notices (`retrieval.changes`): every machine's
lexical index follows it (retrieval/mirror.py).

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..retrieval.embedder import Embedder
from ..retrieval.store import SUPERSEDED, VectorStore
from ..settings import INGEST_MAX_FILE_BYTES, INGEST_MAX_PDF_PAGES, Settings
from .chunking import Chunk, chunk_document, content_hash
from .documents import Document, UnreadableDocument, load, parse
from .enrichment import Enricher
from .files import SkippedFile, discover

# Chunks embedded per call: the embedder serves questions on the same model, one call at a time, so a long
# document is embedded in slices that questions can slip between.
EMBED_SLICE = 16

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
    version: str | None = None  # the change marker recorded after writing, when anything was written

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
        # The bytes' digest is what lets an upload of the same file skip parsing; here the chunks' own
        # hashes decide, and the file is not read a second time.
        origin = Origin("", file.stat().st_size)
        _sync_document(key, document, chunks, store, embedder, report, origin)
        if on_file is not None:
            on_file(key)

    for skipped in report.skipped:
        log.warning("not ingested: %s", skipped)
    if prune:
        for gone in sorted(store.documents() - seen):
            if any(gone.startswith(folder) for folder in folders):
                report.removed += remove_document(gone, store)
    if report.added or report.updated or report.removed:
        # Every machine's lexical index follows this marker (retrieval/mirror.py, retrieval/changes.py).
        report.version = store.bump_version()
    report.seconds = time.perf_counter() - started
    return report


def ingest_configured(
    paths: list[Path],
    store: VectorStore,
    embedder: Embedder,
    settings: Settings,
    *,
    enricher: Enricher | None,
    prune: bool = False,
    progress: bool | None = False,
    stop: threading.Event | None = None,
) -> IngestReport:
    """`ingest` with the settings' knowledge root, chunking and caps: how the service and the CLI call it."""
    return ingest(
        paths,
        store,
        embedder,
        root=settings.knowledge_path,
        max_chars=settings.chunk_max_chars,
        overlap=settings.chunk_overlap_chars,
        max_file_bytes=settings.ingest_max_file_bytes,
        max_pdf_pages=settings.ingest_max_pdf_pages,
        prune=prune,
        progress=progress,
        stop=stop,
        enricher=enricher,
    )


@dataclass(frozen=True, slots=True)
class Origin:
    """The file a version of a document came from: a digest of its bytes (and the chunking), its size."""

    digest: str
    size: int


def source_digest(data: bytes, max_chars: int, overlap: int) -> str:
    """Same bytes chunked the same way: the same digest, and nothing to do."""
    return hashlib.sha256(b"%d:%d:" % (max_chars, overlap) + data).hexdigest()[:32]


@dataclass
class Synced:
    """One document's outcome: `added`, `updated` or `unchanged`, with its chunk counts."""

    key: str
    title: str
    status: str
    chunks: int
    report: IngestReport


class DocumentTooLarge(UnreadableDocument):
    """More chunks than the store takes in one write (a version is written in one step)."""


def sync_bytes(
    key: str,
    data: bytes,
    kind: str,
    name: str,
    store: VectorStore,
    embedder: Embedder,
    *,
    max_chars: int,
    overlap: int,
    max_pdf_pages: int = INGEST_MAX_PDF_PAGES,
    enricher: Enricher | None = None,
) -> Synced:
    """Sync one document from bytes already read and checked (an upload), under `key`.

    The same bytes as the stored version cost one metadata read: nothing is parsed, embedded or written.
    Raises `UnreadableDocument` (nothing written; `SkippedFile` for a PDF over `max_pdf_pages`). Does not
    record the change: the caller does, once.
    """
    origin = Origin(source_digest(data, max_chars, overlap), len(data))
    current = store.metadatas_of(key)
    report = IngestReport(files=1)
    if current and all(m.get("source_hash") == origin.digest and not m.get(SUPERSEDED) for m in current):
        report.unchanged = len(current)
        return Synced(key, str(current[0].get("title") or key), "unchanged", len(current), report)
    document = parse(data, kind, name, max_pdf_pages=max_pdf_pages)
    if enricher is not None:
        document = enricher.enrich(document)
    chunks = chunk_document(document, max_chars, overlap)
    if not chunks:
        raise UnreadableDocument(f"{name}: no text")
    wrote = _sync_document(key, document, chunks, store, embedder, report, origin)
    status = "added" if not current else "updated" if wrote else "unchanged"
    return Synced(key, document.title, status, len(chunks), report)


def remove_document(key: str, store: VectorStore) -> int:
    """Delete every chunk of one document in one step; the number of chunks removed."""
    existing = store.chunks_of(key)
    store.delete(existing)
    return len(existing)


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
    origin: Origin,
) -> bool:
    """Write the new version of one document in one step (see the module docstring); False if unchanged."""
    existing = store.chunks_of(key)
    indexed_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    also = " / ".join(document.other_titles)
    keywords = keywords_of(document)
    ids: list[str] = []
    texts: list[str] = []
    metas: list[dict[str, Any]] = []
    changed: list[int] = []
    for chunk in chunks:
        cid = chunk_id(key, chunk.index)
        text = chunk.embedding_text(document.title, also)
        parts = [text, document.title, chunk.section, document.url, document.updated]
        # Appended only when present, so a chunk without keywords keeps the hash it had before they existed.
        digest = content_hash(*parts, *([keywords] if keywords else []))
        if existing.get(cid) != digest:
            changed.append(len(ids))
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
                "source_hash": origin.digest,
                "source_bytes": origin.size,
                "indexed_at": indexed_at,
            }
        )
    stale = [cid for cid in existing if cid not in set(ids)]
    for i in changed:
        if ids[i] in existing:
            report.updated += 1
        else:
            report.added += 1
    report.unchanged += len(ids) - len(changed)
    report.removed += len(stale)
    if not changed and not stale:
        return False
    if len(ids) + len(stale) > store.max_batch():
        raise DocumentTooLarge(f"{key}: {len(ids)} chunks, more than one write can carry")

    # Everything that can fail slowly happens before the first write: embedding, reading stored vectors.
    vectors: dict[int, list[float]] = {}
    for start in range(0, len(changed), EMBED_SLICE):
        part = changed[start : start + EMBED_SLICE]
        for i, vector in zip(part, embedder.embed_passages([texts[i] for i in part]), strict=True):
            vectors[i] = vector
    kept = store.records([cid for i, cid in enumerate(ids) if i not in vectors])
    old = store.records(stale)
    all_ids: list[str] = []
    all_vectors: list[list[float]] = []
    all_texts: list[str] = []
    all_metas: list[dict[str, Any]] = []
    for i, cid in enumerate(ids):
        all_ids.append(cid)
        all_vectors.append(vectors[i] if i in vectors else kept[cid][0])
        all_texts.append(texts[i])
        all_metas.append(metas[i])
    for cid, (vector, text, meta) in old.items():
        all_ids.append(cid)
        all_vectors.append(vector)
        all_texts.append(text)
        all_metas.append({**meta, SUPERSEDED: True})
    store.upsert(all_ids, all_vectors, all_texts, all_metas)  # the one step: the new version, whole
    try:
        store.delete(stale)
    except Exception as exc:
        log.warning("superseded chunks of %s left for later (%s)", key, type(exc).__name__)
    return True
