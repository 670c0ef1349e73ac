"""The access log line: the route's template stands for the path, so ids in a URL never reach the log."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from fastapi import FastAPI

from zantara_rag.http.request_log import RequestLog
from zantara_rag.logs import JsonFormatter


def app() -> RequestLog:
    inner = FastAPI()

    @inner.get("/conversations/{conversation_id}")
    async def conversation(conversation_id: str) -> dict[str, str]:
        return {"id": conversation_id}

    @inner.delete("/admin/documents/{doc_id:path}")
    async def document(doc_id: str) -> dict[str, str]:
        return {"id": doc_id}

    return RequestLog(inner)


async def logged(caplog: pytest.LogCaptureFixture, method: str, url: str) -> dict[str, object]:
    caplog.clear()
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with caplog.at_level(logging.INFO, logger="zantara_rag.access"):
            await client.request(method, url)
    (record,) = [r for r in caplog.records if r.name == "zantara_rag.access"]
    line: dict[str, object] = json.loads(JsonFormatter().format(record))
    return line


async def test_a_conversation_id_in_the_path_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    secret_id = "3f2b8c1e9a7d4605b1e2c3d4f5a6b7c8"
    line = await logged(caplog, "GET", f"/conversations/{secret_id}")
    assert line["path"] == "/conversations/{conversation_id}" and line["status"] == 200
    assert secret_id not in json.dumps(line)


async def test_a_document_id_in_the_path_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    line = await logged(caplog, "DELETE", "/admin/documents/uploads/client-contract.pdf")
    assert line["path"] == "/admin/documents/{doc_id:path}"
    assert "client-contract" not in json.dumps(line)


async def test_a_path_no_route_matched_is_logged_as_it_came(caplog: pytest.LogCaptureFixture) -> None:
    line = await logged(caplog, "GET", "/no/such/page")
    assert line["path"] == "/no/such/page" and line["status"] == 404
