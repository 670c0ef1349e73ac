"""The request id, and one JSON log line per request.

Pure ASGI middleware: Starlette's `BaseHTTPMiddleware` runs the endpoint in another task and breaks
streaming and disconnect handling. The line is written when the response ends, so for an event stream it
carries the stream's whole duration. The URL's query string is never logged: it holds the question, the
e-mail address and, with authentication, the access token; nor are the ids in a path (the matched route's
template is logged instead).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .client import client_ip

log = logging.getLogger("zantara_rag.access")

# Short enough to quote in a bug report and to sit in every log line; a UUID (36) or Fly's ids fit.
MAX_REQUEST_ID_CHARS = 64
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_REQUEST_ID_CHARS}}}")
_MAX_PATH = 256


def valid_request_id(value: str | None) -> str | None:
    """`value` when it is a short safe id (at most 64 of [A-Za-z0-9._-]), else None."""
    return value if value is not None and _REQUEST_ID.fullmatch(value) else None


def _header(scope: Scope, name: bytes) -> str | None:
    values = [v for k, v in scope["headers"] if k == name]
    return values[0].decode("latin-1") if len(values) == 1 else None


def route_template(scope: Scope) -> str:
    """The matched route's template (`/conversations/{conversation_id}`), never the values in it: a
    conversation id is a credential when authentication is off, a document id names a customer's file. A
    path no route matched is logged as it came."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else str(scope["path"])


class RequestLog:
    """Honour a valid incoming `X-Request-ID` (else make one), return it, and log the request when it ends."""

    def __init__(self, app: ASGIApp, *, trust_proxy_headers: bool = False) -> None:
        self.app = app
        self.trust_proxy_headers = trust_proxy_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = valid_request_id(_header(scope, b"x-request-id")) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500  # what the client gets if the app fails before a response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            fields: dict[str, object] = {
                "request_id": request_id,
                "method": scope["method"],
                "path": route_template(scope)[:_MAX_PATH],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "client_ip": client_ip(scope, self.trust_proxy_headers),
            }
            fly_request_id = valid_request_id(_header(scope, b"fly-request-id"))
            if fly_request_id:
                fields["fly_request_id"] = fly_request_id
            log.info("request", extra={"fields": fields})
