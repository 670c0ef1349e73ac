"""`ConversationKeeper`: what the service holds of conversations, built in the lifespan.

It issues conversation ids, supplies a continued conversation's earlier turns, records each finished turn
(through the recorder), answers the conversation routes and the knowledge-gaps report, and purges turns
older than `CONVERSATION_RETENTION_DAYS`. Whatever the database does, answers go on: a failed look-up is an
answer without the stored history (the client's `conversation_history` stands in), a failed write a lost
turn.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..domain import FinishedStream, Turn
from ..errors import ConversationsUnavailable, ZantaraError
from ..metrics import Metrics
from ..settings import Settings
from .database import create_engine, migrate
from .gaps import Embed, GapReport, build_report
from .recorder import Draft, TurnRecorder
from .storage import Access, ConversationStore, ConversationSummary, StoredConversation
from .tables import CONVERSATION_ID_CHARS

log = logging.getLogger(__name__)

_ID = re.compile(rf"^[0-9a-f]{{{CONVERSATION_ID_CHARS}}}$")
# How long a question waits for the stored history before it is answered without it.
HISTORY_TIMEOUT_SECONDS = 2.0
# How long a follow-up waits for this process to write the turn before it (normally a few milliseconds).
SETTLE_SECONDS = 2.0
PURGE_EVERY_SECONDS = 3600.0
RETRY_MIGRATION_SECONDS = 30.0
# At shutdown, after the drain: writing what is queued normally takes milliseconds.
FLUSH_SECONDS = 1.0
# Longest a conversation route waits for the database before answering 503 (a frozen server must not hold it).
ROUTE_TIMEOUT_SECONDS = 5.0


def new_conversation_id() -> str:
    """128 random bits: with authentication off, holding the id is what grants access."""
    return secrets.token_hex(CONVERSATION_ID_CHARS // 2)


def is_conversation_id(value: str | None) -> bool:
    return value is not None and bool(_ID.match(value))


@dataclass(frozen=True, slots=True)
class Thread:
    """The conversation a question belongs to; `history` is None when the stored turns are not used."""

    id: str
    history: list[Turn] | None = None


class ConversationKeeper:
    """Conversations of this service: ids, history, recording, the routes' reads and writes, retention."""

    def __init__(
        self,
        settings: Settings,
        store: ConversationStore | None,
        metrics: Metrics,
        owner_of: Callable[[str], str],
    ) -> None:
        self.settings = settings
        self.store = store  # None when STORE_CONVERSATIONS=false
        self.metrics = metrics
        self.owner_of = owner_of  # the keyed hash of an e-mail address (LOG_HASH_KEY)
        self.recorder = TurnRecorder(store, metrics) if store is not None else None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_settings(
        cls, settings: Settings, metrics: Metrics, owner_of: Callable[[str], str]
    ) -> ConversationKeeper:
        store = ConversationStore(create_engine(settings)) if settings.store_conversations else None
        return cls(settings, store, metrics, owner_of)

    @property
    def ready(self) -> bool:
        return self.recorder is not None and self.recorder.ready

    async def start(self) -> None:
        """Migrate the schema (a database that is down is retried in the background); record; purge."""
        if self.recorder is None:
            return
        self.recorder.start()
        if not await self._migrate():
            self._tasks.append(
                asyncio.create_task(self._migrate_until_done(), name="conversation migrations")
            )
        self._tasks.append(asyncio.create_task(self._purge_forever(), name="conversation retention"))

    async def _migrate(self) -> bool:
        assert self.store is not None and self.recorder is not None
        try:
            await migrate(self.store.engine)
        except Exception as exc:
            log.error(
                "the conversation database is unavailable (%s): answers go on, turns are not stored "
                "until it is back (retried every %ds)",
                type(exc).__name__,
                RETRY_MIGRATION_SECONDS,
            )
            return False
        self.recorder.ready = True
        return True

    async def _migrate_until_done(self) -> None:
        while True:
            await asyncio.sleep(RETRY_MIGRATION_SECONDS)
            if await self._migrate():
                log.info("the conversation database is available again")
                return

    async def _purge_forever(self) -> None:
        while True:
            if self.ready:
                await self.purge()
            await asyncio.sleep(PURGE_EVERY_SECONDS)

    async def purge(self) -> int:
        """Delete turns older than CONVERSATION_RETENTION_DAYS; how many (0 if the database failed)."""
        assert self.store is not None
        started = time.perf_counter()
        cutoff = datetime.now(UTC) - timedelta(days=self.settings.conversation_retention_days)
        try:
            purged = await self.store.purge(cutoff)
        except Exception as exc:
            log.error("purging expired conversation turns failed (%s)", type(exc).__name__)
            return 0
        self.metrics.turns_purged_total.inc(purged)
        log.info(
            "purged %d expired conversation turn(s) in %.0f ms",
            purged,
            (time.perf_counter() - started) * 1000,
        )
        return purged

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.recorder is not None:
            await self.recorder.aclose(wait_seconds=FLUSH_SECONDS)
        if self.store is not None:
            try:  # a database that does not answer must not hold up the shutdown either
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self.store.engine.dispose()
            except TimeoutError:
                log.warning("the conversation database did not close its connections in time")

    # --- the chat stream

    def access(self, email: str | None, *, enforced: bool) -> Access:
        """Who asks: the keyed hash of their e-mail (the token's subject when authentication is on)."""
        return Access(self.owner_of(email) if email else None, enforced)

    async def thread(self, requested: str | None, access: Access) -> Thread:
        """The conversation a question continues (with its stored turns), or a new one.

        An id that names no conversation this caller may see (deleted, expired, someone else's, malformed)
        starts a new conversation with a new id, rather than failing the question.
        """
        if not is_conversation_id(requested):
            return Thread(new_conversation_id())
        assert requested is not None
        if self.store is None or self.recorder is None:
            return Thread(requested)  # nothing is stored: the id is carried on, history comes from the client
        if not self.recorder.ready:
            return self._unverified(requested, access)
        limit = max(1, self.settings.max_history_turns)  # two turns (question, answer) per stored row
        try:
            async with asyncio.timeout(HISTORY_TIMEOUT_SECONDS):
                await self.recorder.settled(requested, wait_seconds=SETTLE_SECONDS / 2)
                stored = await self.store.recent_turns(requested, access, limit)
        except Exception as exc:
            log.error(
                "reading a conversation's history failed (%s); answering without it", type(exc).__name__
            )
            return self._unverified(requested, access)
        if stored is None:
            if any(access.may_see(owner) for owner in self.recorder.in_flight(requested)):
                return Thread(requested, [])  # its first answer is still streaming: nothing stored yet
            log.info("a conversation_id named no conversation of this caller; a new conversation starts")
            return Thread(new_conversation_id())
        history: list[Turn] = []
        for turn in stored:
            if turn.answer.strip():  # a failed answer with nothing sent is no context
                history += [Turn("user", turn.question), Turn("assistant", turn.answer)]
        return Thread(requested, history)

    @staticmethod
    def _unverified(requested: str, access: Access) -> Thread:
        """The database cannot say whose `requested` is: with authentication on, a new conversation (the
        id may be someone else's); off, the id itself is the capability and is carried on."""
        return Thread(new_conversation_id() if access.enforced else requested)

    def expect(self, stream_tag: str, conversation_id: str, access: Access, question: str) -> None:
        if self.recorder is not None:
            draft = Draft(conversation_id, access.owner, question, datetime.now(UTC), access.enforced)
            self.recorder.expect(stream_tag, draft)

    def finished(self, stream: FinishedStream) -> None:
        if self.recorder is not None:
            self.recorder.finished(stream)

    # --- the routes: a database failure or silence becomes one clear error (`ConversationsUnavailable`)

    @asynccontextmanager
    async def _database(self, what: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(ROUTE_TIMEOUT_SECONDS):
                yield
        except ZantaraError:
            raise
        except Exception as exc:
            log.error("%s failed (%s)", what, type(exc).__name__)
            raise ConversationsUnavailable() from None

    async def conversation(self, conversation_id: str, access: Access) -> StoredConversation | None:
        if self.store is None or self.recorder is None or not is_conversation_id(conversation_id):
            return None
        await self.recorder.settled(conversation_id, wait_seconds=SETTLE_SECONDS)
        async with self._database("reading a conversation"):
            return await self.store.conversation(conversation_id, access)

    async def conversations(self, access: Access, limit: int) -> list[ConversationSummary]:
        if self.store is None or self.recorder is None or access.owner is None:
            return []
        # The answers this process has just finished count (their turns are written first, at most
        # SETTLE_SECONDS): a list read right after a done event shows that turn.
        await self.recorder.caught_up(wait_seconds=SETTLE_SECONDS)
        async with self._database("listing conversations"):
            return await self.store.conversations(access.owner, limit)

    async def delete(self, conversation_id: str, access: Access) -> bool:
        if self.store is None or self.recorder is None or not is_conversation_id(conversation_id):
            return False
        self.recorder.forget(conversation_id)
        try:
            await self.recorder.settled(conversation_id, wait_seconds=SETTLE_SECONDS)
            async with self._database("deleting a conversation"):
                return await self.store.delete(conversation_id, access)
        finally:
            self.recorder.remember(conversation_id)

    async def rate(
        self, conversation_id: str, turn: int, access: Access, rating: int, comment: str | None
    ) -> bool:
        if self.store is None or self.recorder is None or not is_conversation_id(conversation_id):
            return False
        await self.recorder.settled(conversation_id, wait_seconds=SETTLE_SECONDS)
        async with self._database("storing feedback"):
            rated = await self.store.rate(conversation_id, turn, access, rating, comment, datetime.now(UTC))
        if rated:
            self.metrics.feedback_total.labels("up" if rating > 0 else "down").inc()
        return rated

    async def gaps(self, since: timedelta, embed: Embed) -> GapReport | None:
        """The knowledge-gaps report over the last `since`, with the answers this process has just finished
        (their turns are written first, waiting at most SETTLE_SECONDS); None when nothing is stored."""
        if self.store is None or self.recorder is None:
            return None
        await self.recorder.caught_up(wait_seconds=SETTLE_SECONDS)
        until = datetime.now(UTC)
        async with self._database("reading the knowledge-gaps report"):
            rows = await self.store.gap_rows(until - since)
        # Grouping embeds the questions: CPU work, in a thread, and not bounded by the database's timeout.
        return await asyncio.to_thread(build_report, rows, embed, until - since, until)
