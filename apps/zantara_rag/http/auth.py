"""Optional authentication: short-lived HS256 tokens (PyJWT) signed with `AUTH_SECRET`.

Off unless `AUTH_SECRET` is set. A browser's EventSource cannot send headers, so the token may ride in the
`access_token` query parameter; fetch clients send `Authorization: Bearer <token>`. Tokens are checked
against `AUTH_SECRET`, then `AUTH_SECRET_PREVIOUS` (the grace period of a rotation), and signed with
`AUTH_SECRET` only. A token is never logged and never echoed: every failure is the same `unauthorized`.

A token must name this service as its audience (`aud` = `AUTH_AUDIENCE`, which `zantara-rag token` sets), so a
token minted with the same secret for another purpose is refused, and live at most as long as the CLI would
mint (`exp - iat` at most 30 days): a stolen long-lived token is not forever. PyJWT checks the signature,
the pinned algorithm, `exp`, `iat` (not in the future) and `aud`; the lifetime bound is checked here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import jwt

from ..errors import Unauthorized
from ..settings import Settings

ALGORITHM = "HS256"
# The `scope` claim (space-separated) that lets a token manage the knowledge base (`/admin`).
ADMIN_SCOPE = "admin"
MAX_TTL_SECONDS = 30 * 86400
MAX_TOKEN_CHARS = 4096
LEEWAY_SECONDS = 5  # clock skew between the minting machine and this one
_TTL = re.compile(r"([0-9]{1,9})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for, and what it may do (the `scope` claim, space-separated: `admin`
    manages the knowledge base)."""

    subject: str
    scopes: frozenset[str] = frozenset()


def parse_ttl(text: str) -> int:
    """`90s`, `30m`, `1h`, `2d` as seconds; raises `ValueError` for anything else or beyond 30 days."""
    match = _TTL.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a lifetime like 90s, 30m, 1h or 2d")
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"a lifetime must be between 1s and {MAX_TTL_SECONDS // 86400}d")
    return seconds


def mint_token(settings: Settings, sub: str, ttl_seconds: int, scopes: Iterable[str] = ()) -> str:
    """A token for `sub`, valid for `ttl_seconds`, signed with `AUTH_SECRET`; `scopes` go in `scope`."""
    if settings.auth_secret is None:
        raise ValueError("AUTH_SECRET is not set")
    if not sub.strip():
        raise ValueError("the subject must not be empty")
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"a lifetime must be between 1s and {MAX_TTL_SECONDS // 86400}d")
    issued = int(time.time())
    claims: dict[str, object] = {
        "sub": sub.strip(),
        "aud": settings.auth_audience,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if scopes:
        claims["scope"] = " ".join(sorted(set(scopes)))
    return jwt.encode(claims, settings.auth_secret.get_secret_value(), algorithm=ALGORITHM)


def verify_token(settings: Settings, token: str) -> Principal:
    """The principal of a valid, unexpired token for this service signed by a current secret; else
    `Unauthorized`."""
    secrets = [s.get_secret_value() for s in (settings.auth_secret, settings.auth_secret_previous) if s]
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized()
    for secret in secrets:
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                audience=settings.auth_audience,
                options={"require": ["exp", "iat", "sub", "aud"], "strict_aud": True},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.InvalidSignatureError:
            continue  # maybe signed with the other secret
        except jwt.PyJWTError:
            raise Unauthorized() from None
        subject = claims["sub"].strip()
        if not subject or int(claims["exp"]) - int(claims["iat"]) > MAX_TTL_SECONDS:
            raise Unauthorized()
        scope = claims.get("scope")
        return Principal(subject, frozenset(scope.split()) if isinstance(scope, str) else frozenset())
    raise Unauthorized()


def bearer_token(authorization: str) -> str | None:
    """The credentials of an `Authorization: Bearer <token>` header; None for any other scheme."""
    scheme, _, credentials = authorization.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def request_token(authorization: str | None, access_token: str | None) -> str | None:
    """The token a request carries: the `Authorization: Bearer` header, else the `access_token` parameter."""
    if authorization is not None:
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized()
        return token
    return access_token


def authenticate(settings: Settings, authorization: str | None, access_token: str | None) -> Principal | None:
    """None when authentication is off; the principal when a valid token is presented; else `Unauthorized`."""
    if settings.auth_secret is None:
        return None
    token = request_token(authorization, access_token)
    if token is None:
        raise Unauthorized()
    return verify_token(settings, token)
