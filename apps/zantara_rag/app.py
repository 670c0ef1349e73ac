"""The app factory and its lifespan: nothing is loaded or connected at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .errors import InvalidFeedback, InvalidRequest, ZantaraError
from .events import error_body
from .http import admin, chat_stream, conversations, health, prometheus
from .http.admission import Admission
from .http.origin import OriginGate
from .http.request_log import RequestLog, route_template
from .knowledge.watcher import watch_folder
from .services import Services, build_services, ingest_sample_if_empty
from .settings import PACKAGE_DIR, Settings

log = logging.getLogger(__name__)

SSE_TEST_NAME = "SSE_TEST.html"
# Starlette's own refusals (no route, or not this method), as our error bodies.
HTTP_ERRORS = {
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "This method is not allowed here."),
}
# Longest the shutdown waits for the knowledge base's writers (the first-start ingestion, the folder watcher,
# an upload) to finish the document each is on: they stop together, within this one bound.
KNOWLEDGE_STOP_SECONDS = 10.0


def sse_test_page() -> Path | None:
    """The test page: in the working directory (the image's WORKDIR, where the Dockerfile copies it), else at
    the root of a source checkout. An installed package has no source tree around it."""
    for candidate in (Path.cwd() / SSE_TEST_NAME, PACKAGE_DIR.parents[1] / SSE_TEST_NAME):
        if candidate.is_file():
            return candidate
    return None


async def start_knowledge(services: Services) -> list[tuple[asyncio.Task[None], asyncio.Event | None]]:
    """The knowledge base's background work: the change poll (server mode), the folder watcher (opt-in)."""
    settings = services.settings
    try:
        await services.changes.start()
        await services.library.sweep()
    except Exception as exc:  # the store hiccuped: chat reports it on its own; the poll catches up later
        log.warning("knowledge start-up checks failed (%s)", type(exc).__name__)
    tasks: list[tuple[asyncio.Task[None], asyncio.Event | None]] = []
    if settings.chroma_url is not None:
        tasks.append((asyncio.create_task(services.changes.watch()), None))
    if settings.knowledge_watch:
        stop = asyncio.Event()
        tasks.append(
            (asyncio.create_task(watch_folder(services.library, settings.knowledge_path, stop)), stop)
        )
    if settings.auth_secret is None:
        log.info(
            "the admin API and page (/admin) are off: turn authentication on (docs/security.md, "
            "'The admin scope') and mint an admin token with `zantara-rag token --sub NAME --admin`"
        )
    else:
        log.info("the admin API and page are at /admin (tokens with the admin scope)")
    return tasks


async def stop_knowledge(tasks: list[tuple[asyncio.Task[None], asyncio.Event | None]]) -> None:
    for task, stop in tasks:
        if stop is not None:
            stop.set()  # the watcher leaves its loop between two batches
        else:
            task.cancel()
    if tasks:
        await asyncio.wait({t for t, _ in tasks}, timeout=KNOWLEDGE_STOP_SECONDS)
    for task, _ in tasks:
        task.cancel()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            services = await build_services(settings)
        except ZantaraError as exc:
            log.error("cannot start: %s", exc.message)
            raise
        try:
            admission = Admission.from_settings(settings, on_refusal=services.metrics.rate_limited)
        except ZantaraError as exc:
            log.error("cannot start: %s", exc.message)
            await services.aclose()  # the writer lock, the conversation writer, the clients
            raise
        app.state.services = services
        app.state.admission = admission
        background = await start_knowledge(services)
        ingestion = asyncio.create_task(ingest_sample_if_empty(services))
        try:
            yield
        finally:
            # Cancelling the task would not stop its thread: ask it to stop before its next file, and wait,
            # together with the other writers (each a thread that cannot be stopped in a document's middle).
            services.stop_ingestion.set()
            await asyncio.gather(
                asyncio.wait({ingestion}, timeout=KNOWLEDGE_STOP_SECONDS),
                stop_knowledge(background),
                services.library.aclose(wait_seconds=KNOWLEDGE_STOP_SECONDS),
            )
            await services.aclose()

    # On Fly the API docs are off unless API_DOCS says otherwise: they map the API for anyone.
    docs = settings.docs_enabled
    app = FastAPI(
        title="Zantara RAG",
        version=__version__,
        summary="Bali Zero's streaming RAG chat backend",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.include_router(chat_stream.router)
    app.include_router(conversations.router)
    app.include_router(health.router)
    if settings.metrics_port is None:  # else only on the metrics port (`create_metrics_app`)
        app.include_router(prometheus.router)
    # Without AUTH_SECRET the admin paths answer 404 and stay out of the OpenAPI document.
    app.include_router(admin.router, include_in_schema=settings.auth_secret is not None)

    @app.get("/sse-test", include_in_schema=False)
    async def sse_test() -> Response:
        page = sse_test_page()
        if page is None:
            return JSONResponse(error_body("not_found", "The test page is not installed."), status_code=404)
        return FileResponse(page, media_type="text/html; charset=utf-8")

    @app.exception_handler(ZantaraError)
    async def zantara_error(request: Request, exc: ZantaraError) -> Response:
        extra = {"retryAfter": exc.retry_after} if exc.retry_after is not None else {}
        return JSONResponse(
            error_body(exc.code, exc.message, **extra), status_code=exc.status, headers=exc.response_headers()
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # A bug: the same JSON error body as every other failure, never the exception's text.
        route = route_template(request.scope)
        log.error("unhandled error in %s %s (%s)", request.method, route, type(exc).__name__)
        error = ZantaraError()
        return JSONResponse(error_body(error.code, error.message), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # An unknown path or a method a route does not take: the same JSON body as every other error.
        code, message = HTTP_ERRORS.get(exc.status_code, ("invalid_request", "The request is not valid."))
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # Our error body (code and a fixed message), not FastAPI's 422 that would echo the input back.
        error = (
            InvalidFeedback()
            if request.url.path == "/feedback"
            else InvalidRequest("The request is not valid.")
        )
        return JSONResponse(error_body(error.code, error.message), status_code=error.status)

    @app.exception_handler(chat_stream.NoContent)
    async def no_content(request: Request, exc: chat_stream.NoContent) -> Response:
        return Response(status_code=204)

    @app.exception_handler(chat_stream.ReplayElsewhere)
    async def replay(request: Request, exc: chat_stream.ReplayElsewhere) -> Response:
        return Response(status_code=204, headers={"fly-replay": f"prefer_instance={exc.machine}"})

    # Outermost first: the origin gate refuses before anything runs; CORS echoes allowed origins.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=sorted(settings.allowed_origins),
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
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
    # The admin page and the test page (`/sse-test`, rating an answer) post to their own origin: browsers send
    # `Origin` on a same-origin POST.
    app.add_middleware(
        OriginGate, allowed=settings.allowed_origins, same_origin_prefixes=("/admin", "/feedback")
    )
    # Outermost of all, so that every response (a refusal too) carries the request id and is logged.
    app.add_middleware(RequestLog, trust_proxy_headers=settings.trust_proxy_headers)
    return app


def create_metrics_app(app: FastAPI) -> FastAPI:
    """What the `METRICS_PORT` listener serves: `/metrics` only, from the services `app`'s lifespan built."""
    metrics_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    metrics_app.state = app.state
    metrics_app.include_router(prometheus.router)
    return metrics_app
