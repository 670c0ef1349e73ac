"""Helpers of the security tests: the secured server's known secrets (to mint tokens and grep logs for),
and clients that read the `retry:` field or connect from a chosen loopback address."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from tests.harness import KNOWLEDGE, claude_env
from tests.sse import CHAT, SSE

AUTH_SECRET = "test-auth-secret-0123456789abcdef-CURRENT"
AUTH_SECRET_PREVIOUS = "test-auth-secret-0123456789abcdef-PREVIOUS"
API_KEY = "sk-ant-test-SECRET-0123456789"
LOG_HASH_KEY = "test-log-hash-key-SECRET-0123456789abcdef"
MEMBER_EMAIL = "made.wijaya@balizero.com"
MEMBER_NAME = "Made"
# A few documents are enough where a test needs retrieval rather than coverage (ingesting all takes minutes).
MINI_KB = [
    KNOWLEDGE / name
    for name in ("prompt-injection-test.md", "overstay-fines.md", "investor-kitas-e28a.md", "npwp-pribadi.md")
]


def team_file(directory: Path) -> Path:
    path = directory / "team.json"
    member = {"name": MEMBER_NAME, "language": "Indonesian"}
    path.write_text(json.dumps({MEMBER_EMAIL: member}), encoding="utf-8")
    return path


def secured_env(fake_base_url: str, team: Path) -> dict[str, str]:
    env = claude_env(fake_base_url)
    assert env["ANTHROPIC_API_KEY"] == API_KEY
    env.update(
        AUTH_SECRET=AUTH_SECRET,
        AUTH_SECRET_PREVIOUS=AUTH_SECRET_PREVIOUS,
        TEAM_DIRECTORY=str(team),
        LOG_LEVEL="debug",
        # Conversations belong to a keyed hash of the token's subject: the service needs a stable key.
        LOG_HASH_KEY=LOG_HASH_KEY,
    )
    return env


@dataclass
class Reply:
    """One chat request as an SSE client reads it (the `retry:` field included), or a plain HTTP response."""

    status: int
    headers: httpx.Headers
    events: list[ServerSentEvent]
    body: bytes = b""

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(e.data) for e in self.events]

    @property
    def last(self) -> dict[str, Any]:
        return self.payloads[-1]

    def json(self) -> Any:
        return json.loads(self.body)


def ask_sse(client: httpx.Client, query: str | None = "How much is the overstay fine?", **kw: Any) -> Reply:
    """A chat request with `Accept: text/event-stream`, read to its end by httpx-sse."""
    headers = {**SSE, **kw.pop("headers", {})}
    params = {k: v for k, v in {"query": query, **kw}.items() if v is not None}
    with connect_sse(client, "GET", CHAT, params=params, headers=headers) as source:
        if not source.response.headers.get("content-type", "").startswith("text/event-stream"):
            return Reply(source.response.status_code, source.response.headers, [], source.response.read())
        return Reply(source.response.status_code, source.response.headers, list(source.iter_sse()))


def ask_plain(client: httpx.Client, query: str | None = "How much is the overstay fine?", **kw: Any) -> Reply:
    """The same request from a client that does not ask for an event stream (errors are then JSON)."""
    headers = kw.pop("headers", {})
    params = {k: v for k, v in {"query": query, **kw}.items() if v is not None}
    response = client.get(CHAT, params=params, headers=headers)
    return Reply(response.status_code, response.headers, [], response.content)


def peer(base_url: str, address: str, timeout: float = 30) -> httpx.Client:
    """A client whose TCP connections come from `address` (any 127.0.0.0/8 address is this machine)."""
    return httpx.Client(
        base_url=base_url, timeout=timeout, transport=httpx.HTTPTransport(local_address=address)
    )
