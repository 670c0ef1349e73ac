"""The schema: a conversation, its turns (one per finished answer), and one rating per turn.

The migrations in `migrations/versions` create exactly these tables; `tests/test_migrations.py` checks that
the two agree on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# 128 random bits as hex: the id is the capability when authentication is off.
CONVERSATION_ID_CHARS = 32


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on both databases (SQLite keeps no zone: its naive values are UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    # The names the migrations give their indexes and foreign keys, so that both describe the same schema.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s",
        }
    )


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(CONVERSATION_ID_CHARS), primary_key=True)
    # The keyed hash of the asker's e-mail (the token's subject with authentication on), never the address.
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class TurnRow(Base):
    """One finished answer: what was asked, what was sent (text and sources), and how it went."""

    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("conversation_id", "number", name="uq_turns_conversation_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(
        String(CONVERSATION_ID_CHARS), ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)  # 1-based, in the order the turns were written
    asked_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    # The sources event's entries as sent (every key a Source carries, cited spans included).
    sources: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    model: Mapped[str | None] = mapped_column(String(100))
    degraded: Mapped[bool] = mapped_column(Boolean, default=False)
    # done, degraded, or the terminal error code (upstream_interrupted, cancelled, shutting_down, ...).
    outcome: Mapped[str] = mapped_column(String(40))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(Integer, default=0)
    first_chunk_ms: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float | None] = mapped_column(Float)


class Feedback(Base):
    """The rating of one turn; a second rating replaces the first."""

    __tablename__ = "feedback"
    __table_args__ = (CheckConstraint("rating IN (1, -1)", name="ck_feedback_rating"),)

    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), primary_key=True)
    rating: Mapped[int] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(Text)
    rated_at: Mapped[datetime] = mapped_column(UtcDateTime())
