"""`StreamRelay` driven as a bare ASGI app with hand-written `receive` and `send`, as Starlette's own tests
do: the headers, one write for everything pending, the end, the keep-alive, disconnects and drops."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.sse import KEEPALIVE_COMMENT

from zantara_rag.events import DoneEvent, TextEvent
from zantara_rag.streaming import stream as stream_module
from zantara_rag.streaming.hub import StreamHub
from zantara_rag.streaming.relay import StreamRelay
from zantara_rag.streaming.stream import Reader, Stream

SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/bali-zero/chat-stream", "headers": []}
QUIET = 60.0  # a heartbeat that never fires within a test


def text(n: int) -> str:
    return TextEvent(text=f"piece {n}", sequence_number=n, timestamp=time.time()).to_json()


def done(count: int) -> str:
    return DoneEvent(sequence_number=count, timestamp=time.time(), stream_duration=0.1).to_json()


class Client:
    """The ASGI server side of one response: records what is sent; `leave()` makes receive() disconnect."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.sent_at: list[float] = []  # the event loop's clock at each message
        self.gate: asyncio.Event | None = None  # when set up, send() blocks on it (a client not reading)
        self._gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.sent_at.append(asyncio.get_running_loop().time())
        if self.gate is not None and message["type"] == "http.response.body":
            await self.gate.wait()

    def leave(self) -> None:
        self._gone.set()

    @property
    def start(self) -> dict[str, Any]:
        assert self.messages and self.messages[0]["type"] == "http.response.start"
        return self.messages[0]

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body"]

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.start["headers"]}


def run(stream: Stream, reader: Reader, client: Client, heartbeat: float = QUIET) -> asyncio.Task[None]:
    relay = StreamRelay(stream, reader, heartbeat_seconds=heartbeat)
    return asyncio.create_task(relay(SCOPE, client.receive, client.send))  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


async def forever(stream: Stream) -> None:
    await asyncio.Event().wait()


def payloads(body: bytes) -> list[dict[str, Any]]:
    """The JSON of every `data:` line of a piece of the body."""
    return [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]


def follow(stream: Stream, position: int = 0, slack: int = 1000) -> Reader:
    """A reader registered with the stream, so that each append wakes it (as `StreamHub.attach` does)."""
    reader = Reader(position, slack)
    stream.add_reader(reader)
    return reader


def new_stream(max_events: int = 100) -> Stream:
    return Stream("local-0123456789ab", max_events=max_events, max_bytes=1_000_000)


async def test_the_response_starts_with_200_and_the_proxy_proof_event_stream_headers() -> None:
    stream, client = new_stream(), Client()
    task = run(stream, follow(stream), client)
    await until(lambda: bool(client.messages))

    assert client.start["status"] == 200
    headers = client.headers
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache, no-transform"
    assert headers["content-encoding"] == "none"
    assert headers["x-accel-buffering"] == "no"
    assert "content-length" not in headers
    assert len(client.start["headers"]) == len(headers)  # no header twice

    client.leave()
    await asyncio.wait_for(task, 1)


async def test_events_appended_while_the_relay_waits_go_out_in_one_body_message() -> None:
    stream, client = new_stream(), Client()
    task = run(stream, follow(stream), client)
    await until(lambda: bool(client.messages))
    await asyncio.sleep(0)  # the relay took nothing and now waits for an append
    assert client.bodies == []

    for n in range(1, 4):
        stream.append(text(n))
    await until(lambda: bool(client.bodies))
    await asyncio.sleep(0.01)  # room for a (wrong) second write

    assert len(client.bodies) == 1
    assert [e["text"] for e in payloads(client.bodies[0])] == ["piece 1", "piece 2", "piece 3"]
    assert client.bodies[0].count(b"\nid: local-0123456789ab:") == 3
    client.leave()
    await asyncio.wait_for(task, 1)


async def test_the_relay_sends_the_terminal_event_then_ends_the_body() -> None:
    stream, client = new_stream(), Client()
    task = run(stream, follow(stream), client)
    stream.append(text(1))
    await until(lambda: len(client.bodies) == 1)

    stream.append(done(1), terminal=True, outcome="done")
    await asyncio.wait_for(task, 1)

    assert payloads(client.bodies[1])[-1]["done"] is True
    assert client.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert all(m.get("more_body") for m in client.messages[1:-1])
    assert stream.delivered


async def test_a_reader_that_resumes_a_finished_stream_gets_the_rest_and_the_end_at_once() -> None:
    stream, client = new_stream(), Client()
    for n in range(1, 4):
        stream.append(text(n))
    stream.append(done(3), terminal=True, outcome="done")

    await asyncio.wait_for(run(stream, follow(stream, 2), client), 1)

    assert len(client.bodies) == 2
    assert [e.get("text") for e in payloads(client.bodies[0])] == ["piece 3", None]
    assert client.bodies[1] == b""


async def test_a_quiet_stream_gets_a_keep_alive_comment_after_the_heartbeat() -> None:
    stream, client = new_stream(), Client()
    started = time.monotonic()
    task = run(stream, follow(stream), client, heartbeat=0.05)

    await until(lambda: bool(client.bodies))
    assert time.monotonic() - started >= 0.045
    assert client.bodies[0] == KEEPALIVE_COMMENT == b": ping\n\n"

    await until(lambda: len(client.bodies) >= 2)  # and again after another quiet interval
    assert client.bodies[1] == KEEPALIVE_COMMENT
    client.leave()
    await asyncio.wait_for(task, 1)


async def test_a_keep_alive_only_ever_follows_a_quiet_heartbeat() -> None:
    # Events every 10 ms against a 100 ms heartbeat: a ping could only come from a stall of the test
    # itself, and even then it must follow a full heartbeat without any write.
    heartbeat = 0.1
    stream, client = new_stream(), Client()
    task = run(stream, follow(stream), client, heartbeat=heartbeat)
    for n in range(1, 26):
        stream.append(text(n))
        await asyncio.sleep(0.01)
    client.leave()
    await asyncio.wait_for(task, 1)

    assert sum(len(payloads(b)) for b in client.bodies) == 25
    for i, message in enumerate(client.messages):
        if message.get("body") == KEEPALIVE_COMMENT:
            assert client.sent_at[i] - client.sent_at[i - 1] >= heartbeat - 0.001


async def test_a_disconnect_ends_a_waiting_relay_promptly() -> None:
    stream, client = new_stream(), Client()
    task = run(stream, follow(stream), client)
    stream.append(text(1))
    await until(lambda: bool(client.bodies))

    client.leave()
    await asyncio.wait_for(task, 0.5)
    assert not stream.finished
    assert all(not p.get("done") for b in client.bodies for p in payloads(b))


async def test_a_dropped_reader_ends_without_a_terminal_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "STUCK_SECONDS", 0.0)
    hub = StreamHub(
        "local",
        grace_seconds=60,
        ttl_seconds=60,
        max_streams=10,
        max_events=100,
        max_bytes=1_000_000,
        max_lag=2,
    )
    stream = hub.create(forever, owner="o")
    reader = hub.attach(stream)
    client = Client()
    client.gate = asyncio.Event()  # the client stops reading: the relay blocks in its first send
    task = run(stream, reader, client)
    stream.append(text(1))
    await until(lambda: bool(client.bodies))

    for n in range(2, 5):  # three behind the reader's position, more than its slack of two
        stream.append(text(n))
    assert reader.dropped and stream.readers == 0

    client.gate.set()  # the client reads again
    await asyncio.wait_for(task, 1)
    assert [e["text"] for e in payloads(client.bodies[0])] == ["piece 1"]
    assert client.bodies[1:] == [b""]
    assert client.messages[-1]["more_body"] is False
    assert stream.awaiting_resume  # the drop detached it: the grace window runs
    await hub.close(wait_seconds=1)
    stream.disarm_grace()


async def test_a_reader_behind_evicted_events_gets_a_fresh_stream_expired_error() -> None:
    stream, client = new_stream(max_events=3), Client()
    reader = follow(stream)
    client.gate = asyncio.Event()
    task = run(stream, reader, client)
    for n in range(1, 3):
        stream.append(text(n))
        stream.text_chunks = n  # as the producer counts them
    await until(lambda: bool(client.bodies))  # handed events 1 and 2, now blocked in the send

    for n in range(3, 9):  # 3..8 in the buffer, which keeps 6..8 only
        stream.append(text(n))
        stream.text_chunks = n
    client.gate.set()
    await asyncio.wait_for(task, 1)

    assert [e["text"] for e in payloads(client.bodies[0])] == ["piece 1", "piece 2"]
    (expired,) = payloads(client.bodies[1])
    assert expired["code"] == "stream_expired"
    assert expired["done"] is True
    assert expired["sequenceNumber"] == 2
    assert abs(expired["timestamp"] - time.time()) < 1.0
    assert b"\nid: " not in client.bodies[1]  # not one of the stream's events
    assert client.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_the_expired_event_counts_only_text_events_the_reader_was_handed() -> None:
    stream = new_stream(max_events=1)
    for n in range(1, 4):
        stream.append(text(n))
    stream.text_chunks = 3
    stream.append(json.dumps({"sources": []}))  # position 4: past the text
    stream.append(done(3), terminal=True, outcome="done")  # position 5, the only one kept

    for position in (1, 2, 3):
        client = Client()
        await asyncio.wait_for(run(stream, follow(stream, position), client), 1)
        (expired,) = payloads(client.bodies[0])
        assert (expired["code"], expired["sequenceNumber"]) == ("stream_expired", position)

    client = Client()  # one handed the sources already misses nothing: it gets the end
    await asyncio.wait_for(run(stream, follow(stream, 4), client), 1)
    assert payloads(client.bodies[0])[0]["done"] is True and "code" not in payloads(client.bodies[0])[0]
