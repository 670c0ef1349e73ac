"""`TurnRecorder`: each finished answer is written once, after its stream has ended, off the answer's path.

The stream's terminal append calls `finished` (the hub's end-of-stream hook), which only queues a record:
the done event is already in the stream, and its readers were woken before the hook ran, so they send it
first. One writer task takes the queue in batches, one transaction each. A database that fails or does not
answer costs the turns in that batch (an error line and `zantara_turns_lost_total` say how many), never an
answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from ..domain import FinishedStream, milliseconds, stream_timings
from ..metrics import Metrics
from .storage import ConversationStore, TurnRecord

log = logging.getLogger(__name__)

BATCH = 100
# Finished turns waiting for the writer: beyond this (a database that has stopped answering), turns are lost.
MAX_QUEUED = 10_000


@dataclass(frozen=True, slots=True)
class Draft:
    """What is known of a turn when its stream starts; the stream's end adds the answer."""

    conversation_id: str
    owner: str | None
    question: str
    asked_at: datetime
    enforced: bool = False  # authentication on: the turn goes only into a conversation of its owner


class TurnRecorder:
    """Drafts of the answers in flight, by stream tag (the keyed hash of its id), and the writer that stores
    them once they end."""

    def __init__(self, store: ConversationStore, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self.ready = False  # set once the schema is migrated; until then turns are lost (and logged)
        self._drafts: dict[str, Draft] = {}
        self._queue: asyncio.Queue[tuple[TurnRecord, float]] = asyncio.Queue(MAX_QUEUED)
        self._unwritten: Counter[str] = Counter()  # per conversation: queued or being written
        self._written = asyncio.Condition()
        self._forgotten: set[str] = set()
        self._queued = 0  # turns ever queued, and of those written or lost: FIFO, so a count says which
        self._handled = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._write_forever(), name="turn writer")

    def expect(self, stream_tag: str, draft: Draft) -> None:
        """A stream starts answering a turn of `draft.conversation_id`."""
        self._drafts[stream_tag] = draft

    def in_flight(self, conversation_id: str) -> list[str | None]:
        """The owners of the answers this process is still giving in the conversation (not yet stored)."""
        return [d.owner for d in self._drafts.values() if d.conversation_id == conversation_id]

    def finished(self, stream: FinishedStream) -> None:
        """The end-of-stream hook: queue the turn (text and sources as sent, outcome, tokens, timings)."""
        draft = self._drafts.pop(stream.tag, None)
        meta = stream.meta
        if draft is None or meta is None or draft.conversation_id in self._forgotten:
            return
        first, duration = stream_timings(stream)
        record = TurnRecord(
            conversation_id=draft.conversation_id,
            owner=draft.owner,
            asked_at=draft.asked_at,
            question=draft.question,
            answer="".join(meta.text),
            sources=[s.model_dump(by_alias=True, exclude_none=True) for s in meta.sources],
            model=meta.model,
            degraded=meta.degraded,
            outcome=stream.outcome or "unknown",
            input_tokens=meta.input_tokens,
            output_tokens=meta.output_tokens,
            cache_read_tokens=meta.cache_read_tokens,
            first_chunk_ms=milliseconds(first),
            duration_ms=milliseconds(duration),
            enforced=draft.enforced,
        )
        if not self.ready:
            self._lost(1, "the database is not ready")
            return
        try:
            self._queue.put_nowait((record, time.monotonic()))
        except asyncio.QueueFull:
            self._lost(1, "too many turns waiting for the database")
            return
        self._queued += 1
        self._unwritten[record.conversation_id] += 1
        self.metrics.turns_pending.inc()

    async def settled(self, conversation_id: str, *, wait_seconds: float) -> None:
        """Wait (at most `wait_seconds`) until this process has written every finished turn of the
        conversation: a follow-up asked right after the done event then sees the turn before it."""
        if not self._unwritten[conversation_id]:
            self._unwritten.pop(conversation_id, None)
            return
        async with self._written:
            try:
                async with asyncio.timeout(wait_seconds):
                    await self._written.wait_for(lambda: not self._unwritten[conversation_id])
            except TimeoutError:
                log.warning("a conversation's previous turn is not written yet; answering without it")

    async def caught_up(self, *, wait_seconds: float) -> None:
        """Wait (at most `wait_seconds`) until every turn finished before this call is written or lost: a
        report read right after an answer then counts it, however busy the writer stays meanwhile."""
        target = self._queued
        async with self._written:
            try:
                async with asyncio.timeout(wait_seconds):
                    await self._written.wait_for(lambda: self._handled >= target)
            except TimeoutError:
                log.warning("finished turns are not written yet; reading the database without them")

    def forget(self, conversation_id: str) -> None:
        """The conversation is being deleted: answers still in flight for it are not written (those already
        queued are, and the deletion that follows removes them)."""
        self._forgotten.add(conversation_id)
        for tag in [s for s, d in self._drafts.items() if d.conversation_id == conversation_id]:
            del self._drafts[tag]

    def remember(self, conversation_id: str) -> None:
        self._forgotten.discard(conversation_id)

    def _lost(self, count: int, why: str) -> None:
        self.metrics.turns_lost_total.inc(count)
        log.error("%d conversation turn(s) not stored (%s)", count, why)

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)

    async def _write(self, batch: list[tuple[TurnRecord, float]]) -> None:
        records = [r for r, _ in batch]
        try:
            refused = await self.store.save(records) if records else 0
        except Exception as exc:  # the turns are lost, the service goes on (module docstring)
            self._lost(len(records), f"{type(exc).__name__}")
        else:
            if refused:
                self._lost(refused, "the conversation belongs to another user")
            done = time.monotonic()
            self.metrics.turns_stored_total.inc(len(records) - refused)
            for _, queued in batch:
                self.metrics.turn_write_seconds.observe(done - queued)
        finally:
            self._handled += len(batch)
            self.metrics.turns_pending.dec(len(batch))
            for record, _ in batch:
                self._unwritten[record.conversation_id] -= 1
                if self._unwritten[record.conversation_id] <= 0:
                    del self._unwritten[record.conversation_id]
            async with self._written:
                self._written.notify_all()

    async def aclose(self, *, wait_seconds: float) -> None:
        """Write what is queued (for at most `wait_seconds`), then stop the writer."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(wait_seconds), self._written:
                await self._written.wait_for(lambda: self._queue.empty() and not self._unwritten)
        except TimeoutError:
            self._lost(self._queue.qsize(), "the service stopped before the database answered")
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
