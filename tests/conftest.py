"""Shared fixtures: one ingested knowledge base per session, real servers, the fake Claude server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.browser import launch_chromium, require_browser
from tests.chroma_server import ChromaServer
from tests.conversation_db import DATABASES, database_settings
from tests.fakes.control import FakeAnthropic
from tests.harness import KNOWLEDGE, ServerProcess, claude_env, ingest_template
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer
from zantara_rag.conversations.database import create_engine, migrate
from zantara_rag.retrieval.embedder import Embedder
from zantara_rag.retrieval.store import VectorStore, connect
from zantara_rag.settings import DEFAULT_EMBEDDING_MODEL, Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Fixtures that start a process of ours (the service, `chroma run`, the ingest CLI): a test that uses one is
# part of the slow layer. `pytest -m "not slow"` runs everything else, in-process, in seconds.
PROCESS_FIXTURES = frozenset(
    {
        "kb_template",
        "mini_kb_template",
        "extractive_server",
        "claude_server",
        "chroma_server",
        "mini_claude_server",
        "secured_server",
        "postgres_server",
        "redis_server",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def kb_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample knowledge base ingested once by the real CLI; servers copy it."""
    target = tmp_path_factory.mktemp("kb") / "chroma"
    ingest_template(target, KNOWLEDGE)
    return target


@pytest.fixture(scope="session")
def fake_claude() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def claude(fake_claude: FakeAnthropic) -> FakeAnthropic:
    """The fake Claude server, reset for this test."""
    fake_claude.reset()
    return fake_claude


@pytest.fixture(scope="session")
def extractive_server(kb_template: Path) -> Iterator[ServerProcess]:
    """A server without an API key: answers are extractive. Shared by read-only contract tests."""
    with ServerProcess(kb_template) as server:
        yield server


@pytest.fixture(scope="session")
def claude_server(kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    """A server whose Claude is the fake server, through the real SDK (`ANTHROPIC_BASE_URL`)."""
    with ServerProcess(kb_template, **claude_env(fake_claude.base_url)) as server:
        yield server


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A real `chroma run` server holding the sample knowledge base, ingested over HTTP by the real CLI."""
    with ChromaServer(tmp_path_factory.mktemp("chroma-server") / "data") as chroma:
        ingest_template(tmp_path_factory.mktemp("unused") / "chroma", KNOWLEDGE, CHROMA_URL=chroma.url)
        yield chroma


@pytest.fixture(scope="session")
def mini_kb_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few documents of the sample knowledge base (the prompt-injection page too), quick to ingest."""
    from tests.security import MINI_KB

    target = tmp_path_factory.mktemp("mini-kb") / "chroma"
    ingest_template(target, *MINI_KB)
    return target


@pytest.fixture(scope="session")
def mini_claude_server(mini_kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    """The fake Claude behind a server with the small knowledge base and the default request limits."""
    with ServerProcess(mini_kb_template, AUTO_INGEST="false", **claude_env(fake_claude.base_url)) as server:
        yield server


@pytest.fixture(scope="session")
def secured_server(
    mini_kb_template: Path, fake_claude: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Authentication on (two secrets), a team directory, debug logs: its log is grepped for secrets."""
    from tests.security import secured_env, team_file

    env = secured_env(fake_claude.base_url, team_file(tmp_path_factory.mktemp("team")))
    with ServerProcess(mini_kb_template, AUTO_INGEST="false", **env) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server (Debian's), in a throwaway cluster; each test makes its own database."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real `redis-server` (Debian's) on a free loopback port."""
    with RedisServer() as server:
        yield server


@pytest.fixture(params=DATABASES)
def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """An empty database: a SQLite file (fast layer) or a new database on the PostgreSQL server (slow)."""
    return database_settings(request, tmp_path)


@pytest.fixture
async def engine(db_settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The engine of `db_settings`, migrated to the newest schema."""
    engine = create_engine(db_settings)
    await migrate(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    """The default embedding model, loaded once per test module (a worker thread each: closed after it)."""
    e = Embedder(DEFAULT_EMBEDDING_MODEL)
    yield e
    e.close()


@pytest.fixture
def store(tmp_path: Path) -> VectorStore:
    """An empty embedded store of the test's own."""
    return VectorStore(connect(Settings(chroma_path=tmp_path / "chroma")), "test-kb", DEFAULT_EMBEDDING_MODEL)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright, one per test module (missing: the test fails)."""
    require_browser()
    with launch_chromium() as browser:
        yield browser
