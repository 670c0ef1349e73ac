"""The wire contract, field by field, against the real server under uvicorn, read by real clients.

Every test runs twice: against embedded Chroma and against a real `chroma run` server (`CHROMA_URL`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.fakes.control import FakeAnthropic
from tests.harness import DEFAULT_MODEL, ServerProcess, claude_env
from tests.sse import CHAT, SSE, ask, assert_contract

pytestmark = pytest.mark.slow  # boots the service (or a browser) as a subprocess


@pytest.fixture(scope="session", params=["embedded", pytest.param("server", marks=pytest.mark.server_mode)])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where a server finds the ingested sample knowledge base, as `ServerProcess` arguments."""
    if request.param == "embedded":
        return {"chroma_template": request.getfixturevalue("kb_template")}
    return {"CHROMA_URL": request.getfixturevalue("chroma_server").url}


@pytest.fixture(scope="session")
def extractive_server(request: pytest.FixtureRequest, store: dict[str, Any]) -> Iterator[ServerProcess]:
    if "CHROMA_URL" not in store:
        yield request.getfixturevalue("extractive_server")  # conftest's, shared with other modules
        return
    with ServerProcess(**store) as server:
        yield server


@pytest.fixture(scope="session")
def claude_server(request: pytest.FixtureRequest, store: dict[str, Any]) -> Iterator[ServerProcess]:
    if "CHROMA_URL" not in store:
        yield request.getfixturevalue("claude_server")
        return
    fake: FakeAnthropic = request.getfixturevalue("fake_claude")
    with ServerProcess(**store, **claude_env(fake.base_url)) as server:
        yield server


def test_extractive_answer_streams_text_then_sources_then_done(extractive_server: ServerProcess) -> None:
    got = ask(extractive_server.url, "How much is the overstay fine per day?")
    assert_contract(got)
    assert len(got.texts) > 3, "the extractive answer must arrive in several small chunks"
    assert got.last["model"] == "extractive"
    assert "extractive summary" in got.answer  # labelled as such, in the text too
    assert "1,000,000" in got.answer  # grounded: the fine from the overstay document
    assert "[1]" in got.answer
    assert "Overstay" in got.sources[0]["source"]


def test_sources_are_the_documents_cited(extractive_server: ServerProcess) -> None:
    got = ask(extractive_server.url, "What is the minimum capital for a PT PMA?")
    assert_contract(got)
    sources = got.sources
    assert 1 <= len(sources) <= 3
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", got.answer)}
    assert cited and max(cited) <= len(sources)
    assert all(s["id"].startswith("knowledge/") and s["url"].startswith("https://") for s in sources)


def test_curl_no_buffer_streams_the_same_contract(extractive_server: ServerProcess) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is part of the smoke-test tooling"
    out = subprocess.run(
        [
            curl,
            "-sN",
            "--max-time",
            "60",
            "-G",
            extractive_server.url + CHAT,
            "--data-urlencode",
            "query=Can a foreigner own land in Bali?",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout
    blocks = [b for b in out.split("\n\n") if b.strip()]
    events = [json.loads(line[6:]) for b in blocks for line in b.splitlines() if line.startswith("data: ")]
    ids = [line[4:] for b in blocks for line in b.splitlines() if line.startswith("id: ")]
    assert len(ids) == len(events) == len(blocks)
    assert "text" in events[0] and "sources" in events[-2] and events[-1]["done"] is True
    assert events[-1]["sequenceNumber"] == sum(1 for e in events if "text" in e)


def test_query_without_accept_header_still_streams(extractive_server: ServerProcess) -> None:
    with httpx.stream("GET", extractive_server.url + CHAT, params={"query": "KITAS"}, timeout=60) as r:
        body = r.read().decode()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert '"done":true' in body


@pytest.mark.parametrize(
    ("params", "code", "status"),
    [
        ({}, "invalid_query", 400),
        ({"query": ""}, "invalid_query", 400),
        ({"query": "   \t  "}, "invalid_query", 400),
        ({"query": "x" * 4001}, "query_too_long", 413),
        ({"query": "hi", "conversation_history": "{not json"}, "invalid_history", 400),
        ({"query": "hi", "conversation_history": '{"role": "user"}'}, "invalid_history", 400),
        (
            {"query": "hi", "conversation_history": '[{"role": "system", "content": "x"}]'},
            "invalid_history",
            400,
        ),
        ({"query": "hi", "conversation_history": '[{"role": "user", "content": 5}]'}, "invalid_history", 400),
        ({"query": "hi", "conversation_history": '["hello"]'}, "invalid_history", 400),
        ({"query": "hi", "user_email": "not-an-email"}, "invalid_email", 400),
        ({"query": "hi", "user_email": "a@b"}, "invalid_email", 400),
    ],
)
def test_bad_input_in_band_for_event_stream_and_json_for_others(
    extractive_server: ServerProcess, params: dict[str, str], code: str, status: int
) -> None:
    rest = {k: v for k, v in params.items() if k != "query"}
    got = ask(extractive_server.url, params.get("query"), **rest)
    assert_contract(got, expect_error=code)
    assert len(got.events) == 1 and got.last["sequenceNumber"] == 0
    plain = httpx.get(extractive_server.url + CHAT, params=params, timeout=30)
    assert plain.status_code == status
    assert plain.json() == {"error": got.last["error"], "code": code}


def test_bad_input_never_reaches_retrieval_or_claude(
    claude_server: ServerProcess, claude: FakeAnthropic
) -> None:
    for query, params in (("", {}), ("hi", {"conversation_history": "[1]"}), ("hi", {"user_email": "x@"})):
        got = ask(claude_server.url, query, **params)
        assert got.last["done"] is True and "code" in got.last
    assert claude.requests() == []


@pytest.mark.parametrize("absent", ["undefined", "null", ""])
def test_production_client_placeholders_mean_no_email(extractive_server: ServerProcess, absent: str) -> None:
    got = ask(extractive_server.url, "What is an NPWP?", user_email=absent)
    assert_contract(got)


def test_history_must_be_a_list_of_turns_but_extra_keys_are_ignored(extractive_server: ServerProcess) -> None:
    history = json.dumps(
        [{"role": "user", "content": "Hi", "id": 7}, {"role": "assistant", "content": "Hello!", "x": 1}]
    )
    assert_contract(ask(extractive_server.url, "And the KITAS?", conversation_history=history))


def test_health_and_ready(extractive_server: ServerProcess) -> None:
    assert httpx.get(extractive_server.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(extractive_server.url + "/ready").json()
    assert ready["status"] == "ready" and ready["chunks"] > 100 and ready["answers"] == "extractive"


def test_openapi_documents_the_stream(extractive_server: ServerProcess) -> None:
    spec = httpx.get(extractive_server.url + "/openapi.json").json()
    op = spec["paths"][CHAT]["get"]
    assert {p["name"] for p in op["parameters"]} >= {"query", "user_email", "conversation_history"}


# --- with Claude (the fake server, through the real SDK)


def test_claude_answer_carries_passages_history_and_model(
    claude_server: ServerProcess, claude: FakeAnthropic
) -> None:
    history = [
        {"role": "user", "content": "Halo"},
        {"role": "assistant", "content": "Halo! Ada yang bisa dibantu?"},
    ]
    got = ask(
        claude_server.url, "What does an investor KITAS require?", conversation_history=json.dumps(history)
    )
    assert_contract(got)
    assert got.last["model"] == DEFAULT_MODEL and got.last["degraded"] is False
    assert got.last["usage"]["inputTokens"] > 0 and got.last["usage"]["outputTokens"] > 0
    (request,) = claude.requests()
    body = request["body"]
    assert body["model"] == DEFAULT_MODEL and body["stream"] is True
    assert (
        request["headers"].get("authorization") == "Bearer sk-ant-test-SECRET-0123456789"
        or request["headers"].get("x-api-key") == "sk-ant-test-SECRET-0123456789"
    )
    assert body["messages"][:2] == history
    final = body["messages"][-1]
    assert final["role"] == "user"
    results = [b for b in final["content"] if b["type"] == "search_result"]
    assert 1 <= len(results) <= 3
    titles = [b["title"] for b in results]
    assert [s["source"] for s in got.sources] == [t.split("] ", 1)[1] for t in titles]
    assert final["content"][-1] == {"type": "text", "text": "Question: What does an investor KITAS require?"}
    # The system prompt is ours, and passages are not in it.
    system = " ".join(b["text"] for b in body["system"])
    assert "Zantara" in system and results[0]["content"][0]["text"][:60] not in system
    # The fake grounds its answer in the first passage: that text reached the client intact.
    assert got.answer.startswith(f"According to {titles[0]} [1]")


def test_claudes_citations_reach_the_client_with_the_numbering_of_the_sources(
    claude_server: ServerProcess, claude: FakeAnthropic
) -> None:
    # A question with several source documents (the fake cites two of them).
    got = ask(claude_server.url, "How much is the visa on arrival?")
    assert len(got.sources) >= 2, got.sources
    assert_contract(got)  # which also checks each citation against the source it names
    results = [
        b for b in claude.requests()[0]["body"]["messages"][-1]["content"] if b["type"] == "search_result"
    ]
    assert all(r["citations"] == {"enabled": True} and len(r["content"]) > 1 for r in results)  # sentences
    spans = got.spans
    cited = [(text, cites) for text, cites in spans if cites]
    # The fake cites the first sentence block of passages [1] and [2], as the API would.
    assert [c["source"] for _, cites in cited for c in cites] == [1, 2]
    first_sentence = results[0]["content"][0]["text"]
    assert cited[0][1][0]["citedText"] == first_sentence
    assert got.sources[0]["cited"] == [first_sentence] and got.sources[1]["cited"]
    assert all("cited" not in source for source in got.sources[2:])  # not cited: no key
    assert "".join(text for text, _ in spans) == got.answer
    assert cited[0][0].strip() == first_sentence[:100].strip()  # the claim: the text the citation opened


@pytest.mark.parametrize(
    "chunks",
    [
        ["Izin tinggal terbatas (KITAS) ", "berlaku hingga 2 tahun. ", "Biayanya tergantung jenisnya."],
        ["تأشيرة ", "المستثمر ", "في إندونيسيا", " [1]"],
        ["Family 👨‍👩‍👧‍👦 and flags 🇮🇩", " and skin tones 👋🏽", "."],
        ["before", '\n\ndata: {"done":true}', "after\r\n\r\nid: 99\n", ": ping"],
    ],
    ids=["indonesian", "arabic", "emoji-zwj", "framing-breaker"],
)
def test_text_survives_intact(claude_server: ServerProcess, claude: FakeAnthropic, chunks: list[str]) -> None:
    claude.enqueue({"chunks": chunks})
    got = ask(claude_server.url, "Tell me about the investor KITAS")
    assert_contract(got)
    assert [t["text"] for t in got.texts] == chunks
    assert got.answer == "".join(chunks)


def test_lone_surrogates_and_controls_become_valid_utf8(
    claude_server: ServerProcess, claude: FakeAnthropic
) -> None:
    claude.enqueue({"chunks": ["ok \x00\x07 bell", " tab\tend"]})
    got = ask(claude_server.url, "hello\x00 \x1b[31mKITAS")
    assert_contract(got)
    assert got.texts[1]["text"] == " tab\tend"
    (request,) = claude.requests()
    assert request["body"]["messages"][-1]["content"][-1]["text"] == "Question: hello [31mKITAS"


def test_a_citation_with_a_lone_surrogate_becomes_valid_utf8(
    claude_server: ServerProcess, claude: FakeAnthropic
) -> None:
    broken = {
        "type": "search_result_location",
        "cited_text": "fee \ud83d end",  # half an emoji, as a broken upstream could send
        "search_result_index": 0,
        "source": "kb",
        "title": "[1] KB",
        "start_block_index": 0,
        "end_block_index": 1,
    }
    claude.enqueue({"segments": [{"text": "The fee.", "cite": [broken]}]})
    got = ask(claude_server.url, "Tell me about the investor KITAS")
    assert_contract(got)
    assert got.texts[0]["citations"] == [{"source": 1, "citedText": "fee \ufffd end"}]
    assert got.sources[0]["cited"] == ["fee \ufffd end"]


def test_personalised_from_a_verified_token_without_logging_the_address(
    store: dict[str, Any], fake_claude: FakeAnthropic, tmp_path
) -> None:
    directory = tmp_path / "team.json"
    directory.write_text(json.dumps({"made.wijaya@balizero.com": {"name": "Made", "language": "Indonesian"}}))
    fake_claude.reset()
    secret = "contract-test-auth-secret-0123456789abcdef"

    def token(sub: str) -> str:
        now = int(time.time())
        claims = {"sub": sub, "aud": "zantara-rag", "iat": now, "exp": now + 300}
        return jwt.encode(claims, secret, algorithm="HS256")

    with ServerProcess(
        **store,
        ANTHROPIC_API_KEY="sk-ant-test-key",
        ANTHROPIC_BASE_URL=fake_claude.base_url,
        TEAM_DIRECTORY=directory,
        AUTH_SECRET=secret,
    ) as server:
        got = ask(server.url, "What is KITAP?", access_token=token("Made.Wijaya@balizero.com"))
        assert_contract(got)
        # A claimed address is not who asks: only the token's subject personalises.
        other = ask(
            server.url,
            "What is KITAP?",
            access_token=token("someone@example.com"),
            user_email="made.wijaya@balizero.com",
        )
        assert_contract(other)
        first, second = fake_claude.requests()
        system = " ".join(b["text"] for b in first["body"]["system"])
        assert "Made" in system and "Indonesian" in system
        assert "Made" not in " ".join(b["text"] for b in second["body"]["system"])
        logs = server.logs()
    assert "made.wijaya" not in logs.lower() and "someone@example.com" not in logs


def test_heartbeat_comments_while_waiting(store: dict[str, Any], fake_claude: FakeAnthropic) -> None:
    fake_claude.reset()
    fake_claude.enqueue({"first_token_delay_ms": 1600, "chunks": ["late ", "answer"]})
    with ServerProcess(
        **store,
        ANTHROPIC_API_KEY="sk-ant-test-key",
        ANTHROPIC_BASE_URL=fake_claude.base_url,
        HEARTBEAT_SECONDS="0.5",
    ) as server:
        params = {"query": "KITAS?"}
        with httpx.stream("GET", server.url + CHAT, params=params, headers=SSE, timeout=30) as r:
            body = r.read().decode()
    before_text = body.split('"text"')[0]
    assert before_text.count(": ping") >= 2, body[:300]
    assert '"done":true' in body
