"""The CORS allowlist: exact origins only, echoed, never `*`, refused before any work is done."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fakes.control import FakeAnthropic
from tests.harness import ServerProcess
from tests.sse import CHAT, SSE

pytestmark = pytest.mark.slow  # boots the service (or a browser) as a subprocess

ALLOWED = [
    "https://zantara.balizero.com",
    "http://localhost:3000",
    "http://localhost:5173",
    "http://127.0.0.1:3000",
    "http://127.0.0.1:5173",
]
REFUSED = [
    "null",
    "https://evil.example",
    "http://zantara.balizero.com",  # other scheme
    "https://zantara.balizero.com:8443",  # other port
    "https://zantara.balizero.com.evil.example",  # suffix look-alike
    "https://evilzantara.balizero.com",  # prefix look-alike
    "https://ZANTARA.BALIZERO.COM",  # browsers send lower case; anything else is forged
    "HTTPS://zantara.balizero.com",
    "https://zantara.balizero.com/",
    "http://localhost:3001",
    "http://localhost",
]
PREFLIGHT = {
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "last-event-id, authorization",
}


@pytest.mark.parametrize("origin", ALLOWED)
def test_allowed_origin_is_echoed_with_vary(extractive_server: ServerProcess, origin: str) -> None:
    r = httpx.get(
        extractive_server.url + CHAT, params={"query": "NPWP"}, headers={"Origin": origin, **SSE}, timeout=60
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin
    assert "Origin" in r.headers["vary"]
    pre = httpx.options(extractive_server.url + CHAT, headers={"Origin": origin, **PREFLIGHT})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == origin
    allowed = {h.strip().lower() for h in pre.headers["access-control-allow-headers"].split(",")}
    assert allowed >= {"content-type", "authorization", "accept", "cache-control", "last-event-id"}
    assert "GET" in pre.headers["access-control-allow-methods"]


@pytest.mark.parametrize("origin", REFUSED)
def test_unlisted_origin_gets_403_without_cors_headers(
    claude_server: ServerProcess, claude: FakeAnthropic, origin: str
) -> None:
    r = httpx.get(claude_server.url + CHAT, params={"query": "NPWP"}, headers={"Origin": origin, **SSE})
    assert r.status_code == 403
    assert r.json()["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in r.headers
    pre = httpx.options(claude_server.url + CHAT, headers={"Origin": origin, **PREFLIGHT})
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    assert claude.requests() == [], "a refused origin must not reach Claude"


def test_two_origin_headers_are_refused(extractive_server: ServerProcess) -> None:
    url = urlsplit(extractive_server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("GET", CHAT + "?query=hi")
    conn.putheader("Origin", "https://zantara.balizero.com")
    conn.putheader("Origin", "https://evil.example")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 403 and response.getheader("access-control-allow-origin") is None
    conn.close()


def test_a_preflight_with_two_origin_headers_is_refused(mini_claude_server: ServerProcess) -> None:
    url = urlsplit(mini_claude_server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("OPTIONS", CHAT)
    conn.putheader("Origin", "https://zantara.balizero.com")
    conn.putheader("Origin", "https://evil.example")
    for name, value in PREFLIGHT.items():
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 403 and response.getheader("access-control-allow-origin") is None
    conn.close()


@pytest.mark.parametrize(
    "request_headers",
    [
        {"Access-Control-Request-Method": "PUT"},
        {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-evil"},
        {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "cookie"},
    ],
    ids=["method", "header", "cookie"],
)
def test_a_preflight_for_something_not_allowed_gets_no_grant(
    mini_claude_server: ServerProcess, request_headers: dict[str, str]
) -> None:
    pre = httpx.options(
        mini_claude_server.url + CHAT, headers={"Origin": "https://zantara.balizero.com", **request_headers}
    )
    assert pre.status_code == 400
    assert "PUT" not in pre.headers.get("access-control-allow-methods", "")
    allowed = pre.headers.get("access-control-allow-headers", "").lower()
    assert "x-evil" not in allowed and "cookie" not in allowed


def test_an_options_request_without_origin_is_not_a_preflight(mini_claude_server: ServerProcess) -> None:
    pre = httpx.options(mini_claude_server.url + CHAT, headers=PREFLIGHT)
    assert pre.status_code == 405 and "access-control-allow-origin" not in pre.headers


def test_no_origin_is_served(extractive_server: ServerProcess) -> None:
    r = httpx.get(extractive_server.url + CHAT, params={"query": "NPWP"}, timeout=60)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_wildcard_is_refused_at_boot() -> None:
    from pydantic import ValidationError

    from zantara_rag.settings import Settings

    with pytest.raises(ValidationError, match="cors_allowed_origins"):
        Settings(cors_allowed_origins="*")
