"""`KNOWLEDGE_WATCH=true`: the service syncs its knowledge folder itself when files change in it.

`watchfiles` (Rust `notify`: inotify on Linux) reports changes in batches, debounced; each batch goes
through the `Library` like an upload would, so writes stay one at a time and every machine notices. A file
that is gone removes its document. Hidden files, editors' swap files and READMEs are left alone, as the
ingestion does.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from watchfiles import Change, awatch

from .files import SKIPPED_NAMES, SUFFIXES
from .library import Library

log = logging.getLogger(__name__)


def wanted(path: Path, root: Path) -> bool:
    """A knowledge file the folder's ingestion would read."""
    try:
        parts = path.resolve().relative_to(root.resolve()).parts
    except ValueError:
        return False
    return (
        path.suffix.lower() in SUFFIXES
        and path.name.lower() not in SKIPPED_NAMES
        and not any(part.startswith(".") for part in parts)
    )


def split(changes: set[tuple[Change, str]], root: Path) -> tuple[list[Path], list[Path]]:
    """One batch of changes as (files to sync, files gone), in a stable order."""
    present: set[Path] = set()
    gone: set[Path] = set()
    for change, raw in changes:
        path = Path(raw)
        if not wanted(path, root):
            continue
        if change == Change.deleted and not path.exists():
            gone.add(path)
            present.discard(path)
        elif path.is_file():
            present.add(path)
            gone.discard(path)
    return sorted(present), sorted(gone)


async def watch_folder(library: Library, root: Path, stop: asyncio.Event, debounce_ms: int = 500) -> None:
    """Sync `root`'s changed files until `stop` is set."""
    log.info("watching %s for knowledge changes", root)
    async for changes in awatch(root, stop_event=stop, debounce=debounce_ms, recursive=True):
        changed, gone = split(changes, root)
        if not changed and not gone:
            continue
        try:
            await library.sync_files(changed, gone)
        except Exception as exc:
            log.error("syncing watched files failed (%s)", type(exc).__name__)
