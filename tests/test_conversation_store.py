"""The conversation store against real databases: SQLite here, PostgreSQL in the slow layer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from zantara_rag.conversations.keeper import new_conversation_id
from zantara_rag.conversations.storage import Access, ConversationStore, TurnRecord
from zantara_rag.conversations.tables import Feedback, TurnRow

NOW = datetime.now(UTC)
ALICE = Access("alice-hash", enforced=True)
BOB = Access("bob-hash", enforced=True)
ANYONE = Access(None, enforced=False)


def record(
    conversation: str, question: str, *, at: datetime = NOW, owner: str | None = "alice-hash", **kw: object
) -> TurnRecord:
    fields: dict[str, object] = {
        "answer": f"Answer to {question}",
        "sources": [{"source": "Overstay fines", "snippet": "IDR 1,000,000 per day", "similarity": 0.61}],
        "model": "claude-haiku-4-5",
        "degraded": False,
        "outcome": "done",
    }
    fields.update(kw)
    return TurnRecord(conversation, owner, at, question, **fields)  # type: ignore[arg-type]


async def rows(engine: AsyncEngine, table: type) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def test_turns_are_numbered_in_order_and_read_back_as_sent(engine: AsyncEngine) -> None:
    store = ConversationStore(engine)
    cid = new_conversation_id()
    await store.save([record(cid, "How much is the overstay fine?", input_tokens=1830, first_chunk_ms=611.4)])
    await store.save([record(cid, "And for a KITAS?", at=NOW + timedelta(seconds=30))])
    found = await store.conversation(cid, ALICE)
    assert found is not None
    assert [t.number for t in found.turns] == [1, 2]
    first = found.turns[0]
    assert first.question == "How much is the overstay fine?" and first.answer.startswith("Answer to")
    assert first.sources[0]["snippet"] == "IDR 1,000,000 per day" and first.input_tokens == 1830
    assert first.first_chunk_ms == 611.4 and first.asked_at == NOW
    assert found.updated_at == NOW + timedelta(seconds=30)
    recent = await store.recent_turns(cid, ALICE, limit=1)
    assert recent is not None and [t.question for t in recent] == ["And for a KITAS?"]


async def test_a_batch_numbers_each_conversation_on_its_own(engine: AsyncEngine) -> None:
    store = ConversationStore(engine)
    a, b = new_conversation_id(), new_conversation_id()
    await store.save([record(a, "a1"), record(b, "b1"), record(a, "a2")])
    for cid, expected in ((a, ["a1", "a2"]), (b, ["b1"])):
        found = await store.conversation(cid, ANYONE)
        assert found is not None and [(t.number, t.question) for t in found.turns] == list(
            enumerate(expected, start=1)
        )


async def test_with_authentication_only_the_owner_sees_a_conversation(engine: AsyncEngine) -> None:
    store = ConversationStore(engine)
    cid = new_conversation_id()
    await store.save([record(cid, "Mine")])
    assert await store.conversation(cid, BOB) is None
    assert await store.recent_turns(cid, BOB, limit=5) is None
    assert not await store.rate(cid, 1, BOB, -1, None, NOW)
    assert not await store.delete(cid, BOB)
    assert await store.conversation(cid, Access(None, enforced=True)) is None
    # Without authentication the id is the capability.
    assert await store.conversation(cid, ANYONE) is not None
    assert await store.conversation(cid, ALICE) is not None


async def test_an_enforced_turn_is_never_added_to_another_user_s_conversation(engine: AsyncEngine) -> None:
    # Bob named Alice's id while her history could not be read: his turn must not become her history.
    store = ConversationStore(engine)
    cid = new_conversation_id()
    assert await store.save([record(cid, "Alice's question", enforced=True)]) == 0
    refused = await store.save(
        [
            record(cid, "Bob's question", owner="bob-hash", enforced=True),
            record(cid, "Alice again", enforced=True),
        ]
    )
    assert refused == 1
    found = await store.conversation(cid, ALICE)
    assert found is not None and [t.question for t in found.turns] == ["Alice's question", "Alice again"]
    # Without authentication the id is the capability: a turn from anyone who holds it is added.
    assert await store.save([record(cid, "Anyone", owner=None)]) == 0
    found = await store.conversation(cid, ALICE)
    assert found is not None and len(found.turns) == 3


async def test_a_second_rating_replaces_the_first_and_missing_turns_are_refused(engine: AsyncEngine) -> None:
    store = ConversationStore(engine)
    cid = new_conversation_id()
    await store.save([record(cid, "q1"), record(cid, "q2")])
    assert await store.rate(cid, 2, ALICE, -1, "Wrong fee", NOW)
    assert await store.rate(cid, 2, ALICE, 1, None, NOW)
    assert not await store.rate(cid, 3, ALICE, 1, None, NOW)
    assert not await store.rate(new_conversation_id(), 1, ALICE, 1, None, NOW)
    found = await store.conversation(cid, ALICE)
    assert found is not None
    assert [(t.rating, t.comment) for t in found.turns] == [(None, None), (1, None)]
    assert await rows(engine, Feedback) == 1


async def test_delete_removes_the_turns_and_their_feedback(engine: AsyncEngine) -> None:
    store = ConversationStore(engine)
    keep, gone = new_conversation_id(), new_conversation_id()
    await store.save([record(keep, "kept"), record(gone, "q1"), record(gone, "q2")])
    assert await store.rate(gone, 1, ALICE, -1, None, NOW)
    assert await store.delete(gone, ALICE)
    assert await store.conversation(gone, ALICE) is None
    assert not await store.delete(gone, ALICE)
    assert await rows(engine, TurnRow) == 1 and await rows(engine, Feedback) == 0


async def test_purge_removes_expired_turns_and_the_conversations_they_emptied(engine: AsyncEngine) -> None:
    store = ConversationStore(engine)
    old, mixed = new_conversation_id(), new_conversation_id()
    long_ago = NOW - timedelta(days=100)
    await store.save([record(old, "old", at=long_ago), record(mixed, "old too", at=long_ago)])
    await store.save([record(mixed, "recent")])
    assert await store.rate(old, 1, ALICE, -1, None, NOW)
    assert await store.purge(NOW - timedelta(days=90)) == 2
    assert await store.conversation(old, ALICE) is None
    found = await store.conversation(mixed, ALICE)
    assert found is not None and [t.question for t in found.turns] == ["recent"]
    assert await rows(engine, Feedback) == 0
    assert await store.purge(NOW - timedelta(days=90)) == 0


async def test_listing_and_erasing_by_owner(engine: AsyncEngine) -> None:
    store = ConversationStore(engine)
    first, second, bobs = new_conversation_id(), new_conversation_id(), new_conversation_id()
    await store.save([record(first, "First question", at=NOW - timedelta(hours=2))])
    await store.save([record(second, "Second question", at=NOW - timedelta(hours=1))])
    await store.save([record(second, "Follow-up", at=NOW)])
    await store.save([record(bobs, "Bob's", owner="bob-hash")])
    listed = await store.conversations("alice-hash", limit=10)
    assert [(c.id, c.turns, c.title) for c in listed] == [
        (second, 2, "Second question"),
        (first, 1, "First question"),
    ]
    assert [c.id for c in await store.conversations("alice-hash", limit=1)] == [second]
    assert await store.erase_owner("alice-hash") == 2
    assert await store.conversations("alice-hash", limit=10) == []
    assert await store.conversation(bobs, BOB) is not None


async def test_gap_rows_carry_what_the_report_groups_on(engine: AsyncEngine) -> None:
    store = ConversationStore(engine)
    cid = new_conversation_id()
    await store.save(
        [
            record(cid, "Best pizza in Canggu?", sources=[]),
            record(cid, "Overstay fine?", degraded=True, outcome="degraded", model="extractive"),
            record(cid, "Old one", at=NOW - timedelta(days=30), sources=[]),
        ]
    )
    assert await store.rate(cid, 2, ALICE, -1, None, NOW)
    gaps = await store.gap_rows(NOW - timedelta(days=7))
    assert {(g.question, g.sourced, g.degraded, g.rating) for g in gaps} == {
        ("Best pizza in Canggu?", False, False, None),
        ("Overstay fine?", True, True, -1),
    }


@pytest.mark.parametrize("text", ["Überweisung 💸 \u202e", "x" * 20_000])
async def test_any_text_round_trips(engine: AsyncEngine, text: str) -> None:
    store = ConversationStore(engine)
    cid = new_conversation_id()
    await store.save([record(cid, text, answer=text)])
    found = await store.conversation(cid, ANYONE)
    assert found is not None and found.turns[0].question == text == found.turns[0].answer
