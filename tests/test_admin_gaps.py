"""`GET /admin/gaps` in-process: the real app (lifespan run by hand) over a real embedded Chroma, the real
embedder and the conversation database on a real SQLite file, reached through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.admin import QUOKKA, bearer, token
from tests.test_admin_api import files, running, settings_for
from tests.test_app_inprocess import clear_settings_env
from zantara_rag.cli import main
from zantara_rag.conversations.database import database_url
from zantara_rag.conversations.storage import TurnRecord

GAPS = "/admin/gaps"
USER = "guest@example.com"
OFF_TOPIC = "What's the capital of France?"
QUOKKA_QUESTION = "How much does the Quokka permit cost per day?"
KINDS = ("no_source", "degraded", "rated_down")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_env(monkeypatch)


async def ask(client: httpx.AsyncClient, query: str, **params: str) -> dict[str, Any]:
    """One question as a signed-in user; the events of its stream, by kind."""
    reply = await client.get(
        "/bali-zero/chat-stream",
        params={"query": query, **params},
        headers={"Accept": "text/event-stream", **bearer(token(USER, scope=None))},
    )
    events = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events[-1].get("done") is True and "error" not in events[-1], events[-1]
    return {"sources": next(e["sources"] for e in events if "sources" in e), "done": events[-1]}


def examples(report: dict[str, Any], kind: str) -> set[str]:
    return {question for group in report[kind] for question in group["examples"].values()}


async def test_404_without_auth_secret_401_without_a_token_403_without_the_admin_scope(
    tmp_path: Path,
) -> None:
    async for _, client in running(settings_for(tmp_path / "off", auth_secret=None)):
        reply = await client.get(GAPS, headers=bearer())
        assert reply.status_code == 404 and reply.json()["code"] == "not_found"
    async for _, client in running(settings_for(tmp_path / "on")):
        for headers, status, code in [
            ({}, 401, "unauthorized"),
            (bearer(token(scope=None)), 403, "forbidden"),
            (bearer(token(USER, scope="chat")), 403, "forbidden"),
        ]:
            reply = await client.get(GAPS, params={"since": "7d"}, headers=headers)
            assert (reply.status_code, reply.json()["code"]) == (status, code), headers
        assert (await client.get(GAPS, params={"access_token": token()})).status_code == 401
        for since in ("7", "0d", "7y", "x" * 17):
            refused = await client.get(GAPS, params={"since": since}, headers=bearer())
            assert (refused.status_code, refused.json()["code"]) == (400, "invalid_request"), since
        assert "/admin/gaps" in (await client.get("/openapi.json")).json()["paths"]


async def test_the_report_lists_an_off_topic_question_under_no_source_and_a_rating_of_minus_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path)
    async for app, client in running(settings):
        uploaded = await client.post(
            "/admin/documents", files=files(("q.md", QUOKKA.encode())), headers=bearer()
        )
        assert uploaded.status_code == 200
        empty = (await client.get(GAPS, headers=bearer())).json()
        assert empty["answers"] == 0 and all(empty[kind] == [] for kind in KINDS)

        quokka = await ask(client, QUOKKA_QUESTION)
        assert quokka["sources"]
        off_topic = await ask(client, OFF_TOPIC)
        assert off_topic["sources"] == []
        rating = {"conversation_id": quokka["done"]["conversationId"], "turn": 1, "rating": -1}
        rated = await client.post("/feedback", json=rating, headers=bearer(token(USER, scope=None)))
        assert rated.status_code == 204

        reply = await client.get(GAPS, params={"since": "7d"}, headers=bearer())
        assert reply.status_code == 200
        report = reply.json()
        assert set(report) == {"since", "until", "answers", *KINDS}
        until, since = datetime.fromisoformat(report["until"]), datetime.fromisoformat(report["since"])
        assert until - since == timedelta(days=7)
        assert report["answers"] == 2
        assert examples(report, "no_source") == {OFF_TOPIC}
        assert examples(report, "rated_down") == {QUOKKA_QUESTION}
        assert report["degraded"] == []
        (group,) = report["no_source"]
        assert group["count"] == 1 and group["conversations"] == 1 and group["examples"] == {"en": OFF_TOPIC}

        # `since` is the window: a turn of ten days ago is in two weeks, not in seven days.
        store = app.state.services.conversations.store
        old = datetime.now(UTC) - timedelta(days=10)
        await store.save([TurnRecord("a" * 32, None, old, "Where is Atlantis?", "…", [], "m", False, "done")])
        assert "Where is Atlantis?" not in examples(
            (await client.get(GAPS, headers=bearer())).json(), "no_source"
        )
        wider = (await client.get(GAPS, params={"since": "2w"}, headers=bearer())).json()
        assert examples(wider, "no_source") == {OFF_TOPIC, "Where is Atlantis?"} and wider["answers"] == 3

        # The same report as `zantara-rag report gaps --format json` on the same database.
        monkeypatch.setenv("DATABASE_URL", database_url(settings).set(drivername="sqlite").render_as_string())
        printed = await asyncio.to_thread(cli_report, "2w")
        assert {k: printed[k] for k in ("answers", *KINDS)} == {k: wider[k] for k in ("answers", *KINDS)}


def cli_report(since: str) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", "gaps", "--since", since, "--format", "json"]) == 0
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


async def test_a_rating_of_an_answer_in_a_continued_conversation_names_its_turn(tmp_path: Path) -> None:
    async for _, client in running(settings_for(tmp_path)):
        await client.post("/admin/documents", files=files(("q.md", QUOKKA.encode())), headers=bearer())
        first = await ask(client, QUOKKA_QUESTION)
        cid = first["done"]["conversationId"]
        second = await ask(client, "And which documents do I bring for it?", conversation_id=cid)
        assert second["done"]["conversationId"] == cid
        rating = {"conversation_id": cid, "turn": 2, "rating": -1}
        assert (
            await client.post("/feedback", json=rating, headers=bearer(token(USER, scope=None)))
        ).status_code == 204
        report = (await client.get(GAPS, headers=bearer())).json()
        assert examples(report, "rated_down") == {"And which documents do I bring for it?"}


async def test_without_stored_conversations_there_is_no_report(tmp_path: Path) -> None:
    async for _, client in running(settings_for(tmp_path, store_conversations=False)):
        reply = await client.get(GAPS, headers=bearer())
        assert reply.status_code == 404 and "STORE_CONVERSATIONS=false" in reply.json()["error"]


async def test_a_database_that_cannot_be_read_is_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1: every connection is refused at once.
    unreachable = "postgresql://zantara:secret-pw@127.0.0.1:1/zantara"
    async for _, client in running(settings_for(tmp_path, database_url=unreachable)):
        with caplog.at_level("ERROR", logger="zantara_rag.http.admin"):
            reply = await client.get(GAPS, headers=bearer())
        assert reply.status_code == 503 and reply.json()["code"] == "conversations_unavailable"
        assert "secret-pw" not in reply.text and "secret-pw" not in caplog.text
        assert any("knowledge-gaps report failed" in r.getMessage() for r in caplog.records)
