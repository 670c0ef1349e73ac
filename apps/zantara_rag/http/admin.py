"""`/admin`: the knowledge base managed through the running service (docs/api.md#admin), and the
knowledge-gaps report that says what to write next.

Only with `AUTH_SECRET` set and a token carrying the admin scope (`AdminDep`); otherwise every path here is
404. An upload is read and checked whole before anything is written (`http.uploads`); the writing itself is
the `Library`'s. A client that accepts `text/event-stream` gets the batch's progress as events, one per
document, then the result. `GET /admin/gaps` is `zantara-rag report gaps --format json` over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.sse import format_sse_event

from ..conversations.gaps import Embed, parse_since
from ..errors import InvalidRequest, KnowledgeUnavailable, NotFound, ZantaraError
from ..events import error_body
from ..knowledge.library import Outcome, Upload
from ..retrieval.embedder import Embedder
from ..services import Services
from .auth import Principal
from .deps import AdminDep, ServicesDep
from .uploads import REQUEST_BODY, read_uploads

log = logging.getLogger(__name__)
router = APIRouter(tags=["admin"])

ADMIN_PAGE = Path(__file__).resolve().parent / "admin.html"
_STREAM_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
# Questions the gaps report embeds per call: the embedder is shared with the questions being answered.
_EMBED_SLICE = 32


@router.get("/admin", include_in_schema=False)
async def admin_page(services: ServicesDep) -> Response:
    """The admin page (sign in with an admin token in the page itself)."""
    if services.settings.auth_secret is None:
        raise NotFound()
    return FileResponse(
        ADMIN_PAGE, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"}
    )


@router.get("/admin/documents", summary="Every document in the knowledge base")
async def list_documents(admin: AdminDep, services: ServicesDep) -> dict[str, Any]:
    try:
        documents = await services.library.catalog()
    except Exception as exc:
        log.error("listing documents failed (%s)", type(exc).__name__)
        raise KnowledgeUnavailable("The knowledge base is unreachable right now. Please try again.") from None
    settings = services.settings
    limits = {
        "maxUploadBytes": settings.admin_max_upload_bytes,
        "maxFileBytes": settings.ingest_max_file_bytes,
        "maxPdfPages": settings.ingest_max_pdf_pages,
    }
    return {"documents": documents, "limits": limits}


@router.post(
    "/admin/documents",
    summary="Add or replace documents (multipart, field `file`, repeatable)",
    openapi_extra={"requestBody": REQUEST_BODY},
    responses={
        200: {"description": "Every accepted document is searchable on this machine."},
        400: {"description": "Not a multipart upload with at least one `file`."},
        401: {"description": "No valid token."},
        403: {"description": "The token has no admin scope."},
        404: {"description": "The admin API is off (no AUTH_SECRET)."},
        413: {
            "description": (
                "Over ADMIN_MAX_UPLOAD_BYTES, a file over INGEST_MAX_FILE_BYTES, or a PDF over "
                "INGEST_MAX_PDF_PAGES."
            )
        },
        415: {"description": "A file that is not markdown, text, HTML or PDF by its content."},
        503: {"description": "The store failed while writing."},
    },
)
async def upload_documents(request: Request, admin: AdminDep, services: ServicesDep) -> Response:
    uploads = await read_uploads(request, services.settings)
    actor = _actor(services, admin)
    if "text/event-stream" in request.headers.get("accept", "").lower():
        return StreamingResponse(
            _progress_stream(services, uploads, actor),
            media_type="text/event-stream",
            headers=_STREAM_HEADERS,
        )
    outcomes = await _upload(services, uploads, actor, None)
    return JSONResponse({"documents": [o.public() for o in outcomes]})


@router.delete(
    "/admin/documents/{document_id:path}",
    status_code=204,
    summary="Remove a document: the next question no longer retrieves it",
    responses={404: {"description": "No document with that id."}},
)
async def delete_document(document_id: str, admin: AdminDep, services: ServicesDep) -> Response:
    try:
        removed = await services.library.delete(document_id, _actor(services, admin))
    except ZantaraError:
        raise
    except Exception as exc:
        log.error("deleting a document failed (%s)", type(exc).__name__)
        raise KnowledgeUnavailable() from None
    if not removed:
        raise NotFound("There is no document with this id.")
    return Response(status_code=204)


@router.get(
    "/admin/gaps",
    summary="The knowledge-gaps report: questions answered with no source, degraded, or rated -1",
    responses={
        400: {"description": "`since` is not a duration like 24h, 7d or 4w."},
        401: {"description": "No valid token."},
        403: {"description": "The token has no admin scope."},
        404: {"description": "The admin API is off (no AUTH_SECRET), or conversations are not stored."},
        503: {"description": "The conversation database cannot be read."},
    },
)
async def knowledge_gaps(
    admin: AdminDep,
    services: ServicesDep,
    since: Annotated[
        str, Query(max_length=16, description="How far back: `24h`, `7d`, `4w` (as `report gaps --since`).")
    ] = "7d",
) -> dict[str, Any]:
    try:
        window = parse_since(since)
    except ValueError:
        raise InvalidRequest("`since` must be a duration like 24h, 7d or 4w.") from None
    report = await services.conversations.gaps(window, _in_slices(services.embedder))
    if report is None:
        raise NotFound("Conversations are not stored here (STORE_CONVERSATIONS=false): there is no report.")
    return report.as_json()


def _in_slices(embedder: Embedder) -> Embed:
    """The report's questions embedded a slice at a time on one core (as `report gaps` embeds them, without
    the query marker): a question being answered meanwhile waits for one slice, not the whole report."""

    def embed(texts: list[str]) -> list[list[float]]:
        return [
            vector
            for start in range(0, len(texts), _EMBED_SLICE)
            for vector in embedder.embed(texts[start : start + _EMBED_SLICE], split=False)
        ]

    return embed


def _actor(services: Services, admin: Principal) -> str:
    """Who, for the log: the keyed hash of the token's subject, never the subject itself."""
    return services.hashes(admin.subject)


async def _upload(
    services: Services, uploads: list[Upload], actor: str, progress: Callable[[int, Outcome], None] | None
) -> list[Outcome]:
    try:
        outcomes: list[Outcome] = await services.library.upload(uploads, actor, progress)
    except ZantaraError:
        raise
    except Exception as exc:
        log.error("writing documents failed (%s)", type(exc).__name__)
        raise KnowledgeUnavailable() from None
    return outcomes


async def _progress_stream(services: Services, uploads: list[Upload], actor: str) -> AsyncIterator[bytes]:
    """`progress` events (done of total, and the document just finished), then `result` or `error`."""
    total = len(uploads)
    queue: asyncio.Queue[tuple[int, Outcome]] = asyncio.Queue()
    yield _event("progress", {"done": 0, "total": total})
    work = asyncio.create_task(_upload(services, uploads, actor, lambda n, o: queue.put_nowait((n, o))))
    # A client that leaves mid-batch ends this generator; the batch goes on and its outcome is logged.
    work.add_done_callback(lambda task: task.cancelled() or task.exception())
    while not work.done() or not queue.empty():
        getter = asyncio.create_task(queue.get())
        await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            done, outcome = getter.result()
            yield _event("progress", {"done": done, "total": total, "document": outcome.public()})
        else:
            getter.cancel()
    try:
        outcomes = work.result()
    except ZantaraError as exc:
        yield _event("error", error_body(exc.code, exc.message))
        return
    yield _event("result", {"documents": [o.public() for o in outcomes]})


def _event(name: str, data: dict[str, Any]) -> bytes:
    return format_sse_event(event=name, data_str=json.dumps(data, ensure_ascii=False, separators=(",", ":")))
