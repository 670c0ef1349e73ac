"""The `zantara-rag` command in-process through `cli.main([...])`: ingest, token, and refusals at boot."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from zantara_rag import cli, server
from zantara_rag.http.auth import verify_token
from zantara_rag.retrieval.store import VectorStore, connect
from zantara_rag.settings import DEFAULT_EMBEDDING_MODEL, Settings

SECRET = "0123456789abcdef0123456789abcdef-test"  # >= 32 bytes

VISA = """---
title: Test visa
url: https://balizero.com/kb/test-visa
updated: 2026-01-01
language: en
---
# Test visa

## Fees
The test visa costs IDR 2,000,000 and lasts 60 days.
"""

SPONSOR = """---
title: Sponsors
language: en
---
# Sponsors

A local sponsor is required for every visit visa. The sponsor signs the application.
"""

SUMMARY = re.compile(r"^(\d+) files: (\d+) chunks added, (\d+) updated, (\d+) removed, (\d+) unchanged in ")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No setting leaks in from the environment; the working directory is the test's own; `ingest`
    reconfigures the root logger, which is put back afterwards."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("CHROMA_PATH", str(tmp_path / "chroma"))
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level, converter = root.handlers[:], root.level, logging.Formatter.converter
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.Formatter.converter = converter  # type: ignore[method-assign]


@pytest.fixture
def kb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`kb/test-visa.md` and `kb/sub/sponsors.md`; KNOWLEDGE_PATH is `kb`."""
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / "test-visa.md").write_text(VISA, encoding="utf-8")
    (root / "sub" / "sponsors.md").write_text(SPONSOR, encoding="utf-8")
    monkeypatch.setenv("KNOWLEDGE_PATH", str(root))
    return root


def summary(out: str) -> tuple[int, ...]:
    match = SUMMARY.match(out.strip().splitlines()[-1])
    assert match, out
    return tuple(int(n) for n in match.groups())


def stored_documents(tmp_path: Path) -> set[str]:
    store = VectorStore(
        connect(Settings(chroma_path=tmp_path / "chroma")), "zantara-kb", DEFAULT_EMBEDDING_MODEL
    )
    return store.documents()


def test_ingest_prints_a_summary_and_a_second_run_changes_nothing(
    kb: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["ingest", "--no-progress", str(kb)]) == 0
    files, added, updated, removed, unchanged = summary(capsys.readouterr().out)
    assert (files, updated, removed, unchanged) == (2, 0, 0, 0)
    assert added >= 2

    assert cli.main(["ingest", "--no-progress", str(kb)]) == 0
    assert summary(capsys.readouterr().out) == (2, 0, 0, 0, added)


def test_ingest_of_a_missing_path_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert cli.main(["ingest", str(missing)]) == 2
    captured = capsys.readouterr()
    assert "no such file or folder" in captured.err and str(missing) in captured.err
    assert captured.out == ""
    assert not (tmp_path / "chroma").exists()  # refused before the store was opened


def test_ingesting_the_root_then_a_subfolder_keeps_one_key_per_file(
    kb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["ingest", "--no-progress", str(kb)]) == 0
    assert cli.main(["ingest", "--no-progress", str(kb / "sub")]) == 0
    files, added, _, _, unchanged = summary(capsys.readouterr().out)

    assert (files, added) == (1, 0)  # the same file under the same key: nothing new
    assert unchanged >= 1
    assert stored_documents(tmp_path) == {"kb/test-visa.md", "kb/sub/sponsors.md"}


def test_token_prints_a_token_the_server_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_SECRET", SECRET)
    assert cli.main(["token", "--sub", "ana@balizero.com", "--ttl", "1h"]) == 0
    token = capsys.readouterr().out.strip()

    assert token.count(".") == 2  # one JWT, nothing else on stdout
    principal = verify_token(Settings(auth_secret=SECRET), token)
    assert principal.subject == "ana@balizero.com"


def test_token_without_auth_secret_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "--sub", "ana@balizero.com"]) == 2
    captured = capsys.readouterr()
    assert "AUTH_SECRET" in captured.err and captured.out == ""


def test_token_with_an_impossible_lifetime_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_SECRET", SECRET)
    assert cli.main(["token", "--sub", "ana@balizero.com", "--ttl", "forever"]) == 2
    assert "forever" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "70000"),
        ("FLY_MACHINE_ID", "abc-"),  # a trailing hyphen would make event ids ambiguous
        ("AUTH_SECRET", "too-short"),
    ],
)
def test_serve_refuses_an_impossible_setting_before_starting_anything(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[object] = []
    monkeypatch.setattr(server, "run", lambda *args, **kwargs: started.append(args))
    monkeypatch.setenv(variable, value)

    with pytest.raises(SystemExit) as refused:
        cli.main(["serve"])

    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err and variable in err
    assert value not in err or variable != "AUTH_SECRET"  # a secret is never repeated
    assert started == []


def test_serve_with_valid_settings_hands_them_to_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[tuple[Settings, dict[str, object]]] = []
    monkeypatch.setattr(server, "run", lambda settings, **kwargs: started.append((settings, kwargs)))
    monkeypatch.setenv("FLY_MACHINE_ID", "abc-1")

    assert cli.main(["serve", "--port", "8123"]) == 0

    ((settings, kwargs),) = started
    assert (settings.port, settings.fly_machine_id) == (8123, "abc-1")
    assert kwargs == {"proxy_headers": False, "forwarded_allow_ips": None}
