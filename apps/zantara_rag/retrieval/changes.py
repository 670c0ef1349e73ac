"""Noticing that the knowledge base changed, here or on another machine, and telling whoever keeps a copy.

Every write path records a change on the collection itself (`VectorStore.bump_version`: a new random marker
in the collection's metadata, written after the data). This is the one place in the service that notices:

- a write made by this process (the admin API, the folder watcher) calls `changed_here()`, which runs the
  callbacks at once, before the request that wrote returns;
- a write made elsewhere (another machine on the same Chroma server, `zantara-rag ingest` against the
  server) is noticed by `watch()`, which reads the token every `KNOWLEDGE_POLL_SECONDS` (one small metadata
  request) and runs the callbacks when it differs from the last one seen. With the default 2 s, another
  machine's write is seen within 2 s plus the time the callbacks take (docs/operations.md).

Callbacks are for in-process copies of the content (an index kept beside the vectors, a cache): vector
search itself always reads the store. A callback that fails is logged by type and does not stop the others;
the change then stays unseen, so the next check (every `KNOWLEDGE_POLL_SECONDS` in server mode) or the next
write runs the callbacks again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from .store import VectorStore

log = logging.getLogger(__name__)

Refresh = Callable[[], Awaitable[None] | None]


class KnowledgeChanges:
    """The knowledge base's change signal for this process: subscribe a refresh, it runs on every change."""

    def __init__(
        self,
        store: VectorStore,
        *,
        poll_seconds: float,
        on_refresh: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.seen = ""
        self._callbacks: list[Refresh] = []
        self._on_refresh = on_refresh  # metrics: called with "local" or "remote" after each refresh
        self._lock = asyncio.Lock()

    def subscribe(self, callback: Refresh) -> None:
        """Run `callback` (sync or async) after every change to the knowledge base, wherever it was made."""
        self._callbacks.append(callback)

    async def start(self) -> None:
        """Record the current version as seen (what the process loaded at start)."""
        self.seen = await asyncio.to_thread(self.store.version)

    async def changed_here(self, version: str) -> None:
        """A write of this process has landed and recorded `version`: refresh now."""
        await self._refresh(version, "local")

    async def check(self) -> bool:
        """Read the marker once; refresh when another process changed it. True when it had changed."""
        version = await asyncio.to_thread(self.store.version)
        if version == self.seen:
            return False
        await self._refresh(version, "remote")
        return True

    async def watch(self) -> None:
        """Poll the marker until cancelled (server mode: other machines write to the same store)."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The store is unreachable: chat says so on its own; try again at the next tick.
                log.warning("knowledge change check failed (%s)", type(exc).__name__)

    async def _refresh(self, version: str, origin: str) -> None:
        async with self._lock:
            if version == self.seen:
                return
            failed = False
            for callback in list(self._callbacks):
                try:
                    result = callback()
                    if inspect.isawaitable(result):
                        await result
                except Exception as exc:
                    failed = True
                    log.error("knowledge refresh failed (%s)", type(exc).__name__)
            if failed:
                return  # not seen: the next check (or write) runs every callback again
            self.seen = version
            log.info("knowledge base changed", extra={"fields": {"version": version, "origin": origin}})
            if self._on_refresh is not None:
                self._on_refresh(origin)
