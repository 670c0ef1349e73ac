"""`ConversationStore`: every read and write of the conversation tables, each in one transaction.

Who may see a conversation is an `Access`: with authentication on, only its owner (the keyed hash of the
token's subject); with it off, whoever holds the id. A conversation someone may not see is the same as one
that does not exist, so that nobody learns which ids are taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .tables import Conversation, Feedback, TurnRow

# A turn number taken by another machine between our read and our insert: read again and retry.
_NUMBER_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Access:
    """Who asks: `owner` is the keyed hash of their e-mail; `enforced` when authentication is on."""

    owner: str | None
    enforced: bool

    def may_see(self, owner: str | None) -> bool:
        return not self.enforced or (self.owner is not None and owner == self.owner)


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """What one finished answer leaves behind (written by the recorder once its stream has ended)."""

    conversation_id: str
    owner: str | None
    asked_at: datetime
    question: str
    answer: str
    sources: list[dict[str, Any]]
    model: str | None
    degraded: bool
    outcome: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    first_chunk_ms: float | None = None
    duration_ms: float | None = None
    # Written only into a conversation of the same owner (authentication on); not stored itself.
    enforced: bool = False


@dataclass(frozen=True, slots=True)
class StoredTurn:
    number: int
    asked_at: datetime
    question: str
    answer: str
    sources: list[dict[str, Any]]
    model: str | None
    degraded: bool
    outcome: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    first_chunk_ms: float | None
    duration_ms: float | None
    rating: int | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class StoredConversation:
    id: str
    created_at: datetime
    updated_at: datetime
    turns: list[StoredTurn] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    id: str
    created_at: datetime
    updated_at: datetime
    turns: int
    title: str


@dataclass(frozen=True, slots=True)
class GapRow:
    """A turn as the knowledge-gaps report reads it."""

    question: str
    asked_at: datetime
    conversation_id: str
    outcome: str
    degraded: bool
    sourced: bool
    rating: int | None


class ConversationStore:
    """The conversation tables behind an async engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        on_postgres = engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if on_postgres else sqlite.insert
        self._greatest = func.greatest if on_postgres else func.max  # SQLite's max() of two values

    async def save(self, records: Sequence[TurnRecord]) -> int:
        """Write finished turns, in order, in one transaction; each takes its conversation's next number.
        Returns how many were refused: an enforced turn for a conversation that belongs to someone else (its
        id was named by another user) is never added to it.

        Four statements per batch, whatever its size: under load the writer catches up in a few round trips.
        """
        for attempt in range(_NUMBER_RETRIES):
            try:
                async with self.engine.begin() as conn:
                    return await self._save_batch(conn, records)
            except IntegrityError:
                if attempt == _NUMBER_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _save_batch(self, conn: AsyncConnection, records: Sequence[TurnRecord]) -> int:
        spans: dict[str, tuple[str | None, datetime, datetime]] = {}
        for r in records:
            owner, first, last = spans.get(r.conversation_id, (r.owner, r.asked_at, r.asked_at))
            spans[r.conversation_id] = (owner, min(first, r.asked_at), max(last, r.asked_at))
        ins = self._insert(Conversation).values(
            [{"id": cid, "owner": o, "created_at": a, "updated_at": b} for cid, (o, a, b) in spans.items()]
        )
        await conn.execute(
            ins.on_conflict_do_update(
                index_elements=[Conversation.id],
                set_={"updated_at": self._greatest(Conversation.updated_at, ins.excluded.updated_at)},
            )
        )
        stored = select(Conversation.id, Conversation.owner).where(Conversation.id.in_(list(spans)))
        owners: dict[str, str | None] = {cid: owner for cid, owner in await conn.execute(stored)}
        kept = [r for r in records if not r.enforced or owners.get(r.conversation_id) == r.owner]
        counted = await conn.execute(
            select(TurnRow.conversation_id, func.max(TurnRow.number))
            .where(TurnRow.conversation_id.in_(list(spans)))
            .group_by(TurnRow.conversation_id)
        )
        numbers: dict[str, int] = {cid: last for cid, last in counted}
        rows = []
        for r in kept:
            numbers[r.conversation_id] = number = numbers.get(r.conversation_id, 0) + 1
            rows.append(
                {
                    "conversation_id": r.conversation_id,
                    "number": number,
                    "asked_at": r.asked_at,
                    "question": r.question,
                    "answer": r.answer,
                    "sources": r.sources,
                    "model": r.model,
                    "degraded": r.degraded,
                    "outcome": r.outcome,
                    "input_tokens": r.input_tokens,
                    "output_tokens": r.output_tokens,
                    "cache_read_tokens": r.cache_read_tokens,
                    "first_chunk_ms": r.first_chunk_ms,
                    "duration_ms": r.duration_ms,
                }
            )
        if rows:
            await conn.execute(insert(TurnRow), rows)
        return len(records) - len(kept)

    async def _visible(self, conn: AsyncConnection, conversation_id: str, access: Access) -> Any:
        row = (await conn.execute(select(Conversation).where(Conversation.id == conversation_id))).first()
        return row if row is not None and access.may_see(row.owner) else None

    async def recent_turns(self, conversation_id: str, access: Access, limit: int) -> list[StoredTurn] | None:
        """The last `limit` turns, oldest first; None when the conversation is not there for this caller."""
        async with self.engine.connect() as conn:
            if await self._visible(conn, conversation_id, access) is None:
                return None
            rows = (
                await conn.execute(
                    select(TurnRow)
                    .where(TurnRow.conversation_id == conversation_id)
                    .order_by(TurnRow.number.desc())
                    .limit(limit)
                )
            ).all()
        return [_turn(row) for row in reversed(rows)]

    async def conversation(self, conversation_id: str, access: Access) -> StoredConversation | None:
        """Every turn with its rating; None when the conversation is not there for this caller."""
        async with self.engine.connect() as conn:
            found = await self._visible(conn, conversation_id, access)
            if found is None:
                return None
            rows = (
                await conn.execute(
                    select(TurnRow, Feedback.rating, Feedback.comment)
                    .outerjoin(Feedback, Feedback.turn_id == TurnRow.id)
                    .where(TurnRow.conversation_id == conversation_id)
                    .order_by(TurnRow.number)
                )
            ).all()
        turns = [_turn(row, rating=row.rating, comment=row.comment) for row in rows]
        return StoredConversation(found.id, found.created_at, found.updated_at, turns)

    async def conversations(self, owner: str, limit: int) -> list[ConversationSummary]:
        """The owner's conversations, the most recently active first, with their first question as a title."""
        first = (
            select(TurnRow.conversation_id, func.min(TurnRow.number).label("first"), func.count().label("n"))
            .group_by(TurnRow.conversation_id)
            .subquery()
        )
        query = (
            select(Conversation, first.c.n, TurnRow.question)
            .join(first, first.c.conversation_id == Conversation.id)
            .join(
                TurnRow,
                (TurnRow.conversation_id == Conversation.id) & (TurnRow.number == first.c.first),
            )
            .where(Conversation.owner == owner)
            .order_by(Conversation.updated_at.desc(), Conversation.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ConversationSummary(r.id, r.created_at, r.updated_at, r.n, r.question) for r in rows]

    async def delete(self, conversation_id: str, access: Access) -> bool:
        """Remove the conversation, its turns and their feedback; False when this caller cannot see it."""
        async with self.engine.begin() as conn:
            if await self._visible(conn, conversation_id, access) is None:
                return False
            await self._delete_conversations(
                conn, select(Conversation.id).where(Conversation.id == conversation_id)
            )
        return True

    async def erase_owner(self, owner: str) -> int:
        """Remove every conversation of one owner (a user's erasure request); returns how many."""
        async with self.engine.begin() as conn:
            ids = select(Conversation.id).where(Conversation.owner == owner)
            count = await conn.scalar(select(func.count()).select_from(ids.subquery()))
            await self._delete_conversations(conn, ids)
        return int(count or 0)

    async def _delete_conversations(self, conn: AsyncConnection, ids: Any) -> None:
        # Children first, explicitly: the result must not depend on SQLite's foreign-key pragma.
        turn_ids = select(TurnRow.id).where(TurnRow.conversation_id.in_(ids))
        await conn.execute(delete(Feedback).where(Feedback.turn_id.in_(turn_ids)))
        await conn.execute(delete(TurnRow).where(TurnRow.conversation_id.in_(ids)))
        await conn.execute(delete(Conversation).where(Conversation.id.in_(ids)))

    async def rate(
        self,
        conversation_id: str,
        number: int,
        access: Access,
        rating: int,
        comment: str | None,
        at: datetime,
    ) -> bool:
        """Record the rating of turn `number` (replacing an earlier one); False when there is no such turn."""
        async with self.engine.begin() as conn:
            if await self._visible(conn, conversation_id, access) is None:
                return False
            turn_id = await conn.scalar(
                select(TurnRow.id).where(
                    (TurnRow.conversation_id == conversation_id) & (TurnRow.number == number)
                )
            )
            if turn_id is None:
                return False
            ins = self._insert(Feedback).values(turn_id=turn_id, rating=rating, comment=comment, rated_at=at)
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[Feedback.turn_id],
                    set_={"rating": rating, "comment": comment, "rated_at": at},
                )
            )
        return True

    async def purge(self, before: datetime) -> int:
        """Delete turns asked before `before` (and their feedback), then conversations left empty."""
        async with self.engine.begin() as conn:
            old = select(TurnRow.id).where(TurnRow.asked_at < before)
            await conn.execute(delete(Feedback).where(Feedback.turn_id.in_(old)))
            purged = (await conn.execute(delete(TurnRow).where(TurnRow.asked_at < before))).rowcount
            await conn.execute(
                delete(Conversation).where(
                    (Conversation.updated_at < before)
                    & ~select(TurnRow.id).where(TurnRow.conversation_id == Conversation.id).exists()
                )
            )
        return int(purged or 0)

    async def gap_rows(self, since: datetime) -> list[GapRow]:
        """Turns asked since `since` that answered without a source, were degraded, or were rated -1."""
        query = (
            select(TurnRow, Feedback.rating)
            .outerjoin(Feedback, Feedback.turn_id == TurnRow.id)
            .where(TurnRow.asked_at >= since)
            .order_by(TurnRow.asked_at.desc())
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            GapRow(
                r.question, r.asked_at, r.conversation_id, r.outcome, r.degraded, bool(r.sources), r.rating
            )
            for r in rows
        ]

    async def count_turns(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(TurnRow)) or 0)


def _turn(row: Any, *, rating: int | None = None, comment: str | None = None) -> StoredTurn:
    return StoredTurn(
        number=row.number,
        asked_at=row.asked_at,
        question=row.question,
        answer=row.answer,
        sources=list(row.sources or []),
        model=row.model,
        degraded=row.degraded,
        outcome=row.outcome,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cache_read_tokens=row.cache_read_tokens,
        first_chunk_ms=row.first_chunk_ms,
        duration_ms=row.duration_ms,
        rating=rating,
        comment=comment,
    )
