"""Structured logs: one JSON object per line, never a secret, an e-mail address or a stack trace."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from .settings import Settings

_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_TRACEBACK = "Traceback (most recent call last):"


def scrub(message: str) -> str:
    """Withhold tracebacks (frameworks put them in messages, e.g. a failed lifespan) and e-mail addresses."""
    head, sep, tail = message.partition(_TRACEBACK)
    if sep:
        last = tail.strip().splitlines()[-1] if tail.strip() else ""
        exc_type = last.split(":", 1)[0].rsplit(".", 1)[-1].strip()
        message = f"{head.rstrip()} [traceback withheld: {exc_type or 'exception'}]".strip()
    return _EMAIL.sub("<email>", message)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The type names the failure; the text and traceback may carry user data or secrets.
            entry["exc_type"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Chatty third parties: their INFO lines are not ours to ship.
    for name in ("httpx", "httpx2", "chromadb", "sentence_transformers", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.Formatter.converter = time.gmtime
