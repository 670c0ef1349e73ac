"""Restarts: on SIGTERM/SIGINT open streams finish or end with `shutting_down`, and the process exits 0.

Each test owns its server (it is stopped by the test), with DRAIN_SECONDS=3: an answer that fits in the
window finishes normally, a longer one ends with a terminal `shutting_down` event.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.control import FakeAnthropic
from tests.harness import ServerProcess
from tests.sse import CHAT
from tests.streaming import Conversation, Leg, assert_accounted, async_client, leg

pytestmark = pytest.mark.slow  # boots the service (or a browser) as a subprocess

DRAIN = 3.0
QUESTION = "What do I need for a retirement visa?"


@pytest.fixture
def server(kb_template: Path, claude: FakeAnthropic) -> Iterator[ServerProcess]:
    with ServerProcess(
        kb_template,
        ANTHROPIC_API_KEY="sk-ant-test-drain-0123456789",
        ANTHROPIC_BASE_URL=claude.base_url,
        DRAIN_SECONDS=str(DRAIN),
    ) as server:
        yield server


def words(n: int) -> list[str]:
    return [f"w{i} " for i in range(n)]


async def _until(predicate: Callable[[], object]) -> None:
    """Poll another process (the fake, the server) until `predicate()` holds; 30 s at most."""
    async with asyncio.timeout(30):
        while not predicate():  # noqa: ASYNC110 - the condition lives in another process
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_drains_open_streams_then_exits_cleanly(
    server: ServerProcess, claude: FakeAnthropic, sig: signal.Signals
) -> None:
    # A short answer (about 1.5 s) and one far longer than the drain window (100 s).
    claude.enqueue({"chunks": words(30), "delay_ms": 50}, {"chunks": words(2000), "delay_ms": 50})

    async def scenario() -> tuple[Leg, Leg, Leg, int, int]:
        async with async_client(server) as client:
            short = asyncio.create_task(leg(client, QUESTION))
            await _until(lambda: len(claude.requests()) == 1)
            long = asyncio.create_task(leg(client, QUESTION))
            await _until(lambda: len(claude.requests()) == 2 and claude.requests()[1]["chunks_sent"] >= 3)
            sent_before = claude.requests()[1]["chunks_sent"]
            server.signal(sig)
            # New questions are refused in-band while the open streams drain; the process still answers.
            await _until(lambda: httpx.get(server.url + "/ready", timeout=5).status_code == 503)
            refused = await leg(client, QUESTION)
            health = (await client.get("/health")).status_code
            return await short, await long, refused, sent_before, health

    short, long, refused, sent_before, health = asyncio.run(scenario())
    assert health == 200
    assert [e.get("code") for e in refused.events] == ["shutting_down"]
    assert_accounted(Conversation([short]))
    assert "error" not in short.events[-1], "an answer that fits in the drain window finishes normally"
    assert_accounted(Conversation([long]))
    assert long.events[-1]["code"] == "shutting_down"
    assert "restarting" in long.events[-1]["error"]
    assert len(long.events) - 1 > sent_before, "the long answer kept streaming during the drain"

    assert server.wait(timeout=60) == 0
    records = claude.requests()
    assert [r["outcome"] for r in records] == ["completed", "client_disconnected"]
    assert claude.stats()["active_streams"] == 0
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    assert any(line["msg"].startswith("draining: 2 open streams") for line in lines)
    assert not [line for line in lines if line["level"] == "error"], "a drain is not an error"
    assert "Traceback" not in server.logs()


def test_a_second_signal_exits_without_waiting_for_the_drain(
    kb_template: Path, claude: FakeAnthropic
) -> None:
    claude.enqueue({"chunks": words(2000), "delay_ms": 50})
    with ServerProcess(
        kb_template,
        ANTHROPIC_API_KEY="sk-ant-test-drain-0123456789",
        ANTHROPIC_BASE_URL=claude.base_url,
        DRAIN_SECONDS="60",
    ) as server:

        async def scenario() -> tuple[Leg | None, float]:
            async with async_client(server) as client:
                open_stream = asyncio.create_task(leg(client, QUESTION))
                await _until(lambda: claude.requests() and claude.requests()[0]["chunks_sent"] >= 3)
                server.signal(signal.SIGTERM)
                await _until(lambda: httpx.get(server.url + "/ready", timeout=5).status_code == 503)
                server.signal(signal.SIGTERM)
                second = time.monotonic()
                try:
                    return await open_stream, second
                except httpx.TransportError:
                    return None, second  # cut mid-body: uvicorn's own shutdown

        got, second = asyncio.run(scenario())
        server.wait(timeout=45)
        assert time.monotonic() - second < 45, "the second signal does not wait out DRAIN_SECONDS=60"
        assert got is None or "error" in got.events[-1] or not got.terminal
    claude.wait_for(lambda rs: rs[0]["outcome"] != "in_progress", timeout=10)
    assert claude.stats()["active_streams"] == 0


def test_a_reader_that_stopped_reading_does_not_hold_the_shutdown_past_its_bound(
    mini_kb_template: Path, claude: FakeAnthropic
) -> None:
    from zantara_rag.server import worst_case_shutdown_seconds
    from zantara_rag.settings import Settings

    # Far more than the socket buffers hold, still streaming when the signal comes.
    claude.enqueue({"chunks": ["x" * 8000] * 1000, "delay_ms": 5})
    with ServerProcess(
        mini_kb_template,
        AUTO_INGEST="false",
        ANTHROPIC_API_KEY="sk-ant-test-drain-0123456789",
        ANTHROPIC_BASE_URL=claude.base_url,
        DRAIN_SECONDS="1",
    ) as server:
        bound = worst_case_shutdown_seconds(Settings(drain_seconds=1))
        with socket.create_connection(("127.0.0.1", server.port)) as stuck:
            head = f"GET {CHAT}?query=visa HTTP/1.1\r\nHost: z\r\nAccept: text/event-stream\r\n\r\n"
            stuck.sendall(head.encode())
            stuck.recv(1024)  # the status line and the first bytes; then this client never reads again
            claude.wait_for(lambda rs: len(rs) == 1 and rs[0]["chunks_sent"] >= 600, timeout=30)
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.wait(timeout=bound + 10) == 0
            took = time.monotonic() - started
    print(f"\n[shutdown with a stuck reader, DRAIN_SECONDS=1] {took:.1f} s (bound {bound:.0f} s)")
    assert took <= bound
