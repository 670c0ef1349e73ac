"""The server itself: slow request heads are cut, connections are capped, and production exposes neither
the API docs (on Fly) nor `/metrics` on the public port.

In-process tests run real uvicorn (the service's own protocol class) on loopback with a tiny app; the slow
ones boot the service. Clients are raw sockets: no HTTP library sends a head one line at a time.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from tests.harness import ServerProcess, free_port
from zantara_rag.app import create_app, create_metrics_app
from zantara_rag.server import HeadTimeoutH11Protocol, SignalFreeServer
from zantara_rag.settings import Settings

HEAD = [
    b"GET /health HTTP/1.1\r\n",
    b"Host: zantara\r\n",
    b"X-A: 1\r\n",
    b"X-B: 2\r\n",
    b"X-C: 3\r\n",
    b"\r\n",
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers at once, or (`/slow`) streams for 1.5 s: longer than the head timeout, which must spare it."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for _ in range(3 if scope["path"] == "/slow" else 0):
        await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
        await asyncio.sleep(0.5)
    await send({"type": "http.response.body", "body": b"ok\n"})


@asynccontextmanager
async def serving(head_timeout: float) -> AsyncIterator[int]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="off",
        http=HeadTimeoutH11Protocol.with_timeout(head_timeout),
    )
    server = SignalFreeServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def trickle(port: int, lines: list[bytes], every: float, first: bytes = b"") -> tuple[bytes, float]:
    """Send `first`, then one line of `lines` every `every` seconds; (what came back, seconds until the
    server closed the connection or the response arrived)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    got = b""
    try:
        if first:
            writer.write(first)
            got += await reader.readuntil(b"ok\n")
        for line in lines:
            writer.write(line)
            try:
                chunk = await asyncio.wait_for(reader.read(65536), timeout=every)
            except TimeoutError:
                continue
            got += chunk
            if not chunk or b"ok\n" in chunk:
                break
        else:
            got += await asyncio.wait_for(reader.read(65536), timeout=5)
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return got, time.monotonic() - started


async def test_a_head_trickled_line_by_line_is_cut_at_the_head_timeout() -> None:
    async with serving(head_timeout=0.5) as port:
        got, seconds = await trickle(port, HEAD, every=0.3)
    assert b"HTTP/1.1" not in got, got
    assert 0.4 < seconds < 1.5, seconds  # cut at 0.5 s; the head would have been whole at 1.5 s


async def test_a_connection_that_sends_nothing_is_closed_at_the_head_timeout() -> None:
    async with serving(head_timeout=0.5) as port:
        got, seconds = await trickle(port, [b""] * 8, every=0.25)
    assert got == b"" and 0.4 < seconds < 1.9, seconds  # cut at 0.5 s; left open, it would wait 7 s


async def test_the_next_head_on_a_kept_alive_connection_is_bounded_too() -> None:
    async with serving(head_timeout=0.5) as port:
        got, seconds = await trickle(port, HEAD, every=0.3, first=b"".join(HEAD))
    assert got.count(b"HTTP/1.1 200") == 1, got  # the first request was answered, the trickled one cut
    assert seconds < 1.5


async def test_heads_sent_at_once_and_long_responses_are_untouched() -> None:
    async with serving(head_timeout=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in (b"/health", b"/slow", b"/health"):  # one kept-alive connection, a slow answer between
            writer.write(b"".join(HEAD).replace(b"/health", path))
            body = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), timeout=5)
            assert body.startswith(b"HTTP/1.1 200") and b"ok\n" in body
            assert body.count(b"tick") == (3 if path == b"/slow" else 0)
        writer.close()


# --- what production exposes


def serves(app: FastAPI, path: str) -> bool:
    """Whether `app` routes GET `path` to an endpoint (Starlette's own route matching)."""
    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    return any(route.matches(dict(scope))[0] == Match.FULL for route in app.router.routes)


def routed(settings: Settings, path: str) -> int:
    """The status `create_app(settings)` answers for GET `path`, without running the lifespan."""

    async def get() -> int:
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://zantara") as client:
            return (await client.get(path)).status_code

    return asyncio.run(get())


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CHROMA_PATH", str(tmp_path / "chroma"))
    for name in ("FLY_APP_NAME", "API_DOCS", "METRICS_PORT"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_on_fly_the_api_docs_are_off_unless_enabled(
    settings: None, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    assert routed(Settings(), path) == 200  # a laptop, CI: on
    monkeypatch.setenv("FLY_APP_NAME", "zantara-rag")
    assert routed(Settings(), path) == 404
    monkeypatch.setenv("API_DOCS", "true")
    assert routed(Settings(), path) == 200


def test_with_a_metrics_port_the_public_app_has_no_metrics(settings: None, monkeypatch) -> None:
    monkeypatch.setenv("METRICS_PORT", "9091")
    app = create_app(Settings())
    metrics_app = create_metrics_app(app)
    assert not serves(app, "/metrics") and serves(app, "/ready")
    assert serves(metrics_app, "/metrics") and not serves(metrics_app, "/ready")
    assert metrics_app.state is app.state  # it reads the services the main app's lifespan builds


def test_metrics_port_must_not_be_the_public_port() -> None:
    with pytest.raises(ValueError, match="METRICS_PORT must differ from PORT"):
        Settings(port=8080, metrics_port=8080)


def test_the_stream_cap_must_stay_below_the_connection_cap() -> None:
    with pytest.raises(ValueError, match="below LIMIT_CONCURRENCY"):
        Settings(max_concurrent_streams=600, limit_concurrency=600)


# --- against the service


@pytest.fixture(scope="module")
def guarded(mini_kb_template: Path) -> Iterator[ServerProcess]:
    metrics_port = free_port()
    with ServerProcess(
        mini_kb_template,
        AUTO_INGEST="false",
        HEAD_TIMEOUT_SECONDS="2",
        LIMIT_CONCURRENCY="4",
        METRICS_PORT=str(metrics_port),
    ) as server:
        server.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"  # type: ignore[attr-defined]
        yield server


def raw(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def test_the_service_cuts_a_trickled_head(guarded: ServerProcess) -> None:
    with raw(guarded) as sock:
        sock.settimeout(1.0)  # one line a second, listening in between
        started = time.monotonic()
        answer = b"(never closed)"
        try:
            for line in HEAD:
                sock.sendall(line)
                try:
                    answer = sock.recv(65536)
                except TimeoutError:
                    continue
                break
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        seconds = time.monotonic() - started
    print(f"\n[head timeout 2 s] a head trickled one line a second was cut after {seconds:.1f} s")
    assert answer == b"" and seconds < 3.5, (answer, seconds)


def test_the_service_caps_its_connections(guarded: ServerProcess) -> None:
    with ExitStack() as held:
        for _ in range(4):
            held.enter_context(raw(guarded))  # connected, nothing sent (yet)
        refused = httpx.get(guarded.url + "/health", timeout=10)
    assert refused.status_code == 503
    assert httpx.get(guarded.url + "/health", timeout=10).status_code == 200


def test_metrics_are_served_on_the_metrics_port_only(guarded: ServerProcess) -> None:
    public = httpx.get(guarded.url + "/metrics", timeout=10)
    private = httpx.get(guarded.metrics_url, timeout=10)  # type: ignore[attr-defined]
    assert public.status_code == 404
    assert private.status_code == 200 and "zantara_streams_active" in private.text
