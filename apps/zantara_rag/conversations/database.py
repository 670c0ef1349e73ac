"""The conversation database: which one (`DATABASE_URL`), its engine, and migrating it to the newest schema.

SQLite (the default, a file beside the Chroma store) is reached through aiosqlite, PostgreSQL through asyncpg;
both through SQLAlchemy's asyncio engine. Migrations are Alembic's, run on the engine's own connection; on
PostgreSQL under an advisory lock, so that machines starting together migrate one after the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, event, func, make_url, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..settings import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_FILE = "zantara.db"
# Any constant shared by every process of the service: the key of the advisory lock migrations hold.
_MIGRATION_LOCK = 0x7A616E74
# Bounds on a database that does not answer: a turn is lost rather than an answer held up.
CONNECT_TIMEOUT_SECONDS = 5.0
COMMAND_TIMEOUT_SECONDS = 10.0


def database_url(settings: Settings) -> URL:
    """The URL with its async driver: `sqlite:///` → aiosqlite, `postgres(ql)://` → asyncpg."""
    if settings.database_url is None:
        raw = f"sqlite:///{settings.chroma_path.parent / DEFAULT_FILE}"
    else:
        raw = settings.database_url.get_secret_value()
    url = make_url(raw)
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    url = url.set(drivername="postgresql+asyncpg")
    if "sslmode" in url.query:
        # libpq's parameter (Fly's connection strings carry it); asyncpg takes the same values as `ssl`.
        query = dict(url.query)
        query["ssl"] = query.pop("sslmode")
        url = url.set(query=query)
    return url


def create_engine(settings: Settings) -> AsyncEngine:
    """The engine (nothing is connected yet). A SQLite file's folder is created if missing."""
    url = database_url(settings)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": CONNECT_TIMEOUT_SECONDS})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=5,
        max_overflow=5,
        pool_timeout=CONNECT_TIMEOUT_SECONDS,
        pool_pre_ping=True,  # a server restarted since: the dead connection is replaced, not handed out
        connect_args={"timeout": CONNECT_TIMEOUT_SECONDS, "command_timeout": COMMAND_TIMEOUT_SECONDS},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers (the CLI's report, history look-ups) do not wait for the writer, nor it for them.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest schema revision the code knows."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision` (the newest by default); a database already there is left alone."""

    def upgrade(connection: Connection) -> None:
        command.upgrade(_config(connection), revision)

    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        await connection.run_sync(upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at; None for an empty database."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)
