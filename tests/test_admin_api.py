"""The admin API in-process: the real app (lifespan run by hand) over a real embedded Chroma and the real
embedder, reached through httpx's ASGI transport with real multipart bodies."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.admin import ADMIN_SECRET, PNG, QUOKKA, WOMBAT, bearer, brochure, pdf, token
from tests.test_app_inprocess import clear_settings_env
from zantara_rag.app import create_app
from zantara_rag.settings import Settings

DOCS = "/admin/documents"
QUOKKA_QUESTION = "How much does the Quokka permit cost per day?"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_env(monkeypatch)


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "chroma_path": tmp_path / "chroma",
        "knowledge_path": tmp_path / "kb",
        "auto_ingest": False,
        "auth_secret": ADMIN_SECRET,
        "extractive_chunk_delay_ms": 0,
        "rate_limit_per_minute": 0,
        "max_streams_per_client": 0,
        "max_concurrent_streams": 0,
        "daily_token_budget": 0,
        "daily_token_budget_per_client": 0,
        **overrides,
    }
    return Settings(**values)


async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            yield application, client


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async for pair in running(
        settings_for(tmp_path, admin_max_upload_bytes=400_000, ingest_max_pdf_pages=30)
    ):
        yield pair


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("file", (name, data)) for name, data in items]


def chunk_count(app: FastAPI) -> int:
    return int(app.state.services.store.count())


def metric(app: FastAPI, name: str, **labels: str) -> float:
    value = app.state.services.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


async def ask(client: httpx.AsyncClient, query: str) -> tuple[str, list[dict[str, Any]]]:
    reply = await client.get(
        "/bali-zero/chat-stream",
        params={"query": query},
        headers={"Accept": "text/event-stream", **bearer(token(scope=None))},
    )
    events = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    answer = "".join(e.get("text", "") for e in events)
    sources = next((e["sources"] for e in events if "sources" in e), [])
    return answer, sources


# --- who may


async def test_without_auth_secret_every_admin_path_is_404_json(tmp_path: Path) -> None:
    async for _, client in running(settings_for(tmp_path, auth_secret=None)):
        for method, path in [("GET", "/admin"), ("GET", DOCS), ("POST", DOCS), ("DELETE", f"{DOCS}/x.md")]:
            reply = await client.request(method, path, headers=bearer())
            assert reply.status_code == 404, (method, path)
            assert reply.json()["code"] == "not_found"
        schema = (await client.get("/openapi.json")).json()
        assert not any(p.startswith("/admin") for p in schema["paths"])


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Basic b3BzOnB3"}, 401, "unauthorized"),
        (bearer(token(secret="another-secret-of-at-least-32-bytes!!")), 401, "unauthorized"),
        (bearer(token(ttl=-60)), 401, "unauthorized"),
        (bearer(token(scope=None)), 403, "forbidden"),
        (bearer(token(scope="chat read")), 403, "forbidden"),
    ],
)
async def test_no_token_is_401_and_a_token_without_the_admin_scope_403(
    api: tuple[FastAPI, httpx.AsyncClient], headers: dict[str, str], status: int, code: str
) -> None:
    app, client = api
    for method, path in [("GET", DOCS), ("POST", DOCS), ("DELETE", f"{DOCS}/uploads/q.md")]:
        kwargs: dict[str, Any] = {"files": files(("q.md", QUOKKA.encode()))} if method == "POST" else {}
        reply = await client.request(method, path, headers=headers, **kwargs)
        assert reply.status_code == status, (method, reply.text)
        assert reply.json()["code"] == code
    assert chunk_count(app) == 0


async def test_an_admin_token_in_the_url_is_not_accepted(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = api
    reply = await client.get(DOCS, params={"access_token": token()})
    assert reply.status_code == 401


async def test_the_page_is_served_without_a_token(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = api
    page = await client.get("/admin")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # One self-contained file: no script, style or font fetched from anywhere.
    assert "<script>" in page.text and "src=" not in page.text and "://" not in page.text


# --- the three endpoints


async def test_an_upload_is_listed_and_retrieved_then_deleted_and_not_retrieved(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = api
    reply = await client.post(DOCS, files=files(("quokka-permit.md", QUOKKA.encode())), headers=bearer())
    assert reply.status_code == 200, reply.text
    (doc,) = reply.json()["documents"]
    assert doc["id"] == "uploads/quokka-permit.md" and doc["title"] == "Quokka permit"
    assert doc["status"] == "added" and doc["chunks"] == chunk_count(app) >= 2
    assert doc["added"] == doc["chunks"] and "reason" not in doc

    answer, sources = await ask(client, QUOKKA_QUESTION)
    assert "4,321" in answer and sources[0]["id"] == "uploads/quokka-permit.md"

    listed = (await client.get(DOCS, headers=bearer())).json()
    (entry,) = listed["documents"]
    assert entry["id"] == doc["id"] and entry["title"] == "Quokka permit" and entry["language"] == "en"
    assert entry["chunks"] == doc["chunks"] and entry["bytes"] == len(QUOKKA.encode())
    assert entry["updated"].endswith("Z") and entry["updated"][:4].isdigit()
    assert listed["limits"] == {"maxUploadBytes": 400_000, "maxFileBytes": 20_000_000, "maxPdfPages": 30}

    gone = await client.delete(f"{DOCS}/uploads/quokka-permit.md", headers=bearer())
    assert gone.status_code == 204 and gone.content == b""
    assert chunk_count(app) == 0
    _, sources = await ask(client, QUOKKA_QUESTION)
    assert all(s["id"] != doc["id"] for s in sources)
    again = await client.delete(f"{DOCS}/uploads/quokka-permit.md", headers=bearer())
    assert again.status_code == 404 and again.json()["code"] == "not_found"
    assert metric(app, "zantara_kb_documents_total", action="deleted") == 1


async def test_an_unchanged_reupload_costs_nothing(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = api
    await client.post(DOCS, files=files(("quokka.md", QUOKKA.encode())), headers=bearer())
    store = app.state.services.store._collection
    before = store.get(include=["documents", "metadatas", "embeddings"])
    embedded = metric(app, "zantara_kb_chunks_embedded_total")
    version = app.state.services.store.version()

    started = time.perf_counter()
    reply = await client.post(DOCS, files=files(("quokka.md", QUOKKA.encode())), headers=bearer())
    elapsed = time.perf_counter() - started

    (doc,) = reply.json()["documents"]
    assert doc["status"] == "unchanged" and doc["chunks"] == len(before["ids"])
    assert metric(app, "zantara_kb_chunks_embedded_total") == embedded
    assert app.state.services.store.version() == version  # nothing written, nobody refreshes
    after = store.get(include=["documents", "metadatas", "embeddings"])
    assert after["ids"] == before["ids"] and after["metadatas"] == before["metadatas"]
    assert (after["embeddings"] == before["embeddings"]).all()
    assert elapsed < 1.0, f"an unchanged re-upload took {elapsed:.3f}s"


async def test_a_changed_document_replaces_its_previous_version(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = api
    await client.post(DOCS, files=files(("quokka.md", QUOKKA.encode())), headers=bearer())
    shorter = QUOKKA.replace("IDR 4,321", "IDR 5,555").split("## Documents")[0]
    reply = await client.post(DOCS, files=files(("quokka.md", shorter.encode())), headers=bearer())
    (doc,) = reply.json()["documents"]
    assert doc["status"] == "updated" and doc["removed"] >= 1
    texts = app.state.services.store._collection.get()["documents"]
    assert any("5,555" in t for t in texts) and not any("4,321" in t for t in texts)
    assert not any("passport copy" in t for t in texts)
    answer, _ = await ask(client, QUOKKA_QUESTION)
    assert "5,555" in answer


async def test_a_batch_streams_progress_when_the_client_accepts_an_event_stream(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = api
    reply = await client.post(
        DOCS,
        files=files(("quokka.md", QUOKKA.encode()), ("wombat.txt", WOMBAT.encode()), ("scan.pdf", pdf([[]]))),
        headers={**bearer(), "Accept": "text/event-stream"},
    )
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in reply.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    assert [name for name, _ in events] == ["progress"] * 4 + ["result"]
    assert [data["done"] for _, data in events[:4]] == [0, 1, 2, 3]
    assert all(data["total"] == 3 for _, data in events[:4])
    statuses = [data["document"]["status"] for _, data in events[1:4]]
    assert statuses == ["added", "added", "rejected"]
    result = events[-1][1]["documents"]
    assert [d["id"] for d in result] == ["uploads/quokka.md", "uploads/wombat.txt", "uploads/scan.pdf"]
    assert "no extractable text" in result[2]["reason"]


async def test_client_ids_name_documents_and_are_checked(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = api
    ok = await client.post(
        DOCS,
        files=files(("q.md", QUOKKA.encode())),
        data={"id": "knowledge/visas/quokka.md"},
        headers=bearer(),
    )
    assert ok.json()["documents"][0]["id"] == "knowledge/visas/quokka.md"
    for bad in ["../etc/passwd", "/abs.md", "a//b.md", "a/./b"]:
        reply = await client.post(DOCS, files=files(("q.md", b"x")), data={"id": bad}, headers=bearer())
        assert reply.status_code == 400 and reply.json()["code"] == "invalid_upload", bad
    twice = await client.post(DOCS, files=files(("q.md", b"# a\nx"), ("q.md", b"# b\ny")), headers=bearer())
    assert twice.status_code == 400


# --- refusals: a clear error, nothing written


async def test_too_large_is_413_naming_the_limit_and_nothing_is_written(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = api
    big = ("# Big\n\n" + "The quokka permit text. " * 20_000).encode()
    reply = await client.post(
        DOCS, files=files(("quokka.md", QUOKKA.encode()), ("big.md", big)), headers=bearer()
    )
    assert reply.status_code == 413
    body = reply.json()
    assert (
        body["code"] == "too_large"
        and "400000 bytes" in body["error"]
        and "ADMIN_MAX_UPLOAD_BYTES" in body["error"]
    )
    assert chunk_count(app) == 0


async def test_a_pdf_over_the_page_cap_is_413_and_nothing_is_written(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = api
    reply = await client.post(
        DOCS, files=files(("quokka.md", QUOKKA.encode()), ("long.pdf", brochure(31))), headers=bearer()
    )
    assert reply.status_code == 413
    assert "30 pages" in reply.json()["error"] and "long.pdf (31 pages)" in reply.json()["error"]
    assert chunk_count(app) == 0


@pytest.mark.parametrize(
    ("name", "data", "detected"),
    [
        ("visa.md", PNG, "image/png"),
        ("notes.txt", b"PK\x03\x04" + bytes(40), "application/zip"),
        ("x.pdf", bytes(range(256)) * 4, "binary data"),
        ("utf16.txt", "Visa".encode("utf-16"), "binary data"),
    ],
)
async def test_not_a_supported_type_by_content_is_415_and_nothing_is_written(
    api: tuple[FastAPI, httpx.AsyncClient], name: str, data: bytes, detected: str
) -> None:
    app, client = api
    reply = await client.post(
        DOCS, files=files(("quokka.md", QUOKKA.encode()), (name, data)), headers=bearer()
    )
    assert reply.status_code == 415
    assert reply.json()["code"] == "unsupported_type" and f"{name} ({detected})" in reply.json()["error"]
    assert chunk_count(app) == 0


async def test_not_multipart_or_no_file_is_400(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = api
    for kwargs in [{"json": {"file": "x"}}, {"files": [("other", ("a.md", b"# a"))]}]:
        reply = await client.post(DOCS, headers=bearer(), **kwargs)  # type: ignore[arg-type]
        assert reply.status_code == 400 and reply.json()["code"] == "invalid_upload"


# --- every change logged (who, what, when; never the content) and counted


async def test_changes_are_logged_with_a_hashed_actor_and_counted(
    api: tuple[FastAPI, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    app, client = api
    with caplog.at_level("INFO", logger="zantara_rag.knowledge"):
        await client.post(DOCS, files=files(("quokka.md", QUOKKA.encode())), headers=bearer())
        await client.post(DOCS, files=files(("quokka.md", QUOKKA.encode())), headers=bearer())
        await client.delete(f"{DOCS}/uploads/quokka.md", headers=bearer())
    lines = [r for r in caplog.records if r.getMessage() == "knowledge change"]
    fields = [r.fields for r in lines]  # type: ignore[attr-defined]
    assert [f["action"] for f in fields] == ["added", "unchanged", "deleted"]
    actor = app.state.services.hashes("ops@balizero.com")
    assert all(f["actor"] == actor and f["document"] == "uploads/quokka.md" for f in fields)
    text = json.dumps(fields)
    assert "ops@balizero.com" not in text and "4,321" not in text and "Quokka permit" not in text
    assert metric(app, "zantara_kb_documents_total", action="added") == 1
    assert metric(app, "zantara_kb_documents_total", action="unchanged") == 1
    assert metric(app, "zantara_kb_chunks_embedded_total") >= 2
    rendered = (await client.get("/metrics")).text
    for series in (
        "zantara_kb_documents_total",
        "zantara_kb_chunks_embedded_total",
        "zantara_kb_write_seconds",
        "zantara_kb_refreshes_total",
    ):
        assert series in rendered


# --- the change hook


async def test_refresh_callbacks_run_before_the_upload_returns(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = api
    services = app.state.services
    seen: list[int] = []

    async def refresh() -> None:
        seen.append(services.store.count())  # what an index rebuilt now would hold

    services.changes.subscribe(refresh)
    await client.post(DOCS, files=files(("quokka.md", QUOKKA.encode())), headers=bearer())
    assert seen == [chunk_count(app)] and seen[0] > 0
    await client.post(DOCS, files=files(("quokka.md", QUOKKA.encode())), headers=bearer())  # unchanged
    assert len(seen) == 1
    await client.delete(f"{DOCS}/uploads/quokka.md", headers=bearer())
    assert seen == [seen[0], 0]
    assert metric(app, "zantara_kb_refreshes_total", origin="local") == 2
