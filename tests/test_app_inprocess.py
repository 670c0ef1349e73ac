"""The real app (`create_app`) driven in-process as a bare ASGI app, its lifespan run by hand, with
hand-written `receive`/`send`: no server, no client buffering, so a test can look at the app *while* the
body is being sent. The key property: the stream's reader and the admission slot are held for exactly as
long as the response is being sent (dependencies with yield declared `scope="request"`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse

from zantara_rag.app import create_app
from zantara_rag.knowledge.ingest import ingest
from zantara_rag.retrieval.embedder import Embedder
from zantara_rag.retrieval.store import VectorStore, connect
from zantara_rag.settings import Settings
from zantara_rag.streaming.stream import Stream

CHAT = "/bali-zero/chat-stream"
SSE = {"accept": "text/event-stream"}
QUESTION = "How much does the test visa cost?"

VISA = """---
title: Test visa
url: https://balizero.com/kb/test-visa
language: en
---
# Test visa

## Fees
The test visa costs IDR 2,000,000 and lasts 60 days. It can be extended once at an immigration office.
Applicants pay the fee online before arrival. The visa is issued as an e-visa by e-mail.

## Sponsor
A local sponsor is required for the test visa. The sponsor signs the guarantee letter.
"""


def clear_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the environment of whoever runs the tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A one-document knowledge base, ingested in-process; (knowledge root, chroma path)."""
    base = tmp_path_factory.mktemp("inprocess")
    root, chroma = base / "kb", base / "chroma"
    root.mkdir()
    (root / "test-visa.md").write_text(VISA, encoding="utf-8")
    with pytest.MonkeyPatch.context() as monkeypatch:
        clear_settings_env(monkeypatch)
        settings = Settings(chroma_path=chroma, knowledge_path=root)
    store = VectorStore(connect(settings), settings.chroma_collection, settings.embedding_model)
    embedder = Embedder.from_settings(settings)
    try:
        report = ingest([root], store, embedder, root=root, max_chars=1200, overlap=150, progress=False)
    finally:
        embedder.close()
    assert report.added > 0
    yield root, chroma


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_env(monkeypatch)


@pytest.fixture
async def app(kb: tuple[Path, Path]) -> AsyncIterator[FastAPI]:
    """The real app over that knowledge base, lifespan running; extractive answers, 30 ms a piece."""
    root, chroma = kb
    settings = Settings(
        chroma_path=chroma,
        knowledge_path=root,
        auto_ingest=False,
        anthropic_api_key=None,
        extractive_chunk_delay_ms=30,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@dataclass
class Exchange:
    """One request's messages as the server would have sent them."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")

    @property
    def events(self) -> list[dict[str, str]]:
        """Each SSE event as its fields (`data`, `id`, ...); comments left out."""
        found = []
        for block in self.body.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
            if fields:
                found.append(fields)
        return found

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(e["data"]) for e in self.events]


async def call(
    app: Any,
    path: str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    on_send: Callable[[dict[str, Any]], None] | None = None,
) -> Exchange:
    """One GET through the whole ASGI stack; `on_send` runs inside `send`, for each message."""
    query = urlencode(params or {}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    exchange = Exchange()
    requested = False
    never = asyncio.Event()  # the client stays until the response ends

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        exchange.messages.append(message)
        if on_send is not None:
            on_send(message)

    await asyncio.wait_for(app(scope, receive, send), 5)
    return exchange


async def test_the_reader_and_the_admission_slot_are_held_while_the_body_is_sent(app: FastAPI) -> None:
    hub, admission = app.state.services.hub, app.state.admission
    streams: list[Stream] = []
    seen: list[str] = []

    def inside_send(message: dict[str, Any]) -> None:
        # Checked inside every send, the response start included, and raised from there: if the reader or
        # the slot were let go before the body is sent, the test fails at once rather than timing out.
        if not streams:
            streams.extend(hub.live())
        held = (len(streams), streams[0].readers if streams else 0, admission.open_streams())
        assert held == (1, 1, 1), f"in send({message['type']}): (streams, readers, slots) = {held}"
        seen.append(message["type"])

    exchange = await call(app, CHAT, {"query": QUESTION}, SSE, on_send=inside_send)

    assert exchange.status == 200
    assert seen[0] == "http.response.start"
    assert seen.count("http.response.body") > 3  # the answer went out in several writes, then the end
    payloads = exchange.payloads
    assert payloads[-1]["done"] is True and payloads[-1]["model"] == "extractive"
    assert any(p.get("sources") for p in payloads)
    # After the response: the reader detached, the slot given back; the stream finished and kept.
    (stream,) = streams
    assert stream.readers == 0 and stream.finished
    assert admission.open_streams() == 0
    assert hub.live() == [] and hub.find(stream.id, stream.owner) is stream


async def test_a_reconnect_after_the_last_event_gets_204(app: FastAPI) -> None:
    first = await call(app, CHAT, {"query": QUESTION}, SSE)
    last_id = first.events[-1]["id"]

    again = await call(app, CHAT, {"query": QUESTION}, {**SSE, "last-event-id": last_id})

    assert again.status == 204
    assert again.body == b""
    assert "fly-replay" not in again.headers
    assert app.state.admission.open_streams() == 0


async def test_a_reconnect_from_an_earlier_event_replays_the_same_bytes_from_there(app: FastAPI) -> None:
    first = await call(app, CHAT, {"query": QUESTION}, SSE)
    events = first.events
    resumed = await call(app, CHAT, {"query": QUESTION}, {**SSE, "last-event-id": events[2]["id"]})

    assert resumed.status == 200
    assert resumed.events == events[3:]
    hub = app.state.services.hub
    (stream,) = hub._streams.values()
    assert stream.id == events[0]["id"].rsplit(":", 1)[0] and stream.resumes == 1


async def test_an_invalid_query_is_one_in_band_error_event(app: FastAPI) -> None:
    exchange = await call(app, CHAT, {"query": "   "}, SSE)

    assert exchange.status == 200
    assert exchange.headers["content-type"].startswith("text/event-stream")
    (error,) = exchange.payloads
    assert error["code"] == "invalid_query"
    assert error["done"] is True and error["sequenceNumber"] == 0
    assert app.state.admission.open_streams() == 0
    assert app.state.services.hub.live() == []


async def test_an_invalid_query_from_a_non_sse_client_is_a_400_json_body(app: FastAPI) -> None:
    exchange = await call(app, CHAT, {"query": "   "})
    assert exchange.status == 400
    assert json.loads(exchange.body)["code"] == "invalid_query"


# --- the technique can see when a dependency's exit runs


@pytest.mark.parametrize(("scope", "exit_before_body"), [("function", True), ("request", False)])
async def test_driving_the_app_by_hand_shows_when_a_yield_dependency_exits(
    scope: str, exit_before_body: bool
) -> None:
    """With `scope="function"` FastAPI runs the exit before the streamed body is sent; with "request",
    after. This is what the test above relies on to catch such a move for the chat route."""
    log: list[str] = []

    async def held() -> AsyncIterator[None]:
        try:
            yield
        finally:
            log.append("exit")

    probe = FastAPI()

    @probe.get("/stream")
    async def stream(_: None = Depends(held, scope=scope)) -> StreamingResponse:  # type: ignore[arg-type]
        async def body() -> AsyncIterator[str]:
            for n in range(3):
                yield f"data: {n}\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    exchange = await call(probe, "/stream", on_send=lambda m: log.append(m["type"]))

    assert exchange.body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert log.count("exit") == 1
    assert (log.index("exit") < log.index("http.response.body")) is exit_before_body


async def test_an_unexpected_failure_while_opening_a_stream_is_one_clean_error(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug inside the route's steps (here: the hub's room check raises): the client gets one terminal event
    # in band, or a JSON 500, and neither the client nor the log sees the exception's text.
    secret = "sk-ant-api03-leak ops@balizero.com"
    services, admission = app.state.services, app.state.admission

    def broken() -> bool:
        raise RuntimeError(secret)

    monkeypatch.setattr(services.hub, "has_room", broken)
    in_band = await call(app, CHAT, {"query": QUESTION}, SSE)
    assert in_band.status == 200
    assert [p.get("code") for p in in_band.payloads] == ["internal_error"]
    assert in_band.payloads[0]["error"] == "Sorry, something went wrong on our side. Please try again."
    plain = await call(app, CHAT, {"query": QUESTION})
    assert plain.status == 500 and json.loads(plain.body)["code"] == "internal_error"
    for exchange in (in_band, plain):
        assert b"leak" not in exchange.body and b"balizero" not in exchange.body
    assert "leak" not in caplog.text and "balizero.com" not in caplog.text
    assert "opening a stream failed (RuntimeError)" in caplog.text
    # Nothing held: no slot, no stream.
    assert admission.open_streams() == 0
