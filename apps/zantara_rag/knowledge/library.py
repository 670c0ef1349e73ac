"""`Library`: the running service's knowledge base, and the one way this process writes to it.

The admin API and the folder watcher both go through here, one write at a time (an asyncio lock; the work
itself runs in a thread). A batch runs as a task of its own: a client that leaves mid-batch does not cut a
write in half, and the change is recorded (`VectorStore.bump_version`) and refreshed here
(`KnowledgeChanges.changed_here`) before the batch's result is returned, so that a 200 means searchable.

Every change is logged — who (the keyed hash of the admin's subject, or `watcher`), what (the document id,
the outcome, chunk counts), when (the line's `ts`) — and counted in metrics; never the content.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..metrics import Metrics
from ..retrieval.changes import KnowledgeChanges
from ..retrieval.embedder import Embedder
from ..retrieval.store import VectorStore
from ..settings import Settings
from .documents import UnreadableDocument
from .enrichment import Enricher
from .files import SkippedFile
from .ingest import IngestReport, doc_key, ingest_configured, remove_document, sync_bytes

log = logging.getLogger("zantara_rag.knowledge")


@dataclass
class Upload:
    """One file of a batch, already read, size-checked and sniffed; `rejected` says why it is not indexed."""

    key: str
    name: str
    data: bytes
    kind: str
    rejected: str | None = None


@dataclass
class Outcome:
    """One document's line in the answer to an upload."""

    id: str
    title: str
    status: str  # added | updated | unchanged | rejected
    chunks: int
    reason: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "chunks": self.chunks,
        }
        if self.reason is not None:
            body["reason"] = self.reason
        body.update(self.counts)
        return body


Progress = Callable[[int, Outcome], None]


class Library:
    """Writes (uploads, deletions, watched files) one at a time; lists what the store holds."""

    def __init__(
        self,
        settings: Settings,
        store: VectorStore,
        embedder: Embedder,
        changes: KnowledgeChanges,
        metrics: Metrics,
        enricher: Enricher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self.changes = changes
        self.metrics = metrics
        self.enricher = enricher  # bilingual titles and keywords a document lacks (knowledge/enrichment.py)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def upload(
        self, uploads: list[Upload], actor: str, progress: Progress | None = None
    ) -> list[Outcome]:
        """Sync each upload in turn; returns once every accepted one is searchable on this machine."""
        outcomes: list[Outcome] = await self._detached(self._upload(uploads, actor, progress))
        return outcomes

    async def delete(self, key: str, actor: str) -> bool:
        """Remove a document; False when there is none with that id."""
        return bool(await self._detached(self._delete(key, actor)))

    async def sync_files(self, changed: list[Path], gone: list[Path], actor: str = "watcher") -> IngestReport:
        """Sync files of the knowledge folder that changed, and drop the documents of files that are gone."""
        report: IngestReport = await self._detached(self._sync_files(changed, gone, actor))
        return report

    async def catalog(self) -> list[dict[str, Any]]:
        """Every document: id, title, language, chunks, when this version was indexed, its size in bytes."""
        metadatas = await asyncio.to_thread(self.store.all_metadatas)
        docs: dict[str, dict[str, Any]] = {}
        for meta in metadatas:
            key = str(meta.get("doc") or "")
            entry = docs.setdefault(
                key,
                {
                    "id": key,
                    "title": str(meta.get("title") or key),
                    "language": str(meta.get("language") or "") or None,
                    "chunks": 0,
                    "updated": None,
                    "bytes": None,
                },
            )
            entry["chunks"] += 1
            indexed = meta.get("indexed_at")
            if isinstance(indexed, str) and indexed > (entry["updated"] or ""):
                entry["updated"] = indexed
            if isinstance(meta.get("source_bytes"), int):
                entry["bytes"] = meta["source_bytes"]
        return [docs[k] for k in sorted(docs)]

    async def sweep(self) -> int:
        """At start: delete the superseded chunks a failed clean-up left behind (they are never retrieved)."""
        async with self._lock:
            ids = await asyncio.to_thread(self.store.superseded_ids)
            await asyncio.to_thread(self.store.delete, ids)
        if ids:
            log.info("deleted %d superseded chunks left by an interrupted write", len(ids))
        return len(ids)

    async def aclose(self, wait_seconds: float) -> None:
        """Let a write in progress finish (bounded): its thread cannot be stopped half-way anyway."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=wait_seconds)
        if self.enricher is not None:
            self.enricher.close()

    async def _detached(self, work: Any) -> Any:
        # The write goes on if the caller is cancelled (a client leaving): a half-run batch would have
        # written without recording the change.
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _upload(self, uploads: list[Upload], actor: str, progress: Progress | None) -> list[Outcome]:
        outcomes: list[Outcome] = []
        async with self._lock:
            wrote = False
            try:
                for upload in uploads:
                    outcome = await self._sync_one(upload, actor)
                    wrote = wrote or outcome.status in {"added", "updated"}
                    outcomes.append(outcome)
                    if progress is not None:
                        progress(len(outcomes), outcome)
            finally:
                if wrote:
                    await self._changed()
        return outcomes

    async def _sync_one(self, upload: Upload, actor: str) -> Outcome:
        started = time.perf_counter()
        if upload.rejected is not None:
            outcome = Outcome(upload.key, upload.name, "rejected", 0, upload.rejected)
        else:
            try:
                synced = await asyncio.to_thread(
                    sync_bytes,
                    upload.key,
                    upload.data,
                    upload.kind,
                    upload.name,
                    self.store,
                    self.embedder,
                    max_chars=self.settings.chunk_max_chars,
                    overlap=self.settings.chunk_overlap_chars,
                    max_pdf_pages=self.settings.ingest_max_pdf_pages,
                    enricher=self.enricher,
                )
            except (UnreadableDocument, SkippedFile) as exc:
                outcome = Outcome(upload.key, upload.name, "rejected", 0, _reason(exc))
            except Exception as exc:
                self._log(
                    actor, "failed", upload.key, {"bytes": len(upload.data), "error": type(exc).__name__}
                )
                raise
            else:
                report = synced.report
                counts = {k: getattr(report, k) for k in ("added", "updated", "removed", "unchanged")}
                outcome = Outcome(synced.key, synced.title, synced.status, synced.chunks, counts=counts)
                self.metrics.kb_chunks_embedded_total.inc(report.added + report.updated)
        seconds = time.perf_counter() - started
        self.metrics.kb_documents_total.labels(outcome.status).inc()
        self.metrics.kb_write_seconds.observe(seconds)
        fields: dict[str, Any] = {"bytes": len(upload.data), "chunks": outcome.chunks, **outcome.counts}
        if outcome.reason is not None:
            fields["reason"] = outcome.reason
        fields["ms"] = round(seconds * 1000, 1)
        self._log(actor, outcome.status, upload.key, fields)
        return outcome

    async def _delete(self, key: str, actor: str) -> bool:
        started = time.perf_counter()
        async with self._lock:
            removed = await asyncio.to_thread(remove_document, key, self.store)
            if removed:
                await self._changed()
        if removed:
            self.metrics.kb_documents_total.labels("deleted").inc()
            self.metrics.kb_write_seconds.observe(time.perf_counter() - started)
            self._log(actor, "deleted", key, {"chunks": removed})
        return removed > 0

    async def ingest_folder(
        self, folder: Path, *, prune: bool, stop: threading.Event | None = None
    ) -> IngestReport:
        """Sync a whole folder (the first-start ingestion, an upgrade), as the one writer: uploads and the
        watcher wait for it, and the change is recorded and refreshed here once it is done."""
        async with self._lock:
            report = await asyncio.to_thread(
                ingest_configured,
                [folder],
                self.store,
                self.embedder,
                self.settings,
                enricher=self.enricher,
                prune=prune,
                stop=stop,
            )
            if report.version is not None:
                await self.changes.changed_here(report.version)
        return report

    async def _sync_files(self, changed: list[Path], gone: list[Path], actor: str) -> IngestReport:
        root = self.settings.knowledge_path
        async with self._lock:
            report = IngestReport()
            files = [p for p in changed if p.is_file()]
            if files:
                report = await asyncio.to_thread(
                    ingest_configured, files, self.store, self.embedder, self.settings, enricher=self.enricher
                )
            removed_here = 0
            for path in gone:
                key = doc_key(path, root)
                removed = await asyncio.to_thread(remove_document, key, self.store)
                if removed:
                    removed_here += removed
                    self.metrics.kb_documents_total.labels("deleted").inc()
                    self._log(actor, "deleted", key, {"chunks": removed})
            report.removed += removed_here
            if report.version is not None or removed_here:
                self.metrics.kb_chunks_embedded_total.inc(report.added + report.updated)
                # `ingest` recorded its own change; deletions after it need one more.
                await self._changed(None if removed_here else report.version)
        if files and (report.added or report.updated):
            counts = {k: getattr(report, k) for k in ("added", "updated", "unchanged")}
            for path in files:
                self._log(actor, "synced", doc_key(path, root), counts)
        return report

    async def _changed(self, version: str | None = None) -> None:
        if version is None:
            version = await asyncio.to_thread(self.store.bump_version)
        await self.changes.changed_here(version)

    @staticmethod
    def _log(actor: str, action: str, key: str, fields: dict[str, Any]) -> None:
        log.info(
            "knowledge change",
            extra={"fields": {"actor": actor, "action": action, "document": key, **fields}},
        )


def _reason(exc: UnreadableDocument | SkippedFile) -> str:
    """The refusal without the file name the message starts with (the response names the document)."""
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text
