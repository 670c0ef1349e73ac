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

    def __init__(
        self, app: ASGIApp, allowed: frozenset[str], same_origin_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.allowed = allowed
        # Paths whose pages the service serves itself (`/admin`): their own origin is allowed too.
        self.same_origin_prefixes = same_origin_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origins = [v for k, v in scope["headers"] if k == b"origin"]
            if origins and (len(origins) > 1 or not self._allowed(scope, origins[0].decode("latin-1"))):
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

    def _allowed(self, scope: Scope, origin: str) -> bool:
        if origin in self.allowed:
            return True
        return scope["path"].startswith(self.same_origin_prefixes) and same_host(scope, origin)


def same_host(scope: Scope, origin: str) -> bool:
    """The `Origin` names the host the request was sent to (`Host`): the page came from this service.

    The scheme is not compared: behind Fly's proxy the service sees http for an https page.
    """
    hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
    _, sep, rest = origin.partition("://")
    return bool(sep) and len(hosts) == 1 and rest.lower() == hosts[0].lower()
