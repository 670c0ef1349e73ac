"""`OriginGate`: the strict origin check and the fetch-metadata policy, as ASGI middleware in front of
everything else."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import OriginNotAllowed
from ..events import error_body

# What a browser says of a request another site's page made (`<img>`, `<iframe>`, a `no-cors` fetch): such
# requests carry no `Origin` at all, so the allowlist never sees them. `same-origin` (our own test page),
# `none` (a URL typed into the address bar) and no header (curl, servers, older browsers) pass.
_FOREIGN_SITES = frozenset({b"cross-site", b"same-site"})


def refused(scope: Scope, allowed: frozenset[str], same_origin_prefixes: tuple[str, ...] = ()) -> bool:
    """An `Origin` that is not exactly allowed (or several of them); or none, from another site's page.

    Under `same_origin_prefixes` (pages the service serves itself, `/admin`; a prefix is a whole path
    segment: `/admin` and `/admin/...`, not `/administrator`) the service's own origin is allowed too.
    """
    origins = [v for k, v in scope["headers"] if k == b"origin"]
    if origins:
        if len(origins) > 1:
            return True
        origin = origins[0].decode("latin-1")
        if origin in allowed:
            return False
        path = scope["path"]
        under = any(path == p or path.startswith(p + "/") for p in same_origin_prefixes)
        return not (under and same_host(scope, origin))
    return any(k == b"sec-fetch-site" and v.strip().lower() in _FOREIGN_SITES for k, v in scope["headers"])


def same_host(scope: Scope, origin: str) -> bool:
    """The `Origin` names the host the request was sent to (`Host`): the page came from this service.

    The scheme is not compared: behind Fly's proxy the service sees http for an https page.
    """
    hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
    _, sep, rest = origin.partition("://")
    return bool(sep) and len(hosts) == 1 and rest.lower() == hosts[0].lower()


class OriginGate:
    """Refuse, before routing, retrieval or generation, a request that another site's page made.

    With an `Origin` it must be exactly allowed: Starlette's CORSMiddleware (behind this) only withholds the
    CORS headers and would still run the request. Several Origin headers are refused too: which one a
    browser meant is unknowable. Without one, Fetch Metadata (`Sec-Fetch-Site`) tells whether a page of
    another site asked; otherwise any page could have its visitors' browsers spend the token budget.
    """

    def __init__(
        self, app: ASGIApp, allowed: frozenset[str], same_origin_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.allowed = allowed
        # Paths whose pages the service serves itself (`/admin`): their own origin is allowed too.
        self.same_origin_prefixes = same_origin_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and refused(scope, self.allowed, self.same_origin_prefixes):
            error = OriginNotAllowed()
            body = json.dumps(error_body(error.code, error.message)).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": error.status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"vary", b"Origin, Sec-Fetch-Site"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
