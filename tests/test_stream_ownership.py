"""A stream belongs to whoever asked: a resume by anyone else is answered exactly like an unknown id.

With authentication on, the owner is the token's subject (any address); without, the client's address.
Against the real server with the fake Claude; answers are slowed so that they are live while resumed.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import jwt
import pytest

from tests.fakes.control import FakeAnthropic
from tests.harness import ServerProcess
from tests.security import AUTH_SECRET, Reply, ask_plain, ask_sse, peer
from tests.sse import CHAT, SSE, ask

pytestmark = pytest.mark.slow  # boots the service as a subprocess

WORDS = [f"w{i} " for i in range(60)]
UNKNOWN_TOKEN = "0123456789abcdef" * 2


def token(sub: str) -> str:
    now = int(time.time())
    claims = {"sub": sub, "aud": "zantara-rag", "iat": now, "exp": now + 300}
    return jwt.encode(claims, AUTH_SECRET, algorithm="HS256")


def started(client: httpx.Client, events: int = 2, **params: Any) -> str:
    """Ask, read `events` events, leave; the id of the last one read (the answer goes on meanwhile)."""
    with client.stream("GET", CHAT, params={"query": "Overstay fine?", **params}, headers=SSE) as response:
        ids = []
        for line in response.iter_lines():
            if line.startswith("id: "):
                ids.append(line[4:])
                if len(ids) == events:
                    return ids[-1]
    raise AssertionError("the stream ended early")


def resumed(client: httpx.Client, last_event_id: str, **params: Any) -> tuple[Reply, Reply]:
    """The same resume as an EventSource (in-band) and as a plain client."""
    headers = {"Last-Event-ID": last_event_id}
    return ask_sse(client, None, headers=headers, **params), ask_plain(
        client, None, headers=headers, **params
    )


def unknown(stream_id: str) -> str:
    """An id of this machine that no stream has."""
    return re.sub(r"-[0-9a-f]{32}$", f"-{UNKNOWN_TOKEN}", stream_id)


def same_answer(a: tuple[Reply, Reply], b: tuple[Reply, Reply]) -> bool:
    """Two resumes were answered alike (timestamps aside): in-band events, plain status and body."""

    def shape(reply: tuple[Reply, Reply]) -> tuple[Any, ...]:
        in_band, plain = reply
        events = [{k: v for k, v in p.items() if k != "timestamp"} for p in in_band.payloads]
        return in_band.status, events, [e.id for e in in_band.events], plain.status, json.loads(plain.body)

    return shape(a) == shape(b)


def test_stream_ids_carry_128_random_bits(mini_claude_server: ServerProcess, claude: FakeAnthropic) -> None:
    got = ask(mini_claude_server.url, "What is a KITAS?")
    ids = {i.rsplit(":", 1)[0] for i in got.ids}
    (stream,) = ids
    assert re.fullmatch(r"local-[0-9a-f]{32}", stream), stream


def test_without_authentication_another_address_cannot_read_the_stream(
    mini_claude_server: ServerProcess, claude: FakeAnthropic
) -> None:
    claude.enqueue({"chunks": WORDS, "delay_ms": 50})
    with (
        peer(mini_claude_server.url, "127.0.0.51") as owner,
        peer(mini_claude_server.url, "127.0.0.52") as other,
    ):
        last = started(owner)
        stream = last.rsplit(":", 1)[0]
        stolen = resumed(other, f"{stream}:0")
        assert stolen[0].last["code"] == "stream_expired" and len(stolen[0].events) == 1
        assert stolen[1].status == 410
        assert same_answer(stolen, resumed(other, f"{unknown(stream)}:0")), "a stranger learns it exists"
        mine = ask_sse(owner, None, headers={"Last-Event-ID": last})
    assert "code" not in mine.last and mine.last["done"] is True
    assert "".join(p.get("text", "") for p in mine.payloads) == "".join(WORDS[2:])
    assert len(claude.requests()) == 1


def test_with_authentication_another_users_token_cannot_read_the_stream(
    secured_server: ServerProcess, claude: FakeAnthropic
) -> None:
    claude.enqueue({"chunks": WORDS, "delay_ms": 50})
    alice, bob = token("alice@example.com"), token("bob@example.com")
    with peer(secured_server.url, "127.0.0.53") as here, peer(secured_server.url, "127.0.0.54") as there:
        last = started(here, access_token=alice)
        stream = last.rsplit(":", 1)[0]
        # Bob, from the very address Alice asked from, while her answer is being generated.
        stolen = resumed(here, f"{stream}:0", access_token=bob)
        assert stolen[0].last["code"] == "stream_expired" and stolen[1].status == 410
        assert same_answer(stolen, resumed(here, f"{unknown(stream)}:0", access_token=bob))
        # Alice, from another address: her token says who she is.
        mine = ask_sse(there, None, headers={"Last-Event-ID": last}, access_token=alice)
    assert "code" not in mine.last and "".join(p.get("text", "") for p in mine.payloads) == "".join(WORDS[2:])
    assert len(claude.requests()) == 1


def test_a_finished_stream_answers_a_stranger_as_unknown_and_its_owner_with_204(
    mini_claude_server: ServerProcess, claude: FakeAnthropic
) -> None:
    with (
        peer(mini_claude_server.url, "127.0.0.55") as owner,
        peer(mini_claude_server.url, "127.0.0.56") as other,
    ):
        done = ask_sse(owner)
        last = done.events[-1].id
        assert done.last["done"] is True and "code" not in done.last
        stolen = resumed(other, last)
        assert same_answer(
            stolen, resumed(other, f"{unknown(last.rsplit(':', 1)[0])}:{last.rsplit(':', 1)[1]}")
        )
        assert stolen[0].last["code"] == "stream_expired"
        assert owner.get(CHAT, headers={**SSE, "Last-Event-ID": last}).status_code == 204
