"""`GET /metrics` on the real server: every stream's outcome counted once, gauges that return to zero,
latencies and tokens that match what the client saw, and the bearer token."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.control import FakeAnthropic
from tests.harness import ServerProcess, claude_env
from tests.sse import CHAT, SSE, ask, assert_contract

pytestmark = pytest.mark.slow  # boots the service (or a browser) as a subprocess

TOKEN = "metrics-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GAUGES = ("zantara_streams_active", "zantara_stream_readers", "zantara_upstream_requests_active")
NAMES = (
    *GAUGES,
    "zantara_streams_total",
    "zantara_stream_resumes_total",
    "zantara_time_to_first_chunk_seconds",
    "zantara_stream_duration_seconds",
    "zantara_retrieval_seconds",
    "zantara_chunks_sent_total",
    "zantara_upstream_tokens_total",
    "zantara_tokens_after_disconnect_total",
    "zantara_rate_limited_total",
)
SLOW = {"chunks": ["word "], "repeat": 400, "delay_ms": 25}  # ten seconds of answer


@dataclass
class Scrape:
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def since(self, before: Scrape, name: str, **labels: str) -> float:
        return self(name, **labels) - before(name, **labels)

    def outcomes(self) -> dict[str, float]:
        return {dict(k[1])["outcome"]: v for k, v in self.values.items() if k[0] == "zantara_streams_total"}


def scrape(server: ServerProcess) -> Scrape:
    response = httpx.get(server.url + "/metrics", headers=AUTH, timeout=10)
    assert response.status_code == 200
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return Scrape(values)


def outcome_deltas(before: Scrape, after: Scrape) -> dict[str, float]:
    old, new = before.outcomes(), after.outcomes()
    return {k: v - old.get(k, 0.0) for k, v in new.items() if v != old.get(k, 0.0)}


def eventually(server: ServerProcess, check: Callable[[Scrape], bool], timeout: float = 10.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        got = scrape(server)
        if check(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def idle(got: Scrape) -> bool:
    return all(got(name) == 0 for name in GAUGES)


@pytest.fixture(scope="module")
def server(kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    with ServerProcess(
        kb_template, METRICS_TOKEN=TOKEN, RESUME_GRACE_SECONDS="1", **claude_env(fake_claude.base_url)
    ) as server:
        yield server


@pytest.fixture
def quiet(server: ServerProcess) -> Iterator[ServerProcess]:
    """The server, with no stream left over from a previous test, and none left over by this one."""
    assert idle(eventually(server, idle)), "a stream was left running"
    yield server
    assert idle(eventually(server, idle)), "a stream was left running"


def test_every_metric_is_exposed_in_prometheus_format(quiet: ServerProcess) -> None:
    response = httpx.get(quiet.url + "/metrics", headers=AUTH)
    assert response.headers["content-type"].startswith("text/plain; version=")
    for name in NAMES:
        kind = "gauge" if name in GAUGES else "histogram" if name.endswith("_seconds") else "counter"
        assert f"# TYPE {name} {kind}\n" in response.text, name
    assert "process_resident_memory_bytes" in response.text


def test_the_token_is_required_when_set(quiet: ServerProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        refused = httpx.get(quiet.url + "/metrics", headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "zantara_" not in refused.text and TOKEN not in refused.text
    assert httpx.get(quiet.url + "/metrics", headers={"authorization": f"bearer {TOKEN}"}).status_code == 200


def test_a_done_stream_is_counted_once_with_its_latencies_chunks_and_tokens(
    quiet: ServerProcess, claude: FakeAnthropic
) -> None:
    claude.enqueue({"cache_read_input_tokens": 7})
    before = scrape(quiet)
    got = ask(quiet.url, "What does an investor KITAS require?")
    assert_contract(got)
    after = scrape(quiet)
    assert outcome_deltas(before, after) == {"done": 1}
    for histogram in ("zantara_time_to_first_chunk_seconds", "zantara_stream_duration_seconds"):
        assert after.since(before, f"{histogram}_count") == 1
    for stage in ("embed", "search"):
        assert after.since(before, "zantara_retrieval_seconds_count", stage=stage) == 1
    assert after.since(before, "zantara_chunks_sent_total") == len(got.texts)
    usage = got.last["usage"]
    for kind, key in (
        ("input", "inputTokens"),
        ("output", "outputTokens"),
        ("cache_read", "cacheReadTokens"),
    ):
        assert after.since(before, "zantara_upstream_tokens_total", kind=kind) == usage[key] > 0, kind
    assert after.since(before, "zantara_tokens_after_disconnect_total") == 0

    # Replaying the end of a finished stream is a resume, not another stream.
    again = ask(quiet.url, None, headers={"Last-Event-ID": got.ids[-3]})
    assert [e.get("done") for e in again.events] == [None, True]
    final = scrape(quiet)
    assert outcome_deltas(after, final) == {}
    assert final.since(after, "zantara_stream_resumes_total") == 1


def test_errors_are_counted_under_their_code(quiet: ServerProcess, claude: FakeAnthropic) -> None:
    claude.enqueue({"chunks": ["The answer ", "starts ", "and then"], "cut_after_chunks": 2}, {"status": 500})
    before = scrape(quiet)
    interrupted = ask(quiet.url, "What is KITAP?")
    assert_contract(interrupted, expect_error="upstream_interrupted")
    refused = ask(quiet.url, "   ")
    assert_contract(refused, expect_error="invalid_query")
    after = scrape(quiet)
    assert outcome_deltas(before, after) == {"upstream_interrupted": 1, "invalid_query": 1}
    # A refusal has no answer, so no latency: only the interrupted answer is timed.
    assert after.since(before, "zantara_stream_duration_seconds_count") == 1


def test_an_answer_without_claude_is_counted_as_degraded(quiet: ServerProcess, claude: FakeAnthropic) -> None:
    claude.enqueue({"status": 529}, {"status": 529}, {"status": 529})
    before = scrape(quiet)
    got = ask(quiet.url, "How much is the overstay fine per day?")
    assert_contract(got)
    assert got.last["degraded"] is True and got.last["model"] == "extractive"
    assert outcome_deltas(before, scrape(quiet)) == {"degraded": 1}


def test_an_abandoned_stream_is_cancelled_once_and_its_unread_chunks_counted(
    quiet: ServerProcess, claude: FakeAnthropic
) -> None:
    claude.enqueue(SLOW)
    before = scrape(quiet)
    with (
        httpx.Client(base_url=quiet.url, timeout=30) as client,
        connect_sse(client, "GET", CHAT, params={"query": "KITAS?"}, headers=SSE) as source,
    ):
        events = source.iter_sse()
        for _ in range(3):
            next(events)
        during = scrape(quiet)
    assert [during(name) for name in GAUGES] == [1, 1, 1]
    after = eventually(quiet, lambda s: outcome_deltas(before, s) == {"cancelled": 1})
    assert outcome_deltas(before, after) == {"cancelled": 1}
    # Generation went on through the one-second grace window, then the upstream request was closed.
    unread = after.since(before, "zantara_tokens_after_disconnect_total")
    assert 0 < unread < 400
    (record,) = claude.wait_for(lambda r: r and r[-1]["outcome"] != "in_progress")
    assert record["outcome"] == "client_disconnected" and record["chunks_sent"] < 400


def test_gauges_follow_concurrent_streams_and_return_to_zero(
    quiet: ServerProcess, claude: FakeAnthropic
) -> None:
    claude.set_default(chunks=["word "], repeat=40, delay_ms=25)
    with ExitStack() as stack:
        client = stack.enter_context(httpx.Client(base_url=quiet.url, timeout=30))
        streams = [
            stack.enter_context(
                connect_sse(client, "GET", CHAT, params={"query": f"KITAS {i}?"}, headers=SSE)
            )
            for i in range(3)
        ]
        readers = [s.iter_sse() for s in streams]
        for reader in readers:
            next(reader)
        during = scrape(quiet)
        with ThreadPoolExecutor(3) as pool:
            ends = list(pool.map(lambda r: [e.data for e in r][-1], readers))
    assert [during(name) for name in GAUGES] == [3, 3, 3]
    assert all('"done":true' in end for end in ends)
    assert idle(eventually(quiet, idle))
