"""`RequestLog` in-process: a client's `X-Request-ID` is kept only when it is a short safe token."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from zantara_rag.http.request_log import RequestLog, valid_request_id


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    seen = scope["state"]["request_id"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": seen})


async def request_id(sent: bytes) -> tuple[str, str]:
    """(the id the app saw, the id the response carries) for a request with `X-Request-ID: sent`."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=RequestLog(echo)), base_url="http://z"
    ) as c:
        response = await c.get("/health", headers=[(b"X-Request-ID", sent)])
    return response.text, response.headers["x-request-id"]


@pytest.mark.parametrize("value", ["req-123", "01JD4ZQX8Y.sin_abc", "a" * 64, "0123456789abcdef" * 4])
async def test_a_short_safe_id_is_kept(value: str) -> None:
    assert valid_request_id(value) == value
    assert await request_id(value.encode()) == (value, value)


@pytest.mark.parametrize(
    "value",
    [b"a" * 65, b"x" * 300, b"has space", b"semi;colon", b"na\xc3\xafve", b"\x00\x01", b"line\\nbreak", b""],
    ids=["65", "300", "space", "semicolon", "utf8", "control", "backslash", "empty"],
)
async def test_anything_else_is_replaced_by_a_new_id(value: bytes) -> None:
    assert valid_request_id(value.decode("latin-1")) is None
    seen, returned = await request_id(value)
    assert seen == returned and re.fullmatch(r"[0-9a-f]{32}", returned)
