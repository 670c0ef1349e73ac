"""No secret, token, e-mail address, question or stack trace in any log line or client response.

The secured server (authentication on, a known API key, a team directory, debug logs) is put through
successes and failures: tokens in URLs and headers, e-mail addresses, bad input, Claude failing with
500/401/mid-stream errors. Then its whole captured log, and every response, is searched for each of them.
"""

from __future__ import annotations

import re
import time

import httpx
import jwt
import pytest

from tests.fakes.control import FakeAnthropic
from tests.harness import ServerProcess, wait_until
from tests.security import (
    API_KEY,
    AUTH_SECRET,
    AUTH_SECRET_PREVIOUS,
    LOG_HASH_KEY,
    MEMBER_EMAIL,
    Reply,
    ask_plain,
    ask_sse,
)
from zantara_rag.errors import ZantaraError
from zantara_rag.http.admission import Admission
from zantara_rag.settings import Settings

EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
QUESTION_MARKER = "zebra-orchid-question-marker"
STORAGE_PASSWORD = "hunter2-storage-password"


def token(secret: str, sub: str, ttl: int = 300) -> str:
    now = int(time.time())
    claims = {"sub": sub, "aud": "zantara-rag", "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


def exercise(server: ServerProcess, claude: FakeAnthropic) -> tuple[list[str], list[str], int]:
    """Successes and failures of every kind; returns the secrets used, every client-visible text and the
    number of requests made."""
    valid = token(AUTH_SECRET, MEMBER_EMAIL)
    previous = token(AUTH_SECRET_PREVIOUS, "guest.user@example.com")
    expired = token(AUTH_SECRET, "expired.user@example.com", ttl=-60)
    forged = token("a-forged-secret-that-is-long-enough-123", "forger@example.com")
    secrets = [API_KEY, AUTH_SECRET, AUTH_SECRET_PREVIOUS, LOG_HASH_KEY, valid, previous, expired, forged]
    secrets += [t.rsplit(".", 1)[1] for t in (valid, previous, expired, forged)]  # signatures alone
    question = f"What is the overstay fine? {QUESTION_MARKER}"
    claude.enqueue(
        {"status": 500},
        {"status": 500},
        {"status": 500},  # primary twice, fallback once: extractive
        {"status": 401},  # a rejected key: logged loudly, answered extractively
        {"chunks": ["Part one. ", "Part two."], "error_after_chunks": 1},
        {"chunks": ["Cut ", "here"], "cut_after_chunks": 1},
    )
    replies: list[Reply] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        bearer = {"Authorization": f"Bearer {valid}"}
        for _ in range(4):  # the enqueued failures, in order
            replies.append(
                ask_sse(client, question, access_token=valid, user_email="someone.else@example.com")
            )
        replies.append(ask_sse(client, question, headers=bearer))
        replies.append(ask_sse(client, question, access_token=previous))
        replies.append(ask_sse(client, question, access_token=expired))
        replies.append(ask_plain(client, question, access_token=forged))
        replies.append(ask_plain(client, question, headers={"Authorization": f"Bearer {forged}"}))
        replies.append(ask_sse(client, question, access_token=valid, user_email="not-an-email@"))
        replies.append(ask_plain(client, question, access_token=valid, conversation_history="[{bad json"))
        replies.append(ask_sse(client, "", access_token=valid))
        replies.append(ask_sse(client, question, access_token=valid, headers={"Last-Event-ID": "bogus:1"}))
    visible = [r.body.decode("utf-8", "replace") for r in replies] + [
        e.data for r in replies for e in r.events
    ]
    assert any(r.last.get("code") == "unauthorized" for r in replies if r.events)
    assert any(r.status == 401 for r in replies)
    assert any(r.events and r.last.get("degraded") is True for r in replies), (
        "the upstream failures did not run"
    )
    return secrets, visible, len(replies)


def test_no_secret_email_question_or_trace_in_logs_or_responses(
    secured_server: ServerProcess, claude: FakeAnthropic
) -> None:
    secrets, visible, asked = exercise(secured_server, claude)
    # Each request's line is written when its response has ended, just after the client has read it.
    wait_until(lambda: secured_server.logs().count('"msg": "request"') >= asked, timeout=10)
    logs = secured_server.logs()
    # The failure paths ran and were logged: otherwise the test would prove nothing.
    assert '"stream end"' in logs and "http_500" in logs and "http_401" in logs
    for secret in secrets:
        assert secret not in logs, "a secret or token reached the log"
        assert not any(secret in text for text in visible), "a secret or token reached a client"
    assert QUESTION_MARKER not in logs, "the question was logged without LOG_QUERY_TEXT"
    assert not EMAIL.findall(logs), EMAIL.findall(logs)[:5]
    assert "Traceback" not in logs and 'File "' not in logs
    for text in visible:
        assert "Traceback" not in text and "api_error" not in text and "Internal server error" not in text
        assert MEMBER_EMAIL not in text and "someone.else@example.com" not in text


def test_a_bad_storage_uri_refuses_to_boot_without_echoing_its_password() -> None:
    from pydantic import ValidationError

    from zantara_rag.settings import describe_validation_error

    with pytest.raises(ValidationError) as refused:
        Settings(rate_limit_storage_uri=f"ftp://user:{STORAGE_PASSWORD}@cache.internal")
    assert STORAGE_PASSWORD not in describe_validation_error(refused.value)
    assert "RATE_LIMIT_STORAGE_URI" in describe_validation_error(refused.value)


def test_an_unusable_storage_uri_is_reported_without_its_password() -> None:
    settings = Settings(rate_limit_storage_uri=f"redis://:{STORAGE_PASSWORD}@127.0.0.1:1/0")
    assert STORAGE_PASSWORD not in repr(settings) and STORAGE_PASSWORD not in str(settings.model_dump())
    try:
        Admission.from_settings(settings)
    except ZantaraError as exc:  # without the redis extra installed
        assert STORAGE_PASSWORD not in exc.message and "RATE_LIMIT_STORAGE_URI" in exc.message
