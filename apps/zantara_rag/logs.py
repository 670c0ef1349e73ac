"""Structured logs: one JSON object per line, never a secret, an e-mail address or a stack trace."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import sys
import time
from typing import Any

from pydantic import SecretStr

from .domain import FinishedStream, milliseconds, stream_timings
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
            entry.update({k: scrub(v) if isinstance(v, str) else v for k, v in fields.items()})
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
    # The SDK's DEBUG lines carry request bodies (the question), SQLAlchemy's and the database drivers' INFO
    # and DEBUG lines statement parameters (questions, answers): WARNING even with LOG_LEVEL=debug.
    for name in (
        "httpx", "httpx2", "chromadb", "sentence_transformers", "urllib3", "anthropic",
        "sqlalchemy", "aiosqlite", "asyncpg",
    ):  # fmt: skip
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.Formatter.converter = time.gmtime


# Domain separation: the derived key is never the secret itself, nor what any other use of it computes.
DERIVED_KEY_LABEL = b"zantara-rag: the key of keyed hashes"


class KeyedHash:
    """Keyed hashes (HMAC-SHA256, 24 hex characters) of what must be correlated but never shown: a user's
    e-mail address, a stream id, who owns a stream. The key is `LOG_HASH_KEY`; unset, one derived from
    `AUTH_SECRET` (`from_settings`), or without either a random key per process (hashes then change at each
    restart)."""

    def __init__(self, key: SecretStr | None) -> None:
        self._key = key.get_secret_value().encode() if key is not None else secrets.token_bytes(32)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyedHash:
        """`LOG_HASH_KEY`; without it, a key derived from `AUTH_SECRET`, so that the owners of conversations
        and the users in logs keep their hashes across restarts and machines; without either, random."""
        if settings.log_hash_key is not None:
            return cls(settings.log_hash_key)
        if settings.auth_secret is not None:
            secret = settings.auth_secret.get_secret_value().encode()
            return cls(SecretStr(hmac.new(secret, DERIVED_KEY_LABEL, hashlib.sha256).hexdigest()))
        return cls(None)

    def __call__(self, email: str) -> str:
        """An e-mail address, case-insensitively (the `user` field of log lines)."""
        return self._hash(email.strip().lower())

    def of(self, kind: str, value: str) -> str:
        """Anything else, separated by `kind` so that equal values of two kinds never share a hash."""
        return self._hash(f"{kind}\x00{value}")

    def _hash(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:24]


stream_log = logging.getLogger("zantara_rag.streams")


def log_stream_end(stream: FinishedStream) -> None:
    """One line per finished stream: what an operator needs to follow an answer, nothing a user typed."""
    fields: dict[str, Any] = {"stream": stream.tag, **stream.log_fields, "outcome": stream.outcome}
    meta = stream.meta
    if meta is not None:
        fields.update(model=meta.model, degraded=meta.degraded)
    fields["text_chunks"] = stream.text_chunks
    first, duration = stream_timings(stream)
    fields["time_to_first_chunk_ms"] = milliseconds(first)
    fields["duration_ms"] = milliseconds(duration)
    if meta is not None and meta.upstream_attempts:
        fields.update(
            input_tokens=meta.input_tokens,
            output_tokens=meta.output_tokens,
            cache_read_tokens=meta.cache_read_tokens,
            upstream_attempts=meta.upstream_attempts,
        )
    fields["resumes"] = stream.resumes
    if stream.cancelled_by_disconnect:
        fields["reader_left"] = True
    stream_log.info("stream end", extra={"fields": fields})
