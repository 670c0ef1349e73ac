"""Reading an admin upload: the multipart body, bounded while it arrives, then every file checked.

Nothing is written until every file of the request has passed: a request over `ADMIN_MAX_UPLOAD_BYTES`
(declared or counted), a file over `INGEST_MAX_FILE_BYTES` or a PDF over `INGEST_MAX_PDF_PAGES` (the limits
of every ingestion) is `413`; a file that is not markdown, text, HTML
or PDF by its content is `415`; each names the limit or the file. A PDF that pypdf cannot open, or a
document without text, is `rejected` in the answer (the other files go ahead).

The body is read here, after the admin dependency has run: FastAPI would parse a declared `UploadFile`
parameter before any dependency, so an unauthenticated client could make the server spool its upload.
"""

from __future__ import annotations

import asyncio
import re

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

from ..errors import InvalidUpload, UnsupportedType, UploadTooLarge
from ..knowledge.library import Upload
from ..knowledge.sniffing import UnsupportedContent, pdf_pages, sniff
from ..settings import Settings

MAX_FILES = 100
UPLOAD_PREFIX = "uploads/"
_MAX_ID_CHARS = 512
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]+")

# The multipart body, for the OpenAPI document (the route reads it itself: see the module docstring).
REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "id": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Optional: one document id per file, in order (default uploads/NAME).",
                    },
                },
            }
        }
    },
}


def file_name(raw: str | None) -> str:
    """The base name a client sent, without any path, control characters or surrounding blanks."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("", name).strip()[:200]
    return name or "upload"


def document_id(raw: str) -> str:
    """A document id given by the client: a relative path of non-empty segments, no `.`/`..`."""
    value = raw.strip()
    segments = value.split("/")
    if (
        not value
        or len(value) > _MAX_ID_CHARS
        or _UNSAFE_NAME.sub("", value.replace("/", "")) != value.replace("/", "")
        or any(s in {"", ".", ".."} for s in segments)
    ):
        raise InvalidUpload(f"{value[:80]!r} is not a document id (a relative path like uploads/visa.md).")
    return value


async def read_uploads(request: Request, settings: Settings) -> list[Upload]:
    """Every file of the request, checked; raises before anything is written (see the module docstring)."""
    limit = settings.admin_max_upload_bytes
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InvalidUpload()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)
        return message

    try:
        form = await Request(request.scope, receive).form(
            max_files=MAX_FILES, max_fields=MAX_FILES + 8, max_part_size=_MAX_ID_CHARS * 4
        )
    except HTTPException as exc:  # malformed multipart, too many parts: Starlette's 400
        raise InvalidUpload(f"The upload could not be read: {exc.detail}") from None
    try:
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        ids = [document_id(v) for v in form.getlist("id") if isinstance(v, str)]
        if not files:
            raise InvalidUpload()
        if ids and len(ids) != len(files):
            raise InvalidUpload("Send one `id` per `file`, in the same order, or none.")
        uploads = []
        for index, part in enumerate(files):
            name = file_name(part.filename)
            key = ids[index] if ids else UPLOAD_PREFIX + name
            uploads.append(Upload(key, name, await part.read(), kind=""))
    finally:
        await form.close()
    keys = [u.key for u in uploads]
    if len(set(keys)) != len(keys):
        raise InvalidUpload("Two files of this upload have the same document id.")
    # pypdf reads a PDF of up to INGEST_MAX_FILE_BYTES to count its pages: not on the event loop.
    await asyncio.to_thread(_check, uploads, settings)
    return uploads


def _check(uploads: list[Upload], settings: Settings) -> None:
    big = [f"{u.name} ({len(u.data)} bytes)" for u in uploads if len(u.data) > settings.ingest_max_file_bytes]
    if big:
        raise UploadTooLarge(
            f"A file may be at most {settings.ingest_max_file_bytes} bytes (INGEST_MAX_FILE_BYTES): "
            f"{', '.join(big)}. Nothing was saved."
        )
    unsupported, long_pdfs = [], []
    for upload in uploads:
        try:
            upload.kind = sniff(upload.data, upload.name)
        except UnsupportedContent as exc:
            unsupported.append(f"{upload.name} ({exc.detected or 'binary data'})")
            continue
        if upload.kind == "pdf":
            try:
                pages = pdf_pages(upload.data)
            except Exception:
                upload.rejected = "the PDF could not be read"
                continue
            if pages > settings.ingest_max_pdf_pages:
                long_pdfs.append(f"{upload.name} ({pages} pages)")
    if long_pdfs:
        raise UploadTooLarge(
            f"A PDF may have at most {settings.ingest_max_pdf_pages} pages (INGEST_MAX_PDF_PAGES): "
            f"{', '.join(long_pdfs)}. Nothing was saved."
        )
    if unsupported:
        raise UnsupportedType(
            "Only markdown, plain text, HTML and PDF files can be added (recognised by their content, not "
            f"their name): {', '.join(unsupported)}. Nothing was saved."
        )


def _too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"An upload may be at most {limit} bytes ({limit / 1_000_000:g} MB, ADMIN_MAX_UPLOAD_BYTES) in one "
        "request. Send fewer or smaller files at once. Nothing was saved."
    )
