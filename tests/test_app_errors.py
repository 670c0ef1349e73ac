"""Every error of the app is the same JSON body `{"error", "code"}`: Starlette's own refusals included."""

from __future__ import annotations

import httpx
import pytest

from zantara_rag.app import create_app
from zantara_rag.settings import Settings


@pytest.fixture
def client() -> httpx.AsyncClient:
    # No lifespan: these refusals happen before any route (or its services) runs.
    transport = httpx.ASGITransport(app=create_app(Settings()))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_an_unknown_path_is_a_json_not_found(client: httpx.AsyncClient) -> None:
    async with client:
        got = await client.get("/admin/nope")
    assert got.status_code == 404
    assert got.json() == {"error": "Not found.", "code": "not_found"}


async def test_a_method_a_route_does_not_take_is_a_json_405_with_allow(client: httpx.AsyncClient) -> None:
    async with client:
        got = await client.put("/bali-zero/chat-stream")
    assert got.status_code == 405 and got.json()["code"] == "method_not_allowed"
    assert "GET" in got.headers["allow"]
