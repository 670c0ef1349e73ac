"""Databases for the conversation tests: a SQLite file (fast layer) or a fresh database on the session's
PostgreSQL server (slow layer), both migrated by the service's own code."""

from __future__ import annotations

from pathlib import Path

import pytest

from zantara_rag.settings import Settings

DATABASES = ["sqlite", pytest.param("postgres", marks=[pytest.mark.slow, pytest.mark.postgres])]


def database_settings(request: pytest.FixtureRequest, tmp_path: Path, **overrides: object) -> Settings:
    """Settings naming an empty database of the kind `request.param` names."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_server").create_database()
        return Settings(database_url=url, **overrides)  # type: ignore[arg-type]
    return Settings(chroma_path=tmp_path / "chroma", **overrides)  # type: ignore[arg-type]
