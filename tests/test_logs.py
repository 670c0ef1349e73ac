"""The real server's log output: one JSON line per request and per stream end, with the request id, and
never the API key, an e-mail address, the question, the URL's query string or a traceback."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.control import FakeAnthropic
from tests.harness import DEFAULT_MODEL, ServerProcess, claude_env
from tests.sse import CHAT, ask, assert_contract

pytestmark = pytest.mark.slow  # boots the service (or a browser) as a subprocess

HASH_KEY = "log-hash-key-for-tests-0123456789"
EMAIL = "Jane.Marker@example.com"
MARKER = "zq-unique-marker-7f3a"
QUERY = f"What does an investor KITAS require? {MARKER}"
ACCESS_TOKEN = "tok-SECRET-access-5e1b"
UPSTREAM_DETAIL = "upstream-secret-detail-9z"


def lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line the server wrote, parsed: a line that is not JSON fails the test."""
    return [json.loads(line) for line in server.logs().splitlines() if line.strip()]


def requests_logged(server: ServerProcess, request_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The lines carrying `request_id`, once there are `count` of them (a line is written as a body ends)."""
    deadline = time.monotonic() + 5
    while True:
        found = [line for line in lines(server) if line.get("request_id") == request_id]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def access_and_end(server: ServerProcess, request_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one access line and the one stream-end line of a chat request."""
    found = requests_logged(server, request_id, count=2)
    access = [line for line in found if line["msg"] == "request"]
    ends = [line for line in found if line["msg"] == "stream end"]
    assert len(access) == len(ends) == 1, found
    return access[0], ends[0]


@pytest.fixture(scope="module")
def server(kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    with ServerProcess(
        kb_template, LOG_HASH_KEY=HASH_KEY, TRUST_PROXY_HEADERS="true", **claude_env(fake_claude.base_url)
    ) as server:
        yield server


def test_a_stream_is_logged_by_request_id_with_a_keyed_hash_of_the_user(
    server: ServerProcess, claude: FakeAnthropic
) -> None:
    headers = {
        "X-Request-ID": "test-req.42_x",
        "Fly-Request-Id": "01FLYREQ-sin",
        "Fly-Client-IP": "203.0.113.7",
    }
    got = ask(server.url, QUERY, user_email=EMAIL, headers=headers, access_token=ACCESS_TOKEN)
    assert_contract(got)
    assert got.headers["x-request-id"] == "test-req.42_x"
    access, end = access_and_end(server, "test-req.42_x")
    assert access == {
        "ts": access["ts"],
        "level": "info",
        "logger": "zantara_rag.access",
        "msg": "request",
        "request_id": "test-req.42_x",
        "method": "GET",
        "path": CHAT,
        "status": 200,
        "duration_ms": access["duration_ms"],
        "client_ip": "203.0.113.7",
        "fly_request_id": "01FLYREQ-sin",
    }
    expected_user = hmac.new(HASH_KEY.encode(), EMAIL.lower().encode(), hashlib.sha256).hexdigest()[:24]
    usage = got.last["usage"]
    stream_id = got.ids[0].rsplit(":", 1)[0]
    expected_stream = hmac.new(HASH_KEY.encode(), f"stream\x00{stream_id}".encode(), hashlib.sha256)
    assert end["msg"] == "stream end" and end["stream"] == expected_stream.hexdigest()[:24]
    assert "stream_id" not in end and stream_id.split("-", 1)[1] not in server.logs(), (
        "the id replays a stream"
    )
    assert end["user"] == expected_user
    assert end["outcome"] == "done" and end["model"] == DEFAULT_MODEL and end["degraded"] is False
    assert end["text_chunks"] == len(got.texts) and end["resumes"] == 0
    assert (end["input_tokens"], end["output_tokens"]) == (usage["inputTokens"], usage["outputTokens"])
    assert 0 < end["time_to_first_chunk_ms"] <= end["duration_ms"] <= access["duration_ms"]
    assert "query" not in end


def test_an_invalid_request_id_is_replaced(server: ServerProcess) -> None:
    for bad in ("has space", "x" * 129, "semi;colon", "naïve"):
        response = httpx.get(server.url + "/health", headers={"X-Request-ID": bad.encode("utf-8")})
        generated = response.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
        assert requests_logged(server, generated)[0]["path"] == "/health"
    assert not [line for line in lines(server) if line.get("request_id") == "has space"]


def test_refusals_and_failures_are_logged_without_secrets_or_user_data(
    server: ServerProcess, claude: FakeAnthropic
) -> None:
    # Claude refuses the key (the answer degrades to extractive and an operator is told), with a message
    # that must not travel; an unlisted origin; a path with an address in it; a bad e-mail.
    claude.enqueue({"status": 401, "error_message": UPSTREAM_DETAIL})
    assert_contract(ask(server.url, QUERY, user_email=EMAIL, access_token=ACCESS_TOKEN))
    refused = httpx.get(
        server.url + CHAT, params={"query": QUERY}, headers={"Origin": "https://evil.example"}
    )
    assert refused.status_code == 403 and refused.headers["x-request-id"]
    assert httpx.get(f"{server.url}/kb/{EMAIL}").status_code == 404
    assert_contract(ask(server.url, QUERY, user_email="not-an-address"), expect_error="invalid_email")

    logged = lines(server)
    text = server.logs()
    assert any(line["level"] == "error" and "(http_401)" in line["msg"] for line in logged)
    assert any(line.get("status") == 403 and line.get("path") == CHAT for line in logged)
    assert any(line.get("path") == "/kb/<email>" and line.get("status") == 404 for line in logged)
    for secret in ("sk-ant-test-SECRET", ACCESS_TOKEN, UPSTREAM_DETAIL, MARKER, "@example.com", "Traceback"):
        assert secret not in text, secret
    assert EMAIL.lower() not in text.lower() and "jane.marker" not in text.lower()
    assert "query=" not in text and "?" not in "".join(str(line.get("path", "")) for line in logged)


def test_the_question_is_logged_only_when_asked(kb_template: Path) -> None:
    with ServerProcess(kb_template, LOG_QUERY_TEXT="true") as server:
        got = ask(server.url, f"{QUERY} reply to {EMAIL}", user_email=EMAIL, headers={"X-Request-ID": "q-1"})
        assert_contract(got)
        _, end = access_and_end(server, "q-1")
    assert end["query"] == f"{QUERY} reply to <email>"
    assert "user" in end and EMAIL.lower() not in server.logs().lower()
