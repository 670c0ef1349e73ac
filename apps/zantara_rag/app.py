"""The app factory and its lifespan: nothing is loaded or connected at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response

from . import __version__
from .errors import ZantaraError
from .events import error_body
from .middleware import OriginGate, StreamHeaders
from .routes import chat, health
from .services import build_services, ingest_sample_if_empty
from .settings import PACKAGE_DIR, Settings

log = logging.getLogger(__name__)

SSE_TEST_PAGE = PACKAGE_DIR.parents[1] / "SSE_TEST.html"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # FastAPI's SSE keep-alive (`: ping` after this many idle seconds) has no public knob; pinned
    # FastAPI version, and tests/test_contract.py checks the heartbeat arrives on time.
    fastapi.routing._PING_INTERVAL = settings.heartbeat_seconds  # type: ignore[attr-defined]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            services = await build_services(settings)
        except ZantaraError as exc:
            log.error("cannot start: %s", exc.message)
            raise
        app.state.services = services
        ingestion = asyncio.create_task(ingest_sample_if_empty(services))
        try:
            yield
        finally:
            ingestion.cancel()
            await services.aclose()

    app = FastAPI(
        title="Zantara RAG",
        version=__version__,
        summary="Bali Zero's streaming RAG chat backend",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(chat.router)
    app.include_router(health.router)

    @app.get("/sse-test", include_in_schema=False)
    async def sse_test_page() -> Response:
        if not SSE_TEST_PAGE.is_file():
            return JSONResponse(error_body("not_found", "The test page is not installed."), status_code=404)
        return FileResponse(SSE_TEST_PAGE, media_type="text/html; charset=utf-8")

    @app.exception_handler(ZantaraError)
    async def zantara_error(request: Request, exc: ZantaraError) -> Response:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(chat.NoContent)
    async def no_content(request: Request, exc: chat.NoContent) -> Response:
        return Response(status_code=204)

    @app.exception_handler(chat.ReplayElsewhere)
    async def replay(request: Request, exc: chat.ReplayElsewhere) -> Response:
        return Response(status_code=204, headers={"fly-replay": f"prefer_instance={exc.machine}"})

    # Outermost first: the origin gate refuses before anything runs; CORS echoes allowed origins.
    app.add_middleware(StreamHeaders)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=sorted(settings.allowed_origins),
        allow_methods=["GET", "OPTIONS"],
        allow_headers=[
            "Content-Type",
            "Authorization",
            "Accept",
            "Cache-Control",
            "Last-Event-ID",
            "X-Request-ID",
        ],
        expose_headers=["X-Request-ID"],
        max_age=600,
    )
    app.add_middleware(OriginGate, allowed=settings.allowed_origins)
    return app
