"""ASGI middleware: the strict origin gate and the headers every event stream needs behind a proxy."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import OriginNotAllowed

_STREAM_HEADERS = {
    # Fly's proxy compresses (and so buffers) anything without a Content-Encoding.
    b"content-encoding": b"none",
    b"cache-control": b"no-cache, no-transform",
    b"x-accel-buffering": b"no",
}


class OriginGate:
    """Refuse any request whose Origin is not exactly allowed, before routing, retrieval or generation.

    Starlette's CORSMiddleware (behind this) only withholds the CORS headers; it would still run the
    request. Several Origin headers are refused too: which one a browser meant is unknowable.
    """

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origins = [v for k, v in scope["headers"] if k == b"origin"]
            if origins and (len(origins) > 1 or origins[0].decode("latin-1") not in self.allowed):
                error = OriginNotAllowed()
                body = json.dumps({"error": error.message, "code": error.code}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": error.status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"vary", b"Origin"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class StreamHeaders:
    """Set the streaming headers on `text/event-stream` responses.

    FastAPI's own `Cache-Control: no-cache` lacks `no-transform`, and nothing sets `Content-Encoding`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if content_type.startswith(b"text/event-stream"):
                    headers = [(k, v) for k, v in headers if k.lower() not in _STREAM_HEADERS]
                    headers.extend(_STREAM_HEADERS.items())
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
