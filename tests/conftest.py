"""Shared fixtures: one ingested knowledge base per session, real servers, the fake Claude server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.control import FakeAnthropic
from tests.harness import KNOWLEDGE, ServerProcess, ingest_template

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
    with ServerProcess(
        kb_template,
        ANTHROPIC_API_KEY="sk-ant-test-SECRET-0123456789",
        ANTHROPIC_BASE_URL=fake_claude.base_url,
        ANTHROPIC_FALLBACK_MODEL="claude-sonnet-4-6",
        UPSTREAM_RETRY_AFTER_CAP="0.2",
        UPSTREAM_FIRST_TOKEN_TIMEOUT="2",
        UPSTREAM_IDLE_TIMEOUT="2",
    ) as server:
        yield server
