"""Tools for the failure tests: async readers that leave and resume, the app's gauges, process memory.

A *conversation* is one question followed to its end across as many HTTP responses (legs) as it takes:
a leg that ends without a terminal event (the client left, or the server dropped a slow reader) is
followed by a reconnect carrying `Last-Event-ID`, as EventSource does.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from tests.fakes.control import FakeAnthropic
from tests.harness import ServerProcess
from tests.sse import CHAT, SSE, EventsView

GAUGES = ("zantara_streams_active", "zantara_stream_readers", "zantara_upstream_requests_active")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


# --- the app's metrics


def metrics(server: ServerProcess) -> dict[str, float]:
    """Every sample of `/metrics`, keyed by name plus labels as written (`name{label="x"}`)."""
    response = httpx.get(server.url + "/metrics", timeout=10)
    response.raise_for_status()
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples[match[1] + (match[2] or "")] = float(match[3])
    return samples


def total(samples: dict[str, float], name: str) -> float:
    """The sum of a metric over all its label sets."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def wait_settled(
    server: ServerProcess, fake: FakeAnthropic | None = None, timeout: float = 20
) -> dict[str, float]:
    """Wait until nothing is left running: no open Claude request, no producer, no open response."""
    deadline = time.monotonic() + timeout
    while True:
        samples = metrics(server)
        busy = {g: samples.get(g) for g in GAUGES if samples.get(g) != 0}
        upstream = fake.stats()["active_streams"] if fake is not None else 0
        if not busy and upstream == 0:
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"still running after {timeout}s: gauges {busy}, fake streams {upstream}")
        time.sleep(0.05)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line")


# --- reading streams


@dataclass
class Leg:
    """One HTTP response of a conversation."""

    status: int
    headers: httpx.Headers
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    left_at: float | None = None  # wall clock, when the client closed the connection early

    @property
    def terminal(self) -> bool:
        return bool(self.events) and self.events[-1].get("done") is True


async def leg(
    client: httpx.AsyncClient,
    query: str | None = None,
    *,
    last_event_id: str | None = None,
    stop_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> Leg:
    """One response, read until its end or until `stop_after` events (then the connection is closed)."""
    params = {"query": query} if query is not None else {}
    sent = {**SSE, **(headers or {})}
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    async with aconnect_sse(client, "GET", CHAT, params=params, headers=sent) as source:
        got = Leg(source.response.status_code, source.response.headers)
        if got.status != 200:
            await source.response.aread()
            return got
        if stop_after == 0:
            got.left_at = time.time()
            return got
        async for sse in source.aiter_sse():
            got.events.append(json.loads(sse.data))
            got.ids.append(sse.id)
            if stop_after is not None and len(got.events) >= stop_after:
                got.left_at = time.time()
                break
    return got


@dataclass
class Conversation(EventsView):
    legs: list[Leg] = field(default_factory=list)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for leg in self.legs for e in leg.events]

    @property
    def ids(self) -> list[str]:
        return [i for leg in self.legs for i in leg.ids]

    @property
    def resumes(self) -> int:
        return len(self.legs) - 1


async def converse(
    client: httpx.AsyncClient,
    query: str,
    *,
    leave_after: Callable[[int], int | None] = lambda n: None,
    pause: Callable[[int], float] = lambda n: 0.0,
    max_legs: int = 50,
) -> Conversation:
    """Ask, then reconnect with `Last-Event-ID` until a terminal event (or a 204) arrives.

    `leave_after(leg_number)` says after how many events that leg's client disconnects (None: never);
    `pause(leg_number)` how many seconds it waits before reconnecting.
    """
    conversation = Conversation()
    last_id: str | None = None
    for number in range(max_legs):
        got = await leg(
            client,
            query if last_id is None else None,
            last_event_id=last_id,
            stop_after=leave_after(number),
        )
        conversation.legs.append(got)
        if got.status == 204 or got.terminal:
            return conversation
        assert got.status == 200, got.status
        if got.ids:
            last_id = got.ids[-1]
        elif last_id is None:
            # Left before the first event: nothing to resume from, the question was simply abandoned.
            return conversation
        await asyncio.sleep(pause(number))
    raise AssertionError(f"no terminal event after {max_legs} legs")


def random_leaving(
    rng: random.Random, p_leave: float, most: int, legs: int = 3
) -> Callable[[int], int | None]:
    """A seeded `leave_after`: each of the first `legs` legs leaves with probability `p_leave`."""
    plan = [rng.randint(1, most) if rng.random() < p_leave else None for _ in range(legs)]
    return lambda n: plan[n] if n < len(plan) else None


def assert_accounted(conversation: Conversation) -> None:
    """One stream, every position once, from 1 to the end, ending with done or an error event."""
    ids = conversation.ids
    assert ids, "no events at all"
    streams = {i.rsplit(":", 1)[0] for i in ids}
    assert len(streams) == 1, streams
    positions = [int(i.rsplit(":", 1)[1]) for i in ids]
    assert positions == list(range(1, len(positions) + 1)), positions
    last = conversation.last
    assert last.get("done") is True, last
    texts = conversation.texts
    assert [t["sequenceNumber"] for t in texts] == list(range(1, len(texts) + 1))
    assert last["sequenceNumber"] == len(texts)
    if "error" in last:
        assert isinstance(last["code"], str) and last["code"]
    else:
        kinds = [
            "text" if "text" in e else "sources" if "sources" in e else "done" for e in conversation.events
        ]
        assert kinds == ["text"] * len(texts) + ["sources", "done"], kinds


def async_client(server: ServerProcess, connections: int = 50, timeout: float = 60) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=server.url, timeout=timeout, limits=limits)


def run(coro: Any) -> Any:
    return asyncio.run(coro)
