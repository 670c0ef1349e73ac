"""Raw relay, the floor: a bare ASGI app that opens the upstream request and forwards its bytes unchanged.

No retrieval, no SDK, no parsing, no re-encoding: one `send` per socket read. Whatever the service costs
above this is the price of what it does per event (parse, check, encode, buffer for resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any
from urllib.parse import urlsplit

from starlette.types import Receive, Scope, Send

_UPSTREAM = urlsplit(os.environ.get("ANTHROPIC_BASE_URL", "http://127.0.0.1:1"))
_BODY = json.dumps(
    {
        "model": os.environ.get("ANTHROPIC_MODEL", "claude-haiku-4-5"),
        "max_tokens": int(os.environ.get("MAX_OUTPUT_TOKENS", "64000")),
        "stream": True,
        "messages": [{"role": "user", "content": "relay"}],
    }
).encode()
_REQUEST = (
    f"POST /v1/messages HTTP/1.1\r\nHost: {_UPSTREAM.hostname}:{_UPSTREAM.port}\r\n"
    f"x-api-key: bench\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
    f"content-length: {len(_BODY)}\r\n\r\n"
).encode() + _BODY
_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/ready":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await relay(receive, send)


async def relay(receive: Receive, send: Send) -> None:
    reader, writer = await asyncio.open_connection(_UPSTREAM.hostname, _UPSTREAM.port)
    writer.write(_REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])

    async def watch() -> None:
        message: dict[str, Any] = {}
        while message.get("type") != "http.disconnect":
            message = dict(await receive())
        writer.close()

    watcher = asyncio.create_task(watch())
    try:
        await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
        while data := await reader.read(65536):
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except (OSError, ConnectionError):
        pass
    finally:
        watcher.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
