"""`OriginGate` in-process: the origin allowlist and the fetch-metadata policy, in front of a tiny app that
counts what reaches it (anything that does is work another site could have made us do)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from tests.test_admin_api import running, settings_for
from tests.test_app_inprocess import clear_settings_env
from zantara_rag.http.origin import OriginGate

ALLOWED = frozenset({"https://zantara.balizero.com"})


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"answered"})


async def get(headers: dict[str, str]) -> tuple[httpx.Response, int]:
    inner = Counter()
    transport = httpx.ASGITransport(app=OriginGate(inner, ALLOWED))
    async with httpx.AsyncClient(transport=transport, base_url="http://zantara") as client:
        response = await client.get("/bali-zero/chat-stream?query=KITAS", headers=headers)
    return response, inner.calls


@pytest.mark.parametrize("site", ["cross-site", "same-site", "Cross-Site", " same-site "])
async def test_a_request_from_another_sites_page_is_refused_before_any_work(site: str) -> None:
    response, calls = await get({"Sec-Fetch-Site": site})
    assert (response.status_code, calls) == (403, 0)
    assert response.json()["code"] == "origin_not_allowed"
    assert "Sec-Fetch-Site" in response.headers["vary"]


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, servers, browsers without fetch metadata
        {"Sec-Fetch-Site": "same-origin"},  # the service's own test page
        {"Sec-Fetch-Site": "none"},  # a URL typed into the address bar
        {"Origin": "https://zantara.balizero.com", "Sec-Fetch-Site": "cross-site"},  # CORS decides
    ],
    ids=["no-header", "same-origin", "none", "allowed-origin"],
)
async def test_what_no_other_site_asked_for_passes(headers: dict[str, str]) -> None:
    response, calls = await get(headers)
    assert (response.status_code, calls) == (200, 1)


@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
async def test_an_unlisted_origin_is_refused_whatever_the_fetch_metadata(origin: str) -> None:
    response, calls = await get({"Origin": origin, "Sec-Fetch-Site": "same-origin"})
    assert (response.status_code, calls) == (403, 0)


async def test_the_services_own_pages_may_rate_an_answer_but_chat_keeps_the_allowlist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real app: the test page it serves (`/sse-test`) posts ratings to its own origin.
    clear_settings_env(monkeypatch)
    rating = {"conversation_id": "0" * 32, "turn": 1, "rating": -1}
    async for _, client in running(settings_for(tmp_path, auth_secret=None)):
        own = {"Origin": "http://testserver"}  # the `Host` the request goes to
        assert (
            await client.post("/feedback", json=rating, headers=own)
        ).status_code == 404  # reached the route
        other = {"Origin": "http://testserver.evil.example"}
        assert (await client.post("/feedback", json=rating, headers=other)).status_code == 403
        asked = await client.get("/bali-zero/chat-stream", params={"query": "KITAS"}, headers=own)
        assert asked.status_code == 403 and asked.json()["code"] == "origin_not_allowed"
        # The exemption is a whole path segment: a path merely starting with the same letters keeps the rule.
        for path in ("/feedbacks", "/administrator"):
            assert (await client.post(path, json=rating, headers=own)).status_code == 403
