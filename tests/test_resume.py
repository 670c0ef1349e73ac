"""Resume with `Last-Event-ID`: the same stream from where the client stopped, never a fresh answer.

Two servers stand for two Fly machines (different `FLY_MACHINE_ID`): `machine_a` answers with the fake
Claude and a 3 s grace window; `machine_b` answers extractively with tiny replay bounds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.control import FakeAnthropic
from tests.harness import ServerProcess, wait_until
from tests.sse import CHAT, SSE, ask, assert_contract
from tests.streaming import (
    Conversation,
    Leg,
    assert_accounted,
    async_client,
    converse,
    leg,
    metrics,
    random_leaving,
    run,
    wait_settled,
)

pytestmark = pytest.mark.slow  # boots the service (or a browser) as a subprocess

MACHINE_A, MACHINE_B = "3d8d9e1ab64789", "91857e0c6e5128"
GRACE = 3.0
QUESTION = "Can a foreigner open a bank account in Bali?"


@pytest.fixture(scope="module")
def machine_a(kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    with ServerProcess(
        kb_template,
        ANTHROPIC_API_KEY="sk-ant-test-resume-0123456789",
        ANTHROPIC_BASE_URL=fake_claude.base_url,
        FLY_MACHINE_ID=MACHINE_A,
        RESUME_GRACE_SECONDS=str(GRACE),
        MAX_OUTPUT_TOKENS="20000",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def machine_b(kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    with ServerProcess(
        kb_template,
        ANTHROPIC_API_KEY="sk-ant-test-resume-0123456789",
        ANTHROPIC_BASE_URL=fake_claude.base_url,
        FLY_MACHINE_ID=MACHINE_B,
        RESUME_GRACE_SECONDS="60",
        RESUME_MAX_EVENTS="40",
        RESUME_MAX_BYTES="8192",
        SLOW_CLIENT_MAX_LAG_EVENTS="16",
        RESUME_MAX_STREAMS="3",
        RESUME_TTL_SECONDS="4",
    ) as server:
        yield server


@pytest.fixture
def fake(machine_a: ServerProcess, claude: FakeAnthropic) -> Iterator[FakeAnthropic]:
    yield claude
    wait_settled(machine_a, claude, timeout=GRACE + 20)


def words(n: int, tag: str = "w") -> list[str]:
    return [f"{tag}{i} " for i in range(n)]


def position(event_id: str) -> int:
    return int(event_id.rsplit(":", 1)[1])


async def _converse(server: ServerProcess, **kwargs: object) -> Conversation:
    async with async_client(server) as client:
        return await converse(client, QUESTION, **kwargs)  # type: ignore[arg-type]


# --- resuming a live stream


def test_a_resume_continues_exactly_where_the_client_left(
    machine_a: ServerProcess, fake: FakeAnthropic
) -> None:
    chunks = words(50)
    fake.enqueue({"chunks": chunks, "delay_ms": 20})
    before = metrics(machine_a)
    got = run(_converse(machine_a, leave_after=lambda n: 10 if n == 0 else None))
    assert_accounted(got)
    assert len(got.legs) == 2 and position(got.legs[1].ids[0]) == 11
    assert got.answer == "".join(chunks)
    assert got.ids[0].startswith(f"{MACHINE_A}-")
    assert len(fake.requests()) == 1, "a resume must never generate the answer again"
    after = metrics(machine_a)
    assert after["zantara_stream_resumes_total"] - before["zantara_stream_resumes_total"] == 1


def test_resumes_at_random_points_never_duplicate_or_skip(
    machine_a: ServerProcess, fake: FakeAnthropic
) -> None:
    rng = random.Random(7)
    chunks = words(40)
    fake.set_default(chunks=chunks, delay_ms=15, first_token_delay_ms=50)
    plans = [(random_leaving(rng, 0.8, 44), [rng.uniform(0, 1.0) for _ in range(3)]) for _ in range(16)]

    async def everyone() -> list[Conversation]:
        async with async_client(machine_a) as client:
            return await asyncio.gather(
                *(
                    converse(client, QUESTION, leave_after=leave, pause=lambda n, p=pauses: p[min(n, 2)])
                    for leave, pauses in plans
                )
            )

    conversations = run(everyone())
    for got in conversations:
        assert_accounted(got)
        assert got.answer == "".join(chunks)
        assert got.last["done"] is True and "error" not in got.last
    assert sum(c.resumes for c in conversations) >= 10
    assert len(fake.requests()) == len(plans), "one upstream request per question, however many resumes"


def test_generation_goes_on_in_the_grace_window_and_a_resume_gets_all_of_it(
    machine_a: ServerProcess, fake: FakeAnthropic
) -> None:
    chunks = words(100)
    fake.enqueue({"chunks": chunks, "delay_ms": 20})
    before = metrics(machine_a)

    async def leave_wait_resume() -> Conversation:
        async with async_client(machine_a) as client:
            first = await leg(client, QUESTION, stop_after=5)
            # Nobody reads now: generation goes on (the fake keeps sending) within the grace window.
            (record,) = await fake.wait_for_async(lambda rs: len(rs) == 1 and rs[0]["chunks_sent"] > 30, 10)
            assert record["outcome"] == "in_progress"
            rest = await leg(client, last_event_id=first.ids[-1])
            return Conversation([first, rest])

    got = run(leave_wait_resume())
    assert_accounted(got)
    assert got.answer == "".join(chunks)
    (record,) = fake.requests()
    assert record["outcome"] == "completed"
    after = metrics(machine_a)
    assert after["zantara_tokens_after_disconnect_total"] > before["zantara_tokens_after_disconnect_total"]


def test_without_a_resume_the_upstream_is_closed_when_the_grace_window_ends(
    machine_a: ServerProcess, fake: FakeAnthropic
) -> None:
    fake.enqueue({"chunks": words(2000), "delay_ms": 20})
    before = metrics(machine_a)
    first = run(_read(machine_a, stop_after=5))
    assert first.left_at is not None
    (record,) = fake.wait_for(lambda rs: rs[0]["outcome"] != "in_progress", timeout=GRACE + 20)
    assert record["outcome"] == "client_disconnected"
    closed_after = record["ended_at"] - first.left_at
    after_leaving = record["chunks_sent"] - len(first.events)
    counted = (
        metrics(machine_a)["zantara_tokens_after_disconnect_total"]
        - before["zantara_tokens_after_disconnect_total"]
    )
    print(
        f"\n[grace={GRACE}] upstream closed {closed_after:.2f} s after the user left; "
        f"{after_leaving} chunks sent meanwhile ({counted:.0f} counted by the app)"
    )
    assert closed_after >= GRACE - 0.5, closed_after  # it waited for a resume before giving up
    assert record["chunks_sent"] < 2000
    assert counted > 0
    # A resume after the window replays everything generated, then says the rest is gone.
    rest = run(_resume(machine_a, first.ids[-1]))
    got = Conversation([first, rest])
    assert_accounted(got)
    assert got.last["code"] == "stream_expired"
    assert len(got.texts) >= record["chunks_sent"] - 5  # all of it, but what was still in the sockets


async def _read(server: ServerProcess, stop_after: int | None = None) -> Leg:
    async with async_client(server) as client:
        return await leg(client, QUESTION, stop_after=stop_after)


async def _resume(server: ServerProcess, last_event_id: str, headers: dict[str, str] | None = None) -> Leg:
    async with async_client(server) as client:
        return await leg(client, last_event_id=last_event_id, headers=headers)


def test_a_huge_answer_arrives_whole(machine_a: ServerProcess, fake: FakeAnthropic) -> None:
    # Four times MAX_OUTPUT_TOKENS' default, twice RESUME_MAX_EVENTS, ten times as fast as Claude writes.
    text = "".join(f"part{i:011d} " for i in range(8_000))
    fake.enqueue({"text": text, "chunk_size": 16, "delay_ms": 0.25})
    got = run(_converse(machine_a))
    assert_accounted(got)
    assert got.answer == text and len(got.texts) == 8_000
    print(f"\n[huge answer] 8000 chunks in {len(got.legs)} response(s)")


# --- what a reconnect gets when there is nothing to resume


def test_a_reconnect_after_the_terminal_event_gets_204(machine_a: ServerProcess, fake: FakeAnthropic) -> None:
    got = ask(machine_a.url, QUESTION)
    assert_contract(got)
    again = httpx.get(machine_a.url + CHAT, headers={**SSE, "Last-Event-ID": got.ids[-1]}, timeout=30)
    assert again.status_code == 204 and again.content == b""
    refused = ask(machine_a.url, "")  # an in-band refusal is a finished stream of one event
    assert_contract(refused, expect_error="invalid_query")
    again = httpx.get(machine_a.url + CHAT, headers={**SSE, "Last-Event-ID": refused.ids[-1]}, timeout=30)
    assert again.status_code == 204
    assert len(fake.requests()) == 1


@pytest.mark.parametrize(
    "last_event_id",
    [f"{MACHINE_A}-0123456789ab:3", "not-an-id", f"{MACHINE_A}-0123456789ab", "x:1:2", "future"],
)
def test_an_unknown_or_malformed_id_gets_stream_expired_never_a_fresh_answer(
    machine_a: ServerProcess, fake: FakeAnthropic, last_event_id: str
) -> None:
    if last_event_id == "future":  # a real stream, but a position it never reached
        done = ask(machine_a.url, QUESTION)
        last_event_id = done.ids[-1].rsplit(":", 1)[0] + f":{len(done.ids) + 5}"
        fake.reset()
    got = ask(machine_a.url, QUESTION, headers={"Last-Event-ID": last_event_id})
    assert_contract(got, expect_error="stream_expired")
    assert len(got.events) == 1
    plain = httpx.get(
        machine_a.url + CHAT, params={"query": QUESTION}, headers={"Last-Event-ID": last_event_id}
    )
    assert plain.status_code == 410 and plain.json()["code"] == "stream_expired"
    assert fake.requests() == [], "an expired resume must not start a new answer"


# --- two machines


def test_a_resume_that_lands_on_the_other_machine_is_replayed_there(
    machine_a: ServerProcess, machine_b: ServerProcess, fake: FakeAnthropic
) -> None:
    fake.enqueue({"chunks": words(20)})
    on_a = ask(machine_a.url, QUESTION, stop_after=3)
    landed = httpx.get(machine_b.url + CHAT, headers={**SSE, "Last-Event-ID": on_a.ids[-1]}, timeout=30)
    assert landed.status_code == 204 and landed.content == b""
    assert landed.headers["fly-replay"] == f"prefer_instance={MACHINE_A}"
    # Fly could not reach machine A (it is gone): B says so rather than answering afresh.
    fallback = ask(
        machine_b.url,
        None,
        headers={"Last-Event-ID": on_a.ids[-1], "fly-preferred-instance-unavailable": "1"},
    )
    assert_contract(fallback, expect_error="stream_expired")
    # The replayed request, on machine A, resumes normally.
    rest = run(_resume(machine_a, on_a.ids[-1], headers={"fly-replay-src": f"instance={MACHINE_B}"}))
    assert [position(i) for i in rest.ids] == list(range(4, 4 + len(rest.ids)))
    assert rest.events[-1]["done"] is True and "error" not in rest.events[-1]


def test_replay_buffers_are_bounded_in_events_streams_and_time(
    machine_b: ServerProcess, claude: FakeAnthropic
) -> None:
    def finished(chunks: list[str] | None = None, delay_ms: int = 10) -> list[str]:
        """A stream of texts, sources and done, left after its first event and finished meanwhile."""
        chunks = chunks or words(100)
        claude.enqueue({"chunks": chunks, "delay_ms": delay_ms})
        first = ask(machine_b.url, QUESTION, stop_after=1)
        assert first.ids[0].startswith(f"{MACHINE_B}-")
        claude.wait_for(lambda rs: rs[-1]["outcome"] == "completed", timeout=30)
        return [f"{first.ids[0].rsplit(':', 1)[0]}:{n}" for n in range(1, len(chunks) + 3)]

    def resumes(ids: list[str], back: int) -> bool:
        """Resume `back` events before the end: True if replayed, False if told the stream expired."""
        got = ask(machine_b.url, None, headers={"Last-Event-ID": ids[-1 - back]})
        if got.last.get("code") == "stream_expired":
            assert len(got.events) == 1
            return False
        assert got.ids == ids[-back:] and got.last["done"] is True and "error" not in got.last
        return True

    # RESUME_MAX_BYTES=8192: of an answer in 1 KB pieces only the last few events are kept.
    large = finished(["a"] + ["b" * 1000] * 30, delay_ms=50)
    assert resumes(large, 3)
    assert not resumes(large, 12)
    first = finished()
    assert resumes(first, 3)
    # RESUME_MAX_EVENTS=40: the start of the answer is no longer kept.
    assert not resumes(first, 60)
    # RESUME_MAX_STREAMS=3: three newer streams push the first one out.
    newest = [finished() for _ in range(3)][-1]
    newest_done = time.monotonic()
    assert not resumes(first, 3)
    assert resumes(newest, 3)
    # RESUME_TTL_SECONDS=4: after that, even the newest is gone (and not before).
    wait_until(lambda: not resumes(newest, 3), timeout=15, interval=0.25)
    assert time.monotonic() - newest_done >= 4 - 0.5
    assert len(claude.requests()) == 5
