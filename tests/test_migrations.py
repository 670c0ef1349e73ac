"""Migrations on SQLite and PostgreSQL: from an empty database, and from the previous schema with its data.

Revision 0001 is the previous schema (conversations and turns); 0002 adds feedback and the time index. The
newest schema must be exactly what `conversations/tables.py` describes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from zantara_rag.conversations.database import create_engine, current_revision, head_revision, migrate
from zantara_rag.conversations.storage import Access, ConversationStore, TurnRecord
from zantara_rag.conversations.tables import Base
from zantara_rag.settings import Settings

ANYONE = Access(None, enforced=False)


async def differences(engine: AsyncEngine) -> list[object]:
    def compare(connection: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))

    async with engine.connect() as conn:
        return await conn.run_sync(compare)


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_an_empty_database_is_migrated_to_exactly_the_declared_schema(db_settings: Settings) -> None:
    engine = create_engine(db_settings)
    try:
        assert await current_revision(engine) is None
        await migrate(engine)
        assert await current_revision(engine) == head_revision() == "0002"
        assert await differences(engine) == []
        await migrate(engine)  # a second start changes nothing
        assert await current_revision(engine) == "0002"
    finally:
        await engine.dispose()


async def test_the_previous_schema_with_its_data_is_upgraded(db_settings: Settings) -> None:
    engine = create_engine(db_settings)
    try:
        await migrate(engine, "0001")
        assert await tables(engine) == {"alembic_version", "conversations", "turns"}
        store = ConversationStore(engine)
        cid = "0123456789abcdef0123456789abcdef"
        asked = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
        await store.save(
            [TurnRecord(cid, None, asked, "Overstay fine?", "IDR 1,000,000 per day.", [], "m", False, "done")]
        )

        await migrate(engine)

        assert await current_revision(engine) == "0002"
        assert await differences(engine) == []
        found = await store.conversation(cid, ANYONE)
        assert found is not None
        assert [(t.number, t.question, t.answer, t.asked_at) for t in found.turns] == [
            (1, "Overstay fine?", "IDR 1,000,000 per day.", asked)
        ]
        assert await store.rate(cid, 1, ANYONE, -1, "Out of date", datetime.now(UTC))  # the new table works
    finally:
        await engine.dispose()
