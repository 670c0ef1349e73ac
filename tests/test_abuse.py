"""Abuse protection against the real server: question rates, open-stream caps and token budgets per client.

Every client here is this machine: distinct clients are distinct loopback source addresses (127.0.0.N),
which is what the server sees as the TCP peer. Counts and waits are small and bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.control import FakeAnthropic
from tests.harness import DEFAULT_MODEL, ServerProcess, claude_env
from tests.security import Reply, ask_plain, ask_sse, peer
from tests.sse import CHAT, SSE

pytestmark = pytest.mark.slow  # boots the service (or a browser) as a subprocess

PER_MINUTE = 3
STREAMS_PER_CLIENT = 2
STREAMS_IN_ALL = 4
BUDGET = 100_000
BIG_ANSWER = {"input_tokens": 150_000, "chunks": ["A long ", "answer."]}


@pytest.fixture(scope="module")
def limited(mini_kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    """Limits keyed on the TCP peer (as without Fly), budget per client, `error` when it is spent."""
    env = claude_env(fake_claude.base_url) | {
        # Streams are held open by a slow first token.
        "UPSTREAM_FIRST_TOKEN_TIMEOUT": "30",
        "UPSTREAM_IDLE_TIMEOUT": "30",
        "RATE_LIMIT_PER_MINUTE": PER_MINUTE,
        "MAX_STREAMS_PER_CLIENT": STREAMS_PER_CLIENT,
        "MAX_CONCURRENT_STREAMS": STREAMS_IN_ALL,
        "DAILY_TOKEN_BUDGET_PER_CLIENT": BUDGET,
        "BUDGET_EXHAUSTED_MODE": "error",
        "RESUME_GRACE_SECONDS": "0",
    }
    with ServerProcess(mini_kb_template, AUTO_INGEST="false", **env) as server:
        yield server


@pytest.fixture(scope="module")
def behind_fly(mini_kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    """As on Fly (`TRUST_PROXY_HEADERS=true`), with a global budget past which answers are extractive."""
    env = claude_env(fake_claude.base_url) | {
        "TRUST_PROXY_HEADERS": "true",
        "RATE_LIMIT_PER_MINUTE": 2,
        "DAILY_TOKEN_BUDGET": BUDGET,
        "BUDGET_EXHAUSTED_MODE": "extractive",
    }
    with ServerProcess(mini_kb_template, AUTO_INGEST="false", **env) as server:
        yield server


def refusals(server: ServerProcess) -> dict[str, float]:
    """`zantara_rate_limited_total` by reason, from /metrics, read by prometheus_client's parser."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "zantara_rate_limited_total"
    }


def answered(reply: Reply) -> bool:
    return reply.status == 200 and reply.last.get("done") is True and "code" not in reply.last


def assert_refused(reply_last: dict[str, object], code: str = "rate_limited") -> None:
    assert reply_last["code"] == code and reply_last["done"] is True and reply_last["sequenceNumber"] == 0
    assert isinstance(reply_last["error"], str) and reply_last["error"]


# --- questions per minute


def test_questions_past_the_rate_get_rate_limited_in_band_with_a_retry_hint(
    limited: ServerProcess, claude: FakeAnthropic
) -> None:
    before = refusals(limited).get("client_rate", 0)
    with peer(limited.url, "127.0.0.11") as client:
        served = [ask_sse(client) for _ in range(PER_MINUTE)]
        refused = ask_sse(client)
    assert refusals(limited)["client_rate"] == before + 1
    assert all(answered(r) for r in served)
    assert refused.status == 200 and len(refused.events) == 1
    assert_refused(refused.last)
    retry_after = refused.last["retryAfter"]
    assert isinstance(retry_after, int) and 1 <= retry_after <= 60
    assert refused.events[0].retry == retry_after * 1000  # the SSE `retry:` field
    assert len(claude.requests()) == PER_MINUTE, "a refused question must not reach Claude"


def test_other_clients_get_429_with_retry_after(limited: ServerProcess, claude: FakeAnthropic) -> None:
    with peer(limited.url, "127.0.0.12") as client:
        served = [ask_plain(client) for _ in range(PER_MINUTE)]
        refused = ask_plain(client)
    assert [r.status for r in served] == [200] * PER_MINUTE
    assert refused.status == 429
    body = refused.json()
    assert set(body) == {"error", "code", "retryAfter"} and body["code"] == "rate_limited"
    assert refused.headers["retry-after"] == str(body["retryAfter"]) and 1 <= body["retryAfter"] <= 60
    assert len(claude.requests()) == PER_MINUTE


def test_forged_forwarding_headers_do_not_evade_the_limit(
    limited: ServerProcess, claude: FakeAnthropic
) -> None:
    codes = []
    with peer(limited.url, "127.0.0.13") as client:
        for n in range(PER_MINUTE + 2):
            forged = {
                "X-Forwarded-For": f"198.51.100.{n}",
                "X-Real-IP": f"198.51.100.{n}",
                "Forwarded": f"for=198.51.100.{n}",
                "Fly-Client-IP": f"198.51.100.{n}",  # not trusted on this server
            }
            codes.append(ask_sse(client, headers=forged).last.get("code"))
    assert codes == [None] * PER_MINUTE + ["rate_limited"] * 2
    with peer(limited.url, "127.0.0.14") as other:
        assert "code" not in ask_sse(other).last, "another peer has its own window"


# --- open streams


def test_open_streams_are_capped_per_client_and_in_all(limited: ServerProcess, claude: FakeAnthropic) -> None:
    claude.set_default(first_token_delay_ms=20_000, chunks=["late"])
    before = refusals(limited)
    with ExitStack() as held:

        def hold(address: str) -> httpx.Response:
            client = held.enter_context(peer(limited.url, address))
            response = held.enter_context(client.stream("GET", CHAT, params={"query": "KITAS?"}, headers=SSE))
            assert response.status_code == 200
            return response

        first = [hold("127.0.0.21") for _ in range(STREAMS_PER_CLIENT)]
        with peer(limited.url, "127.0.0.21") as same:
            over_client_cap = ask_sse(same)
        [hold("127.0.0.22") for _ in range(STREAMS_IN_ALL - STREAMS_PER_CLIENT)]
        with peer(limited.url, "127.0.0.23") as third:
            over_global_cap = ask_sse(third)
        claude.wait_for(lambda rs: len(rs) == STREAMS_IN_ALL, timeout=10)
        claude.set_default()  # answers come at once again
        for response in first:
            response.close()
        # The slots come back as soon as the server sees the disconnects.
        deadline = time.monotonic() + 10
        with peer(limited.url, "127.0.0.23") as third:
            while (after := ask_plain(third, headers={"Accept": "application/json"})).status == 429:
                assert time.monotonic() < deadline, "slots were not released when streams closed"
                time.sleep(0.2)
    for refused in (over_client_cap, over_global_cap):
        assert_refused(refused.last)
        retry_after = refused.last["retryAfter"]
        assert retry_after >= 1 and refused.events[0].retry == retry_after * 1000
    assert over_client_cap.last["error"] != over_global_cap.last["error"]
    counted = refusals(limited)
    assert counted["client_streams"] == before.get("client_streams", 0) + 1
    assert counted["server_streams"] >= before.get("server_streams", 0) + 1  # the polling may add more
    assert after.status == 200
    # Nothing left running: every held stream's upstream request was closed when its reader left.
    claude.wait_for(lambda rs: all(r["outcome"] != "in_progress" for r in rs), timeout=10)
    assert len(claude.requests()) == STREAMS_IN_ALL + 1


# --- token budget


def test_a_spent_client_budget_refuses_new_questions_without_calling_claude(
    limited: ServerProcess, claude: FakeAnthropic
) -> None:
    claude.enqueue(BIG_ANSWER)
    before = refusals(limited).get("budget", 0)
    with peer(limited.url, "127.0.0.31") as client:
        first = ask_sse(client)
        assert first.last["usage"]["inputTokens"] == BIG_ANSWER["input_tokens"]
        refused = ask_sse(client)
        plain = ask_plain(client)
    assert_refused(refused.last, "budget_exhausted")
    assert 3600 < refused.last["retryAfter"] <= 86400
    assert plain.status == 429 and plain.json()["code"] == "budget_exhausted"
    assert plain.headers["retry-after"] == str(plain.json()["retryAfter"])
    assert len(claude.requests()) == 1, "no token may be spent past the budget"
    assert refusals(limited)["budget"] == before + 2
    with peer(limited.url, "127.0.0.32") as other:
        assert answered(ask_sse(other))
    assert len(claude.requests()) == 2, "the budget is per client"
    assert all(r["outcome"] == "completed" for r in claude.requests()), "no upstream stream may stay open"


# --- behind Fly's proxy


def test_fly_client_ip_keys_the_limits_when_trusted(behind_fly: ServerProcess, claude: FakeAnthropic) -> None:
    with httpx.Client(base_url=behind_fly.url, timeout=30) as client:

        def code(ip: str, **headers: str) -> object:
            return ask_sse(client, headers={"Fly-Client-IP": ip, **headers}).last.get("code")

        assert [code("203.0.113.1"), code("203.0.113.1")] == [None, None]
        assert code("203.0.113.1") == "rate_limited"
        assert code("203.0.113.1", **{"X-Forwarded-For": "198.51.100.7"}) == "rate_limited"
        assert code("203.0.113.2") is None  # another client, its own window
        # IPv6 clients are one client per /64: rotating the interface id does not help.
        assert [code("2001:db8:1:2::1"), code("2001:db8:1:2::2")] == [None, None]
        assert code("2001:db8:1:2::ffff") == "rate_limited"
        assert code("2001:db8:1:3::1") is None


def test_a_spent_global_budget_answers_extractively(behind_fly: ServerProcess, claude: FakeAnthropic) -> None:
    claude.enqueue(BIG_ANSWER)
    with httpx.Client(base_url=behind_fly.url, timeout=30) as client:
        first = ask_sse(client, headers={"Fly-Client-IP": "203.0.113.50"})
        later = [ask_sse(client, headers={"Fly-Client-IP": f"203.0.113.{n}"}) for n in (50, 51)]
    assert first.last["model"] == DEFAULT_MODEL
    for reply in later:
        assert reply.last["model"] == "extractive" and reply.last["degraded"] is True
        assert "usage" not in reply.last and "code" not in reply.last
        assert "extractive summary" in "".join(p.get("text", "") for p in reply.payloads)
    assert len(claude.requests()) == 1, "past the global budget no client's question reaches Claude"
