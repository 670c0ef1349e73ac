"""The knowledge-gaps report with the service's own embedder: paraphrases count together, distinct questions
do not, each kind of gap is found, and the CLI prints it from the database that DATABASE_URL names."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from zantara_rag.cli import main
from zantara_rag.conversations.database import create_engine, migrate
from zantara_rag.conversations.gaps import (
    GROUP_SIMILARITY,
    build_report,
    group_questions,
    parse_since,
    render_table,
)
from zantara_rag.conversations.keeper import new_conversation_id
from zantara_rag.conversations.storage import Access, ConversationStore, GapRow, TurnRecord
from zantara_rag.retrieval.embedder import Embedder
from zantara_rag.settings import Settings

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    embedder = Embedder.from_settings(Settings())
    yield embedder
    embedder.close()


def row(
    question: str, *, sourced: bool = False, degraded: bool = False, rating: int | None = None, **kw: object
) -> GapRow:
    fields: dict[str, object] = {"asked_at": NOW, "conversation_id": "c1", "outcome": "done"}
    fields.update(kw)
    return GapRow(question, sourced=sourced, degraded=degraded, rating=rating, **fields)  # type: ignore[arg-type]


def test_paraphrases_group_together_and_distinct_questions_do_not(embedder: Embedder) -> None:
    questions = [
        "What is the best pizza in Canggu?",
        "How do I register a PT PMA?",
        "Where can I get good pizza in Canggu?",
        "What is the minimum capital for a PT PMA?",
        "best pizza canggu",
        "How much is the overstay fine?",
        "What is the penalty for overstaying my visa?",
    ]
    groups = group_questions(questions, embedder.embed(questions), GROUP_SIMILARITY)
    assert [[questions[i] for i in g] for g in groups] == [
        ["What is the best pizza in Canggu?", "Where can I get good pizza in Canggu?", "best pizza canggu"],
        ["How do I register a PT PMA?"],
        ["What is the minimum capital for a PT PMA?"],
        ["How much is the overstay fine?", "What is the penalty for overstaying my visa?"],
    ]


def test_each_kind_of_gap_is_reported_with_counts_and_an_example_per_language(embedder: Embedder) -> None:
    rows = [
        row("Where can I get good pizza in Canggu?", conversation_id="c2", asked_at=NOW),
        row("What is the best pizza in Canggu?", asked_at=NOW - timedelta(hours=1)),
        row("Di mana saya bisa makan pizza terbaik di Canggu?", asked_at=NOW - timedelta(hours=2)),
        row("How much is the overstay fine?", sourced=True, degraded=True, outcome="degraded", rating=-1),
        row("What is the minimum capital for a PT PMA?", sourced=True, rating=-1),
        row("Answered well", sourced=True, rating=1),
        row("Cut short, no sources sent yet", outcome="upstream_interrupted"),
    ]
    report = build_report(rows, embedder.embed, NOW - timedelta(days=7), NOW)
    assert report.answers == len(rows)
    no_source = report.kinds["no_source"]
    assert no_source[0].count == 2 and no_source[0].conversations == 2
    assert no_source[0].examples == {"en": "Where can I get good pizza in Canggu?"}
    # The English-only model puts the Indonesian wording apart (0.6): it is its own group, labelled `id`.
    assert [g.examples for g in no_source[1:]] == [{"id": "Di mana saya bisa makan pizza terbaik di Canggu?"}]
    assert [g.examples["en"] for g in report.kinds["degraded"]] == ["How much is the overstay fine?"]
    assert sorted(g.examples["en"] for g in report.kinds["rated_down"]) == [
        "How much is the overstay fine?",
        "What is the minimum capital for a PT PMA?",
    ]
    table = render_table(report)
    assert "Answered with no source: 3 question(s) in 2 group(s)" in table
    assert (
        "[en] Where can I get good pizza in Canggu?" in table
        and "[id] Di mana saya bisa makan pizza" in table
    )


def test_since_takes_hours_days_and_weeks() -> None:
    assert parse_since("24h") == timedelta(hours=24)
    assert parse_since("7d") == timedelta(days=7)
    assert parse_since("4w") == timedelta(weeks=4)
    for bad in ("", "7", "0d", "7y", "-1d"):
        with pytest.raises(ValueError):
            parse_since(bad)


def test_the_cli_reports_from_the_database_that_database_url_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'conversations.db'}"

    async def seed() -> None:
        engine = create_engine(Settings(database_url=url))  # type: ignore[arg-type]
        await migrate(engine)
        store = ConversationStore(engine)
        cid = new_conversation_id()
        recent = [TurnRecord(cid, None, NOW, "What's the capital of France?", "…", [], "m", False, "done")]
        old = [TurnRecord(cid, None, NOW - timedelta(days=10), "Old question", "…", [], "m", False, "done")]
        sourced = [TurnRecord(cid, None, NOW, "Overstay fine?", "…", [{"source": "x"}], "m", False, "done")]
        await store.save(recent + old + sourced)
        assert await store.rate(cid, 3, Access(None, enforced=False), -1, None, NOW)
        await engine.dispose()

    asyncio.run(seed())
    monkeypatch.setenv("DATABASE_URL", url)
    assert main(["report", "gaps", "--since", "7d", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["answers"] == 2
    assert [g["examples"] for g in report["no_source"]] == [{"en": "What's the capital of France?"}]
    assert [g["examples"] for g in report["rated_down"]] == [{"en": "Overstay fine?"}]
    assert report["degraded"] == []
    assert main(["report", "gaps", "--since", "30d"]) == 0
    assert "Answered with no source: 2 question(s) in 2 group(s)" in capsys.readouterr().out
    assert main(["report", "gaps", "--since", "soon"]) == 2
