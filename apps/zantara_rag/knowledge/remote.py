"""`zantara-rag ingest --server URL`: the same ingestion, sent through a running service's admin API.

Each file goes in its own request (`POST /admin/documents`, with the document id the local ingestion would
give it), so a progress bar moves per file and no request nears the upload limit. The service writes; this
process never opens the store. The summary line is the local one, added up from the per-document counts
the service returns. `--prune` lists the service's documents and deletes those under the given folders
whose file is gone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from ..settings import INGEST_MAX_FILE_BYTES
from .files import SkippedFile, discover, read_regular
from .ingest import IngestReport, doc_key


class RemoteRefused(Exception):
    """The service refused the whole run (no admin API, bad token, unreachable): nothing more to try."""


def ingest_remote(
    paths: list[Path],
    url: str,
    token: str,
    *,
    root: Path,
    prune: bool = False,
    progress: bool | None = None,
    timeout: float = 300.0,
    max_file_bytes: int = INGEST_MAX_FILE_BYTES,
) -> IngestReport:
    started = time.perf_counter()
    report = IngestReport()
    found = discover(paths)  # regular files only, never through a link (knowledge/files.py)
    files = found.files
    report.skipped.extend(found.skipped)
    seen: set[str] = set()
    iterator: Any = files
    show = progress if progress is not None else (sys.stderr.isatty() and len(files) > 1)
    if show:
        from tqdm import tqdm

        iterator = tqdm(files, unit="file", desc="uploading", file=sys.stderr)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout) as client:
        for file in iterator:
            key = doc_key(file, root)
            try:
                data = read_regular(file, max_file_bytes)
            except SkippedFile as exc:
                report.skipped.append(f"{file.name} ({exc.reason})")
                continue
            seen.add(key)
            report.files += 1
            reply = _send(
                client, "POST", "/admin/documents", files=[("file", (file.name, data))], data={"id": key}
            )
            if reply.status_code in (413, 415):
                report.failed.append(f"{file.name} ({_message(reply)})")
                continue
            _refuse_unless_ok(reply)
            for document in reply.json()["documents"]:
                if document["status"] == "rejected":
                    report.failed.append(f"{file.name} ({document.get('reason', 'rejected')})")
                for count in ("added", "updated", "removed", "unchanged"):
                    setattr(report, count, getattr(report, count) + int(document.get(count, 0)))
        if prune:
            folders = [f"{doc_key(p, root)}/" for p in paths if p.is_dir()]
            listed = _send(client, "GET", "/admin/documents")
            _refuse_unless_ok(listed)
            for document in listed.json()["documents"]:
                gone = document["id"]
                if gone not in seen and any(gone.startswith(folder) for folder in folders):
                    # An id is a path: segments quoted, slashes kept (the route takes `{doc_id:path}`).
                    deleted = _send(client, "DELETE", f"/admin/documents/{quote(gone, safe='/')}")
                    if deleted.status_code != 404:
                        _refuse_unless_ok(deleted)
                        report.removed += int(document.get("chunks", 0))
    report.seconds = time.perf_counter() - started
    return report


def _send(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise RemoteRefused(f"cannot reach {client.base_url} ({type(exc).__name__})") from None


def _refuse_unless_ok(reply: httpx.Response) -> None:
    if reply.status_code < 300:
        return
    hint = {
        401: " (the token is missing, invalid or expired)",
        403: " (mint a token with `zantara-rag token --sub EMAIL --admin`)",
        404: " (the service has no admin API: it needs AUTH_SECRET)",
    }.get(reply.status_code, "")
    raise RemoteRefused(f"the service answered {reply.status_code}: {_message(reply)}{hint}")


def _message(reply: httpx.Response) -> str:
    try:
        return str(reply.json().get("error") or reply.text[:200])
    except ValueError:
        return reply.text[:200]
