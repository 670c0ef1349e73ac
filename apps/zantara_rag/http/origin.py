"""`OriginGate`: the strict origin check, as ASGI middleware in front of everything else."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import OriginNotAllowed
from ..events import error_body


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
                body = json.dumps(error_body(error.code, error.message)).encode()
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
