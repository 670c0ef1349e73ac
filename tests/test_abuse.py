"""Abuse protection against the real server: question rates, open-stream caps and token budgets per client.

Every client here is this machine: distinct clients are distinct loopback source addresses (127.0.0.N),
which is what the server sees as the TCP peer. Counts and waits are small and bounded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.control import FakeAnthropic
from tests.harness import DEFAULT_MODEL, ServerProcess, claude_env
from tests.security import AUTH_SECRET, Reply, ask_plain, ask_sse, peer
from tests.sse import CHAT, SSE
from tests.streaming import metrics, wait_settled

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


# --- caps bound the work: live answers (grace window included), resumes, refusals


@pytest.fixture(scope="module")
def held(mini_kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    """Answers keep generating for 30 s after their reader leaves; one live answer per client, three
    streams in the hub, four questions or resumes per minute."""
    env = claude_env(fake_claude.base_url) | {
        "UPSTREAM_FIRST_TOKEN_TIMEOUT": "30",
        "RESUME_GRACE_SECONDS": "30",
        "MAX_STREAMS_PER_CLIENT": 1,
        "RESUME_MAX_STREAMS": 3,
        "RATE_LIMIT_PER_MINUTE": 4,
    }
    with ServerProcess(mini_kb_template, AUTO_INGEST="false", **env) as server:
        yield server


def open_and_drop(client: httpx.Client) -> int:
    """Ask and leave as soon as the response starts: 200 (an answer was started) or 429 (refused)."""
    with client.stream("GET", CHAT, params={"query": "KITAS?"}) as response:
        return response.status_code


def gauge(server: ServerProcess, name: str) -> float:
    return metrics(server)[name]


def test_an_answer_left_generating_keeps_its_slot(held: ServerProcess, claude: FakeAnthropic) -> None:
    claude.set_default(first_token_delay_ms=8000, chunks=["late"])
    with peer(held.url, "127.0.0.71") as client:
        statuses = [open_and_drop(client) for _ in range(5)]
    live = gauge(held, "zantara_streams_active")
    print(f"\n[open-and-drop x5, MAX_STREAMS_PER_CLIENT=1] answers generating: {live:.0f}")
    assert live == 1 and len(claude.requests()) == 1
    assert statuses == [200, 429, 429, 429, 429]
    wait_settled(held, claude, timeout=30)


def test_the_hub_bounds_live_answers_whatever_the_other_caps(
    held: ServerProcess, claude: FakeAnthropic
) -> None:
    # MAX_CONCURRENT_STREAMS is off (the harness's default): RESUME_MAX_STREAMS=3 still bounds live ones.
    claude.set_default(first_token_delay_ms=8000, chunks=["late"])
    before = refusals(held).get("server_streams", 0)
    for n in (72, 73, 74):
        with peer(held.url, f"127.0.0.{n}") as client:
            assert open_and_drop(client) == 200
    with peer(held.url, "127.0.0.75") as client:
        fourth = ask_sse(client)
    assert gauge(held, "zantara_streams_active") == 3 and len(claude.requests()) == 3
    assert_refused(fourth.last)
    assert refusals(held)["server_streams"] == before + 1
    wait_settled(held, claude, timeout=30)


def test_a_resume_counts_in_the_per_minute_window(held: ServerProcess, claude: FakeAnthropic) -> None:
    claude.set_default(chunks=[f"w{i} " for i in range(400)], delay_ms=50)
    with peer(held.url, "127.0.0.76") as client:
        with client.stream("GET", CHAT, params={"query": "KITAS?"}, headers=SSE) as response:
            first_id = next(line[4:] for line in response.iter_lines() if line.startswith("id: "))
        # One question and three resumes fill the window of four; the fifth touch is refused.
        codes = []
        for _ in range(4):
            with client.stream("GET", CHAT, headers={**SSE, "Last-Event-ID": first_id}) as response:
                data = next(line for line in response.iter_lines() if line.startswith("data: "))
                codes.append(json.loads(data[6:]).get("code"))
    assert codes == [None, None, None, "rate_limited"]
    assert len(claude.requests()) == 1
    wait_settled(held, claude, timeout=60)


def test_a_refusal_is_not_kept_yet_its_reconnect_gets_204(held: ServerProcess, claude: FakeAnthropic) -> None:
    with peer(held.url, "127.0.0.77") as client:
        refusal = ask_sse(client, "")
        other = ask_sse(client, "   ")
        assert refusal.last["code"] == other.last["code"] == "invalid_query"
        assert refusal.events[0].id == other.events[0].id, "every refusal has the one refusal id"
        # RESUME_MAX_STREAMS=3: more answers than the hub keeps, all after the refusal.
        for n in (78, 79, 80, 81):
            with peer(held.url, f"127.0.0.{n}") as answering:
                assert "code" not in ask_sse(answering).last
        again = client.get(CHAT, headers={**SSE, "Last-Event-ID": refusal.events[0].id})
    assert again.status_code == 204
    wait_settled(held, claude, timeout=30)


# --- with authentication, the subject is the client


@pytest.fixture(scope="module")
def authenticated(mini_kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    env = claude_env(fake_claude.base_url) | {
        "AUTH_SECRET": AUTH_SECRET,
        "RATE_LIMIT_PER_MINUTE": 2,
        "DAILY_TOKEN_BUDGET_PER_CLIENT": BUDGET,
        "BUDGET_EXHAUSTED_MODE": "error",
    }
    with ServerProcess(mini_kb_template, AUTO_INGEST="false", **env) as server:
        yield server


def bearer(sub: str) -> str:
    now = int(time.time())
    claims = {"sub": sub, "aud": "zantara-rag", "iat": now, "exp": now + 300}
    return jwt.encode(claims, AUTH_SECRET, algorithm="HS256")


def test_with_tokens_limits_follow_the_subject_not_the_address(
    authenticated: ServerProcess, claude: FakeAnthropic
) -> None:
    alice, bob = bearer("alice@example.com"), bearer("bob@example.com")
    with peer(authenticated.url, "127.0.0.91") as here, peer(authenticated.url, "127.0.0.92") as there:
        codes = [
            ask_sse(here, access_token=alice).last.get("code"),
            ask_sse(there, access_token=alice).last.get("code"),
            ask_sse(there, access_token=alice).last.get("code"),  # a new address buys no new window
            ask_sse(here, access_token=bob).last.get("code"),  # the same address is another user
        ]
        claude.enqueue(BIG_ANSWER)
        spent = ask_sse(here, access_token=bearer("carol@example.com"))
        broke = ask_sse(there, access_token=bearer("carol@example.com"))
    assert codes == [None, None, "rate_limited", None]
    assert spent.last["usage"]["inputTokens"] == BIG_ANSWER["input_tokens"]
    assert broke.last["code"] == "budget_exhausted", "the budget is the user's, from any address"


# --- IPv6 budgets per /48


@pytest.fixture(scope="module")
def fly_budgets(mini_kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    env = claude_env(fake_claude.base_url) | {
        "TRUST_PROXY_HEADERS": "true",
        "DAILY_TOKEN_BUDGET_PER_CLIENT": BUDGET,
        "BUDGET_EXHAUSTED_MODE": "error",
    }
    with ServerProcess(mini_kb_template, AUTO_INGEST="false", **env) as server:
        yield server


def test_an_ipv6_budget_covers_the_whole_48(fly_budgets: ServerProcess, claude: FakeAnthropic) -> None:
    claude.enqueue(BIG_ANSWER)
    with httpx.Client(base_url=fly_budgets.url, timeout=30) as client:

        def code(ip: str) -> object:
            return ask_sse(client, headers={"Fly-Client-IP": ip}).last.get("code")

        assert code("2001:db8:5:1::1") is None  # spends the budget
        # Rotating to another /64 of the same /48 (a provider hands out many) is the same client.
        assert code("2001:db8:5:2::1") == "budget_exhausted"
        assert code("2001:db8:5:ffff::1") == "budget_exhausted"
        assert code("2001:db8:6:1::1") is None  # another /48
