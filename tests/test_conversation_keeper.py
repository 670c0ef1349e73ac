"""The keeper and its recorder with real streams and a real database: a turn is written once, after its
terminal event; a follow-up gets it as history; a database that fails costs the turn, never the answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from tests.harness import free_port
from zantara_rag.conversations.keeper import ConversationKeeper, is_conversation_id, new_conversation_id
from zantara_rag.conversations.storage import TurnRecord
from zantara_rag.domain import AnswerMeta, Turn
from zantara_rag.events import Source
from zantara_rag.logs import KeyedHash
from zantara_rag.metrics import Metrics
from zantara_rag.settings import Settings
from zantara_rag.streaming.stream import Stream

EMAIL = "made.wijaya@balizero.com"
SOURCE = Source(source="Overstay fines", snippet="IDR 1,000,000 per day.", similarity=0.61, id="overstay.md")


@pytest.fixture
async def keeper(db_settings: Settings) -> AsyncIterator[ConversationKeeper]:
    keeper = ConversationKeeper.from_settings(db_settings, Metrics(), KeyedHash(SecretStr("test-key")))
    await keeper.start()
    assert keeper.ready
    try:
        yield keeper
    finally:
        await keeper.aclose()


def answer(
    keeper: ConversationKeeper, conversation_id: str, question: str, text: list[str], **kw: object
) -> Stream:
    """A stream that answers `question` with `text`, ending with `outcome` (done unless told)."""
    stream_id = f"local-{new_conversation_id()}"
    stream = Stream(stream_id, max_events=100, max_bytes=100_000, tag=f"tag-{stream_id}")
    stream.on_finish = keeper.finished
    keeper.expect(stream.tag, conversation_id, keeper.access(EMAIL, enforced=True), question)
    stream.meta = meta = AnswerMeta(model="claude-haiku-4-5", input_tokens=900, output_tokens=40)
    for part in text:
        stream.append('{"text": "..."}')
        meta.text.append(part)
    if kw.get("sources", True):
        meta.sources = [SOURCE]
    stream.append("{}", terminal=True, outcome=str(kw.get("outcome", "done")))
    return stream


def value(keeper: ConversationKeeper, name: str) -> float:
    return keeper.metrics.registry.get_sample_value(name) or 0.0


async def test_a_finished_answer_is_written_once_with_what_was_sent(keeper: ConversationKeeper) -> None:
    cid = new_conversation_id()
    stream = answer(keeper, cid, "How much is the overstay fine?", ["IDR 1,000,000", " per day [1]."])
    stream.append("{}", terminal=True, outcome="done")  # a second terminal append is ignored by the stream
    found = await keeper.conversation(cid, keeper.access(EMAIL, enforced=True))
    assert found is not None and len(found.turns) == 1
    turn = found.turns[0]
    assert turn.answer == "IDR 1,000,000 per day [1]."
    assert turn.sources == [SOURCE.model_dump(by_alias=True, exclude_none=True)]
    assert (turn.model, turn.outcome, turn.input_tokens, turn.output_tokens) == (
        "claude-haiku-4-5",
        "done",
        900,
        40,
    )
    assert turn.duration_ms is not None and turn.duration_ms >= 0
    assert value(keeper, "zantara_turns_stored_total") == 1
    assert value(keeper, "zantara_turn_write_seconds_count") == 1
    assert value(keeper, "zantara_turns_pending") == 0


async def test_an_interrupted_answer_is_stored_with_the_text_sent_before_it_stopped(
    keeper: ConversationKeeper,
) -> None:
    cid = new_conversation_id()
    answer(keeper, cid, "Explain the KITAS.", ["The KITAS is"], outcome="upstream_interrupted", sources=False)
    found = await keeper.conversation(cid, keeper.access(EMAIL, enforced=True))
    assert found is not None
    assert [(t.answer, t.outcome, t.sources) for t in found.turns] == [
        ("The KITAS is", "upstream_interrupted", [])
    ]


async def test_a_follow_up_right_after_the_answer_gets_it_as_history(keeper: ConversationKeeper) -> None:
    access = keeper.access(EMAIL, enforced=True)
    first = await keeper.thread(None, access)
    assert is_conversation_id(first.id) and first.history is None
    answer(keeper, first.id, "Overstay fine?", ["IDR 1,000,000 per day."])
    # Asked before the writer has run: the follow-up waits for this process's write of the turn before it.
    follow_up = await keeper.thread(first.id, access)
    assert follow_up.id == first.id
    assert follow_up.history == [Turn("user", "Overstay fine?"), Turn("assistant", "IDR 1,000,000 per day.")]


async def test_a_question_asked_while_the_first_answer_streams_stays_in_the_conversation(
    keeper: ConversationKeeper,
) -> None:
    access = keeper.access(EMAIL, enforced=True)
    first = await keeper.thread(None, access)
    keeper.expect("local-streaming", first.id, access, "q1")  # still answering, nothing stored yet
    second = await keeper.thread(first.id, access)
    assert second.id == first.id and second.history == []
    stranger = await keeper.thread(first.id, keeper.access("someone.else@example.com", enforced=True))
    assert stranger.id != first.id


async def test_an_id_that_is_not_the_callers_starts_a_new_conversation(keeper: ConversationKeeper) -> None:
    cid = new_conversation_id()
    answer(keeper, cid, "Mine", ["Yes."])
    await keeper.conversation(cid, keeper.access(EMAIL, enforced=True))  # written
    for requested, access in (
        (cid, keeper.access("someone.else@example.com", enforced=True)),
        (new_conversation_id(), keeper.access(EMAIL, enforced=True)),
        ("not-an-id", keeper.access(EMAIL, enforced=True)),
    ):
        thread = await keeper.thread(requested, access)
        assert thread.id != requested and is_conversation_id(thread.id) and thread.history is None


async def test_a_deleted_conversation_is_gone_even_for_an_answer_in_flight(
    keeper: ConversationKeeper,
) -> None:
    access = keeper.access(EMAIL, enforced=True)
    cid = new_conversation_id()
    answer(keeper, cid, "q1", ["a1"])
    stream = Stream(f"local-{new_conversation_id()}", max_events=100, max_bytes=100_000, tag="tag-q2")
    stream.on_finish = keeper.finished
    keeper.expect(stream.tag, cid, access, "q2")  # still answering when the conversation is deleted
    assert await keeper.delete(cid, access)
    stream.meta = AnswerMeta(text=["a2"])
    stream.append("{}", terminal=True, outcome="done")
    assert await keeper.conversation(cid, access) is None
    thread = await keeper.thread(cid, access)
    assert thread.id != cid and thread.history is None


async def test_the_keeper_purges_turns_past_the_retention(keeper: ConversationKeeper) -> None:
    assert keeper.store is not None
    old, recent = new_conversation_id(), new_conversation_id()
    days = keeper.settings.conversation_retention_days
    long_ago = datetime.now(UTC) - timedelta(days=days, hours=1)
    await keeper.store.save([TurnRecord(old, None, long_ago, "old", "a", [], None, False, "done")])
    answer(keeper, recent, "recent", ["a"])
    await keeper.conversation(recent, keeper.access(EMAIL, enforced=True))
    assert await keeper.purge() == 1
    assert value(keeper, "zantara_turns_purged_total") == 1
    assert await keeper.store.count_turns() == 1


async def test_with_storage_off_the_id_is_carried_and_nothing_is_stored(tmp_path: object) -> None:
    settings = Settings(store_conversations=False)
    keeper = ConversationKeeper.from_settings(settings, Metrics(), KeyedHash(None))
    await keeper.start()
    cid = new_conversation_id()
    thread = await keeper.thread(cid, keeper.access(EMAIL, enforced=False))
    assert thread.id == cid and thread.history is None
    answer(keeper, cid, "q", ["a"])
    assert await keeper.conversation(cid, keeper.access(None, enforced=False)) is None
    assert not await keeper.rate(cid, 1, keeper.access(None, enforced=False), 1, None)
    await keeper.aclose()


async def test_a_database_that_is_down_costs_the_turn_with_an_error_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = f"postgresql://zantara:hunter2-SECRET@127.0.0.1:{free_port()}/nowhere"
    keeper = ConversationKeeper.from_settings(
        Settings(database_url=closed),
        Metrics(),
        KeyedHash(None),  # type: ignore[arg-type]
    )
    with caplog.at_level(logging.INFO):
        await keeper.start()  # does not raise: the service starts, turns are lost until the database is back
        assert not keeper.ready
        cid = new_conversation_id()
        thread = await keeper.thread(cid, keeper.access(EMAIL, enforced=False))
        assert thread.id == cid and thread.history is None  # the client's conversation_history stands in
        answer(keeper, cid, "q", ["a"])
        await keeper.aclose()
    assert keeper.metrics.registry.get_sample_value("zantara_turns_lost_total") == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("conversation database is unavailable (" in m for m in errors), errors
    assert any("1 conversation turn(s) not stored" in m for m in errors), errors
    text = caplog.text
    assert "hunter2" not in text and "Traceback" not in text and EMAIL not in text


async def test_turns_queued_at_shutdown_are_written_before_it_ends(db_settings: Settings) -> None:
    keeper = ConversationKeeper.from_settings(db_settings, Metrics(), KeyedHash(SecretStr("test-key")))
    await keeper.start()
    cid = new_conversation_id()
    answer(keeper, cid, "Ended by the drain", ["The KITAS"], outcome="shutting_down")
    await keeper.aclose()  # the writer has not run yet: the shutdown writes what is queued
    reopened = ConversationKeeper.from_settings(db_settings, Metrics(), KeyedHash(SecretStr("test-key")))
    await reopened.start()
    try:
        found = await reopened.conversation(cid, reopened.access(EMAIL, enforced=True))
        assert found is not None and [(t.answer, t.outcome) for t in found.turns] == [
            ("The KITAS", "shutting_down")
        ]
    finally:
        await reopened.aclose()


async def test_an_id_whose_owner_cannot_be_checked_starts_a_new_conversation_with_authentication(
    db_settings: Settings,
) -> None:
    # Not started: the database is not migrated yet (down at start), so nobody can say whose the id is.
    keeper = ConversationKeeper.from_settings(db_settings, Metrics(), KeyedHash(SecretStr("test-key")))
    assert not keeper.ready
    requested = new_conversation_id()
    try:
        enforced = await keeper.thread(requested, keeper.access(EMAIL, enforced=True))
        assert enforced.id != requested and is_conversation_id(enforced.id) and enforced.history is None
        # Without authentication the id is the capability: it is carried on.
        open_ = await keeper.thread(requested, keeper.access(None, enforced=False))
        assert open_.id == requested
    finally:
        await keeper.aclose()
