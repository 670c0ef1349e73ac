"""Alembic's environment. The service hands over its own connection (`conversations.database.migrate`).

Run by the `alembic` command instead, to write a migration, it opens the database that DATABASE_URL names:
`alembic -c apps/zantara_rag/conversations/migrations/alembic.ini revision --autogenerate -m "..."`.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from zantara_rag.conversations.database import create_engine
from zantara_rag.conversations.tables import Base
from zantara_rag.settings import Settings


def run(connection: Connection) -> None:
    # Batch mode: SQLite cannot ALTER most things in place; batch operations copy the table instead.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_from_settings() -> None:
    engine = create_engine(Settings())
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    asyncio.run(run_from_settings())
