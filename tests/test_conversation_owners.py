"""Who sees a conversation, what is kept and for how long: authentication on (a conversation is its token
subject's), storage off (an id, nothing kept), retention (the service purges by itself)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.fakes.control import FakeAnthropic
from tests.harness import ServerProcess, claude_env, wait_until
from tests.security import AUTH_SECRET, ask_sse
from tests.test_conversations import answer_text, ask
from zantara_rag.conversations.database import create_engine, migrate
from zantara_rag.conversations.storage import ConversationStore, TurnRecord
from zantara_rag.http.auth import mint_token
from zantara_rag.settings import Settings

ALICE, BOB = "alice@balizero.com", "bob@example.com"
LOG_HASH_KEY = "test-log-hash-key-0123456789abcdef"


def bearer(subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(Settings(auth_secret=AUTH_SECRET), subject, 600)}"}  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def owned_server(mini_kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    """Authentication on, conversations on SQLite, whose file holds an expired turn before the start."""
    server = ServerProcess(
        mini_kb_template,
        AUTO_INGEST="false",
        AUTH_SECRET=AUTH_SECRET,
        LOG_HASH_KEY=LOG_HASH_KEY,
        CONVERSATION_RETENTION_DAYS="30",
        **claude_env(fake_claude.base_url),
    )

    async def seed() -> None:
        engine = create_engine(Settings(chroma_path=server.chroma))
        await migrate(engine)
        old = datetime.now(UTC) - timedelta(days=31)
        await ConversationStore(engine).save(
            [TurnRecord("e" * 32, None, old, "expired", "a", [], None, False, "done")]
        )
        await engine.dispose()

    asyncio.run(seed())
    with server:
        yield server


def test_the_service_purges_expired_turns_by_itself(owned_server: ServerProcess) -> None:
    wait_until(lambda: "purged 1 expired conversation turn(s)" in owned_server.logs(), timeout=30)

    async def count() -> int:
        engine = create_engine(Settings(chroma_path=owned_server.chroma))
        try:
            return await ConversationStore(engine).count_turns()
        finally:
            await engine.dispose()

    assert asyncio.run(count()) == 0


def test_a_conversation_belongs_to_its_token_subject(
    owned_server: ServerProcess, claude: FakeAnthropic
) -> None:
    with httpx.Client(base_url=owned_server.url, timeout=30) as client:
        mine = ask(client, "How much is the overstay fine?", headers=bearer(ALICE))
        cid = mine.last["conversationId"]
        assert client.get(f"/conversations/{cid}", headers=bearer(ALICE)).status_code == 200
        for headers in (bearer(BOB), bearer(ALICE.upper().replace("@", "+x@"))):
            assert client.get(f"/conversations/{cid}", headers=headers).status_code == 404
            assert client.delete(f"/conversations/{cid}", headers=headers).status_code == 404
            rating = {"conversation_id": cid, "turn": 1, "rating": -1}
            assert client.post("/feedback", json=rating, headers=headers).status_code == 404
        unauthenticated = client.get(f"/conversations/{cid}")
        assert unauthenticated.status_code == 401 and unauthenticated.json()["code"] == "unauthorized"
        # Bob naming Alice's conversation gets a new one, and none of her turns.
        bobs = ask(client, "And for 10 days?", conversation_id=cid, headers=bearer(BOB))
        assert bobs.last["conversationId"] != cid
        assert len(claude.requests()[-1]["body"]["messages"]) == 1
        # Alice's follow-up carries her turn; the subject's case does not matter.
        ask(client, "And for 10 days?", conversation_id=cid, headers=bearer(ALICE.upper()))
        assert claude.requests()[-1]["body"]["messages"][1]["content"] == answer_text(mine)

        listed = client.get("/conversations", headers=bearer(ALICE)).json()["conversations"]
        assert [(c["conversationId"], c["turns"], c["title"]) for c in listed][:1] == [
            (cid, 2, "How much is the overstay fine?")
        ]
        assert cid not in {
            c["conversationId"]
            for c in client.get("/conversations", headers=bearer(BOB)).json()["conversations"]
        }
        assert client.get("/conversations").status_code == 401
    logs = owned_server.logs()
    assert ALICE not in logs and BOB not in logs


def test_owners_keep_their_hash_across_restarts_without_a_log_hash_key() -> None:
    from zantara_rag.logs import KeyedHash
    from zantara_rag.settings import Settings

    derived = Settings(auth_secret=AUTH_SECRET, log_hash_key=None)
    # Two processes (a restart, a second machine) with the same AUTH_SECRET: the same owner.
    assert KeyedHash.from_settings(derived)(ALICE) == KeyedHash.from_settings(derived)(ALICE)
    other = Settings(auth_secret=AUTH_SECRET + "-rotated", log_hash_key=None)
    assert KeyedHash.from_settings(other)(ALICE) != KeyedHash.from_settings(derived)(ALICE)
    explicit = Settings(auth_secret=AUTH_SECRET, log_hash_key=LOG_HASH_KEY)
    assert KeyedHash.from_settings(explicit)(ALICE) == KeyedHash(explicit.log_hash_key)(ALICE)
    assert KeyedHash.from_settings(explicit)(ALICE) != KeyedHash.from_settings(derived)(ALICE)
    # Without either, a random key per process: nothing else to derive it from.
    anonymous = Settings(auth_secret=None, log_hash_key=None)
    assert KeyedHash.from_settings(anonymous)(ALICE) != KeyedHash.from_settings(anonymous)(ALICE)


def test_with_storage_off_an_id_is_issued_and_history_comes_from_the_client(
    mini_kb_template: Path, fake_claude: FakeAnthropic, claude: FakeAnthropic
) -> None:
    env = {**claude_env(fake_claude.base_url), "STORE_CONVERSATIONS": "false"}
    with (
        ServerProcess(mini_kb_template, AUTO_INGEST="false", **env) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        first = ask(client, "How much is the overstay fine?")
        cid = first.last["conversationId"]
        history = [
            {"role": "user", "content": "How much is the overstay fine?"},
            {"role": "assistant", "content": answer_text(first)},
        ]
        second = ask_sse(
            client, "And for 10 days?", conversation_id=cid, conversation_history=json.dumps(history)
        )
        assert second.last["conversationId"] == cid
        assert claude.requests()[-1]["body"]["messages"][:2] == history
        assert client.get(f"/conversations/{cid}").status_code == 404
        assert (
            client.post("/feedback", json={"conversation_id": cid, "turn": 1, "rating": 1}).status_code == 404
        )
        assert not (server.chroma.parent / "zantara.db").exists()
