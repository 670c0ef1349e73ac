"""Upstream faults, client disconnects and slow clients, against the real server and the fake Claude.

What the client sees for each fault, that every stream ends with done or an error event, and that
nothing is left running afterwards: the fake's open streams and the app's gauges return to zero.
Resume tests are in test_resume.py; this server has RESUME_GRACE_SECONDS=0 (cancel as soon as the
reader leaves).
"""

from __future__ import annotations

import json
import random
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest

from tests.chroma_server import ChromaServer
from tests.fakes.answers import answer_so_far, refuses_prefill
from tests.fakes.anthropic_server import default_answer
from tests.fakes.control import FakeAnthropic
from tests.harness import KNOWLEDGE, ServerProcess, free_port, wait_until
from tests.sse import CHAT, ask, assert_contract
from tests.streaming import (
    Conversation,
    assert_accounted,
    async_client,
    leg,
    metrics,
    rss_mb,
    run,
    wait_settled,
)

pytestmark = pytest.mark.slow  # boots the service (or a browser) as a subprocess

PRIMARY, FALLBACK = "claude-haiku-4-5", "claude-sonnet-4-6"
API_KEY = "sk-ant-test-SECRET-faults-0123456789"
QUESTION = "How much is the overstay fine in Indonesia?"


@pytest.fixture(scope="module")
def server(kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    with ServerProcess(
        kb_template,
        ANTHROPIC_API_KEY=API_KEY,
        ANTHROPIC_BASE_URL=fake_claude.base_url,
        ANTHROPIC_MODEL=PRIMARY,
        ANTHROPIC_FALLBACK_MODEL=FALLBACK,
        UPSTREAM_RETRY_AFTER_CAP="0.3",
        UPSTREAM_FIRST_TOKEN_TIMEOUT="1.5",
        UPSTREAM_IDLE_TIMEOUT="1.5",
        UPSTREAM_TOTAL_TIMEOUT="8",
        RESUME_GRACE_SECONDS="0",
        MAX_OUTPUT_TOKENS="20000",
        SLOW_CLIENT_MAX_LAG_EVENTS="200",
        RESUME_MAX_EVENTS="1000",
        RESUME_MAX_BYTES="4000000",
    ) as server:
        yield server
        assert_no_secrets(server)  # after every test of the module


@pytest.fixture
def fake(server: ServerProcess, claude: FakeAnthropic) -> Iterator[FakeAnthropic]:
    """The reset fake; after the test, nothing may be left running in the fake or the app, and no request
    to a model of the 4.6 generation or later ended with an assistant turn."""
    yield claude
    wait_settled(server, claude)
    assert_no_prefill(claude)


def assert_no_prefill(fake: FakeAnthropic) -> None:
    for record in fake.requests():
        if isinstance(record["body"], dict) and refuses_prefill(record["model"]):
            assert record["body"]["messages"][-1]["role"] == "user", record["model"]


def models(fake: FakeAnthropic) -> list[str]:
    return [r["model"] for r in fake.requests()]


def error_logs(server: ServerProcess) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("level") == "error"]


def assert_no_secrets(server: ServerProcess) -> None:
    logs = server.logs()
    assert API_KEY not in logs and "SECRET" not in logs
    assert "Traceback" not in logs


# --- before the first text: retry, fallback model, extractive


@pytest.mark.parametrize(
    "scenario",
    [{"status": 429, "retry_after": 30}, {"status": 500}, {"status": 529}, {"error_after_chunks": 0}],
    ids=["429-retry-after-30s", "500", "529", "error-event-before-text"],
)
def test_a_retryable_failure_before_text_is_retried_once(
    server: ServerProcess, fake: FakeAnthropic, scenario: dict[str, Any]
) -> None:
    fake.enqueue(scenario)
    got = ask(server.url, QUESTION)
    assert_contract(got)
    assert got.last["model"] == PRIMARY and got.last["degraded"] is False
    first, second = fake.requests()
    assert [first["model"], second["model"]] == [PRIMARY, PRIMARY]
    assert second["outcome"] == "completed"
    pause = second["started_at"] - first["ended_at"]
    if "retry_after" in scenario:
        # Honoured, but capped by UPSTREAM_RETRY_AFTER_CAP (0.3 s), not the 30 s the upstream asked for.
        assert 0.25 <= pause < 15, pause


def test_a_second_failure_moves_to_the_fallback_model(server: ServerProcess, fake: FakeAnthropic) -> None:
    fake.enqueue({"status": 529}, {"status": 503})
    got = ask(server.url, QUESTION)
    assert_contract(got)
    assert got.last["model"] == FALLBACK and got.last["degraded"] is True
    assert models(fake) == [PRIMARY, PRIMARY, FALLBACK]
    assert got.answer == default_answer(fake.requests()[2]["body"])


@pytest.mark.parametrize(
    "scenario",
    [
        {"status": 529},
        {"first_token_delay_ms": 60_000},
        # Pings keep the socket busy: only our own first-token deadline can end the wait.
        {"first_token_delay_ms": 60_000, "ping_every_ms": 200},
        {"cut_after_chunks": 0},
    ],
    ids=["529", "stall-before-first-token", "pings-but-no-first-token", "cut-before-text"],
)
def test_three_failures_end_in_the_labelled_extractive_answer(
    server: ServerProcess, fake: FakeAnthropic, scenario: dict[str, Any]
) -> None:
    fake.set_default(**scenario)
    got = ask(server.url, QUESTION)
    assert_contract(got)
    assert got.last["model"] == "extractive" and got.last["degraded"] is True
    assert "extractive summary" in got.answer and "1,000,000" in got.answer
    # The last closed request may reach the fake's books a moment after the (fast) extractive answer ends.
    records = fake.wait_for(lambda rs: all(r["outcome"] != "in_progress" for r in rs), timeout=5)
    assert [r["model"] for r in records] == [PRIMARY, PRIMARY, FALLBACK]
    if "first_token_delay_ms" in scenario:
        # Each stalled request was closed by us at UPSTREAM_FIRST_TOKEN_TIMEOUT, not left hanging.
        assert {r["outcome"] for r in records} == {"client_disconnected"}
        assert all(r["chunks_sent"] == 0 for r in records)
        # ... at the deadline (1.5 s), not at the fake's 60 s: nothing else would have ended the wait.
        assert all(1.4 <= r["ended_at"] - r["started_at"] < 6 for r in records), records


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (400, "MAX_OUTPUT_TOKENS"),
        (401, "ANTHROPIC_API_KEY"),
        (403, "permissions"),
        (404, "ANTHROPIC_MODEL"),
        (413, "MAX_HISTORY_CHARS"),
    ],
)
def test_a_refusal_goes_straight_to_extractive_and_is_logged_loudly(
    server: ServerProcess, fake: FakeAnthropic, status: int, hint: str
) -> None:
    before = len(error_logs(server))
    fake.enqueue({"status": status})
    got = ask(server.url, QUESTION)
    assert_contract(got)
    assert got.last["model"] == "extractive" and got.last["degraded"] is True
    assert models(fake) == [PRIMARY], "a refusal is not retried and not sent to the fallback model"
    new = [line["msg"] for line in error_logs(server)[before:]]
    assert any(f"http_{status}" in msg and hint in msg for msg in new), new
    assert_no_secrets(server)


# --- after text was sent: the fallback model continues from the partial answer, without a prefill


@pytest.mark.parametrize(
    "fault",
    [
        {"error_after_chunks": 3},
        {"cut_after_chunks": 3},
        {"cut_after_chunks": 3, "cut_mode": "reset"},
        {"stall_after_chunks": 3},
        {"stall_after_chunks": 3, "ping_every_ms": 200},
    ],
    ids=["overloaded-error-event", "connection-cut", "connection-reset", "stall", "pings-but-no-text"],
)
def test_an_interrupted_answer_is_continued_by_the_fallback_without_repetition(
    server: ServerProcess, fake: FakeAnthropic, fault: dict[str, Any]
) -> None:
    fake.enqueue({"match_model": PRIMARY, **fault})
    got = ask(server.url, QUESTION)
    assert_contract(got)
    assert got.last["model"] == FALLBACK and got.last["degraded"] is True
    first, second = fake.requests()
    assert (first["model"], second["model"]) == (PRIMARY, FALLBACK)
    if "stall_after_chunks" in fault:
        assert first["outcome"] == "client_disconnected"  # closed at UPSTREAM_IDLE_TIMEOUT
    expected = default_answer(first["body"])
    partial = "".join(t["text"] for t in got.texts[:3])
    assert partial == expected[: len(partial)] and len(partial) == 3 * 16
    # The continuation saw exactly what the user saw, in its last user turn (a 4.6+ model refuses a
    # prefill), and went on from there.
    assert second["body"]["messages"][-1]["role"] == "user"
    assert answer_so_far(second["body"]) == partial
    assert got.answer == expected
    assert_no_duplicated_span(partial, got.answer[len(partial) :])


def assert_no_duplicated_span(before: str, after: str, span: int = 8) -> None:
    """The continuation does not start by repeating the end of what was already sent."""
    for size in range(span, min(len(before), len(after)) + 1):
        assert before[-size:] != after[:size], f"repeated {before[-size:]!r}"


def test_a_request_past_the_total_timeout_is_closed_and_continued(
    server: ServerProcess, fake: FakeAnthropic
) -> None:
    # Never silent for long (a chunk every 50 ms), but 200 chunks take 10 s: UPSTREAM_TOTAL_TIMEOUT is 8.
    fake.enqueue(
        {"match_model": PRIMARY, "chunks": [f"w{i} " for i in range(200)], "delay_ms": 50},
        {"match_model": FALLBACK, "chunks": ["the end."]},
    )
    got = ask(server.url, QUESTION)
    assert_contract(got)
    first, second = fake.requests()
    assert first["outcome"] == "client_disconnected" and first["chunks_sent"] < 200
    partial = "".join(f"w{i} " for i in range(len(got.texts) - 1))
    assert got.answer == partial + "the end."
    assert answer_so_far(second["body"]) == partial
    assert got.last["model"] == FALLBACK and got.last["degraded"] is True


def test_a_continuation_after_trailing_whitespace_does_not_double_it(
    server: ServerProcess, fake: FakeAnthropic
) -> None:
    fake.enqueue(
        {
            "match_model": PRIMARY,
            "chunks": ["The overstay fine is ", "IDR 1,000,000 ", "lost"],
            "cut_after_chunks": 2,
        },
        {"match_model": FALLBACK, "chunks": [" per day", " [1]."]},
    )
    got = ask(server.url, QUESTION)
    assert_contract(got)
    assert got.answer == "The overstay fine is IDR 1,000,000 per day [1]."
    assert answer_so_far(fake.requests()[1]["body"]) == "The overstay fine is IDR 1,000,000 "


def test_a_failed_continuation_ends_with_upstream_interrupted_and_keeps_the_text(
    server: ServerProcess, fake: FakeAnthropic
) -> None:
    fake.enqueue(
        {"match_model": PRIMARY, "chunks": ["One ", "two ", "three ", "four"], "cut_after_chunks": 3},
        {"match_model": FALLBACK, "status": 529},
    )
    got = ask(server.url, QUESTION)
    assert_contract(got, expect_error="upstream_interrupted")
    assert [t["text"] for t in got.texts] == ["One ", "two ", "three "]
    assert got.last["sequenceNumber"] == 3
    assert "interrupted" in got.last["error"]
    assert models(fake) == [PRIMARY, FALLBACK]


def test_a_fallback_that_restates_the_last_words_does_not_repeat_them(
    server: ServerProcess, fake: FakeAnthropic
) -> None:
    fake.enqueue({"match_model": PRIMARY, "cut_after_chunks": 3}, {"match_model": FALLBACK, "restate": 12})
    got = ask(server.url, QUESTION)
    assert_contract(got)
    expected = default_answer(fake.requests()[0]["body"])
    assert got.answer == expected
    assert fake.requests()[1]["chunks_sent"] * 16 >= len(expected) - 3 * 16 + 12  # it did restate


@pytest.fixture(
    scope="module",
    params=["claude-sonnet-5", "claude-haiku-4-5"],
    ids=["claude-sonnet-5-alone", "pre-4.6-claude-haiku-4-5-alone"],
)
def solo_server(
    request: pytest.FixtureRequest, kb_template: Path, fake_claude: FakeAnthropic
) -> Iterator[ServerProcess]:
    """One model and no fallback: the primary model's retry is what continues an interrupted answer."""
    with ServerProcess(
        kb_template,
        ANTHROPIC_API_KEY=API_KEY,
        ANTHROPIC_BASE_URL=fake_claude.base_url,
        ANTHROPIC_MODEL=request.param,
        ANTHROPIC_FALLBACK_MODEL="",
        UPSTREAM_RETRY_AFTER_CAP="0.3",
        UPSTREAM_FIRST_TOKEN_TIMEOUT="1.5",
        UPSTREAM_IDLE_TIMEOUT="1.5",
        RESUME_GRACE_SECONDS="0",
    ) as server:
        yield server
        assert_no_secrets(server)


@pytest.mark.parametrize(
    "fault",
    [{"error_after_chunks": 3}, {"cut_after_chunks": 3}, {"stall_after_chunks": 3}],
    ids=["overloaded-error-event", "connection-cut", "stall"],
)
def test_a_model_alone_continues_its_own_interrupted_answer(
    solo_server: ServerProcess, claude: FakeAnthropic, fault: dict[str, Any]
) -> None:
    model = solo_server.env["ANTHROPIC_MODEL"]
    claude.enqueue(fault, {"restate": 12})  # the last words again (ends mid-word: 8+ characters)
    got = ask(solo_server.url, QUESTION)
    assert_contract(got)
    first, second = claude.requests()
    expected = default_answer(first["body"])
    print(f"\n[{model} alone, {next(iter(fault))}] {len(got.answer)} of {len(expected)} characters delivered")
    assert got.answer == expected
    assert (first["model"], second["model"]) == (model, model)
    assert answer_so_far(second["body"]) == "".join(t["text"] for t in got.texts[:3])
    assert got.last["model"] == model and got.last["degraded"] is True
    wait_settled(solo_server, claude)
    assert_no_prefill(claude)


# --- the user leaves


def test_leaving_closes_the_upstream_request_at_once_without_grace(
    server: ServerProcess, fake: FakeAnthropic
) -> None:
    fake.enqueue({"chunks": [f"word{i} " for i in range(400)], "delay_ms": 25})
    before = metrics(server)
    got = run(_read_then_leave(server, 10))
    assert got.legs[0].left_at is not None
    (record,) = fake.wait_for(lambda rs: rs and rs[0]["outcome"] != "in_progress", timeout=15)
    assert record["outcome"] == "client_disconnected"
    after_leaving = record["chunks_sent"] - len(got.events)
    close_ms = (record["ended_at"] - got.legs[0].left_at) * 1000
    print(
        f"\n[grace=0] chunks sent after the user left: {after_leaving}; "
        f"upstream closed {close_ms:.0f} ms later"
    )
    assert after_leaving <= 20, after_leaving  # 25 ms apart: 20 chunks would be half a second
    samples = wait_settled(server, fake)
    assert samples["zantara_tokens_after_disconnect_total"] == before["zantara_tokens_after_disconnect_total"]
    assert_outcome_counted(before, samples, "cancelled")


async def _read_then_leave(server: ServerProcess, events: int) -> Conversation:
    async with async_client(server) as client:
        return Conversation([await leg(client, QUESTION, stop_after=events)])


def assert_outcome_counted(before: dict[str, float], after: dict[str, float], outcome: str) -> None:
    key = f'zantara_streams_total{{outcome="{outcome}"}}'
    assert after.get(key, 0) - before.get(key, 0) == 1, (
        outcome,
        {k: v for k, v in after.items() if "total{" in k},
    )


def test_leaving_at_random_points_leaves_nothing_running(server: ServerProcess, fake: FakeAnthropic) -> None:
    rng = random.Random(20260521)
    for _ in range(8):
        fake.reset()
        fake.set_default(
            chunks=[f"w{i} " for i in range(60)], delay_ms=10, first_token_delay_ms=rng.randint(0, 300)
        )
        stop_after = rng.choice([0, 1, rng.randint(2, 30), rng.randint(30, 62), 100])
        got = run(_read_then_leave(server, stop_after))
        if stop_after >= 62:
            assert_accounted(got)  # read to the end: the whole answer
        records = fake.wait_for(lambda rs: all(r["outcome"] != "in_progress" for r in rs), timeout=15)
        for record in records:
            assert record["outcome"] in {"client_disconnected", "completed"}, record["outcome"]
            if record["outcome"] == "client_disconnected":
                assert record["chunks_sent"] - len(got.texts) <= 30
        wait_settled(server, fake)


def test_leaving_before_the_response_starts_cancels_the_answer(
    server: ServerProcess, fake: FakeAnthropic
) -> None:
    fake.set_default(chunks=[f"w{i} " for i in range(200)], delay_ms=20)
    before = metrics(server)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request_bytes(QUESTION))
    # The question still goes through retrieval and its answer starts; nobody reads it, so it is cancelled.
    # Settled only once it ended: before its retrieval is done nothing runs yet either.
    key = 'zantara_streams_total{outcome="cancelled"}'
    wait_until(lambda: metrics(server).get(key, 0) > before.get(key, 0), timeout=30)
    assert_outcome_counted(before, wait_settled(server, fake), "cancelled")
    records = fake.requests()
    assert all(r["outcome"] == "client_disconnected" and r["chunks_sent"] < 200 for r in records), records


def request_bytes(query: str, last_event_id: str | None = None) -> bytes:
    target = f"{CHAT}?{httpx.QueryParams({'query': query})}" if query else CHAT
    head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nConnection: close\r\n"
    if last_event_id:
        head += f"Last-Event-ID: {last_event_id}\r\n"
    return (head + "\r\n").encode()


def parse_response(raw: bytes) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
    """Status and (id, event) pairs of a complete HTTP/1.1 response, parsed by h11."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    status, body = 0, b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    events = []
    for block in body.decode().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":")
        )
        if "data" in fields:
            events.append((fields.get("id", ""), json.loads(fields["data"])))
    return status, events


def test_a_client_that_stops_reading_is_dropped_and_can_resume(
    server: ServerProcess, fake: FakeAnthropic
) -> None:
    # 4 KB chunks: Linux lets a socket that nobody reads absorb about 4 MB (tcp_wmem) before a send
    # blocks, and the answer must be well past that for the server to notice anything.
    total = 3_000
    fake.set_default(chunks=["z" * 4095 + " "], repeat=total, delay_ms=2)
    pid = server.proc.pid if server.proc else 0
    rss_before = rss_mb(pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a tiny TCP window
    sock.connect(("127.0.0.1", server.port))
    try:
        sock.sendall(request_bytes(QUESTION))
        # Read nothing. Once the sockets are full the reader stops taking events, falls more than
        # SLOW_CLIENT_MAX_LAG_EVENTS behind for a second, and is dropped; with grace 0 the answer is then
        # cancelled, so its upstream request closes before the answer is out.
        (record,) = fake.wait_for(lambda rs: rs and rs[0]["outcome"] != "in_progress", timeout=60)
        assert record["outcome"] == "client_disconnected"
        assert record["chunks_sent"] < total, record["chunks_sent"]
        rss_after = rss_mb(pid)
        print(
            f"\n[slow client] upstream closed after {record['chunks_sent']} of {total} chunks; "
            f"server RSS {rss_before:.0f} -> {rss_after:.0f} MB"
        )
        assert rss_after - rss_before < 64
        assert "dropping a slow reader" in server.logs()
        # The client wakes up: it gets what was in flight, then the body ends without a terminal event...
        sock.settimeout(30)
        raw = bytearray()
        while chunk := sock.recv(1 << 20):
            raw += chunk
    finally:
        sock.close()
    status, first = parse_response(bytes(raw))
    assert status == 200 and first and "done" not in first[-1][1]
    # ...so it resumes from the last id it has, and gets the rest of what was generated, then the end.
    with socket.create_connection(("127.0.0.1", server.port)) as again:
        again.sendall(request_bytes("", last_event_id=first[-1][0]))
        again.settimeout(30)
        raw = b""
        while chunk := again.recv(65536):
            raw += chunk
    status, rest = parse_response(raw)
    assert status == 200
    ids = [i for i, _ in first + rest]
    positions = [int(i.rsplit(":", 1)[1]) for i in ids]
    assert positions == list(range(1, len(positions) + 1))
    last = rest[-1][1]
    assert last["done"] is True and last["code"] == "stream_expired"
    assert last["sequenceNumber"] == sum(1 for _, e in first + rest if "text" in e)


# --- Claude unreachable, and the knowledge base unreachable


@pytest.fixture(scope="module")
def chroma_server(
    kb_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ChromaServer]]:
    """Our server on a real `chroma run` server, with ANTHROPIC_BASE_URL pointing at a closed port."""
    knowledge = tmp_path_factory.mktemp("small-kb")
    for name in ("overstay-fines.md", "investor-kitas-e28a.md", "bank-account-foreigners.md"):
        shutil.copy(KNOWLEDGE / name, knowledge / name)
    with (
        ChromaServer() as chroma,
        ServerProcess(
            CHROMA_URL=chroma.url,
            KNOWLEDGE_PATH=knowledge,
            ANTHROPIC_API_KEY=API_KEY,
            ANTHROPIC_BASE_URL=f"http://127.0.0.1:{free_port()}",
            UPSTREAM_CONNECT_TIMEOUT="1",
        ) as server,
    ):
        yield server, chroma


def test_claude_unreachable_gives_a_degraded_extractive_answer(
    chroma_server: tuple[ServerProcess, ChromaServer],
) -> None:
    server, _ = chroma_server
    got = ask(server.url, QUESTION)
    assert_contract(got)
    assert got.last["model"] == "extractive" and got.last["degraded"] is True
    assert "1,000,000" in got.answer
    warnings = [json.loads(line) for line in server.logs().splitlines() if "failed (connection)" in line]
    assert len(warnings) >= 3  # primary twice, then the fallback model
    assert_no_secrets(server)


def test_a_store_that_goes_away_gives_retrieval_unavailable_then_recovers(
    chroma_server: tuple[ServerProcess, ChromaServer],
) -> None:
    server, chroma = chroma_server
    chroma.stop()
    try:
        got = ask(server.url, QUESTION)
        assert_contract(got, expect_error="retrieval_unavailable")
        assert len(got.events) == 1
        plain = httpx.get(server.url + CHAT, params={"query": QUESTION}, timeout=60)
        assert plain.status_code == 503 and plain.json()["code"] == "retrieval_unavailable"
        assert httpx.get(server.url + "/ready", timeout=30).status_code == 503
    finally:
        chroma.start()
    logs = error_logs(server)
    assert any(line["msg"].startswith("retrieval failed (") for line in logs), logs
    assert_no_secrets(server)
    assert_contract(ask(server.url, QUESTION))  # the same server answers again once the store is back
