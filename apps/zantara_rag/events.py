"""The wire contract: every event the chat stream can carry, as typed models.

This module is the single definition of what clients receive. Each event is one line of compact UTF-8
JSON in a default (`message`) SSE event; keys appear in the order the fields are declared here, and
existing clients depend on that byte for byte. Add optional keys only; never rename or reorder.
"""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.json_schema import SkipJsonSchema

from .errors import ZantaraError


def now() -> float:
    """Unix seconds with millisecond precision, as the production client expects."""
    return round(time.time(), 3)


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Replace each lone surrogate (which cannot be encoded as UTF-8) with one U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # In a Python str a valid pair is already one code point, so any surrogate left is lone.
        return _SURROGATE.sub("\ufffd", text)
    return text


_HTTP_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)
MAX_URL_CHARS = 2048


def http_url(value: object) -> str | None:
    """`value` when it is an absolute http(s) URL (a link a page may render as is), else None.

    Anything else (`javascript:`, `data:`, a relative path, a URL with spaces or control characters that a
    browser would strip into another scheme) is dropped, never repaired.
    """
    if not isinstance(value, str) or not 0 < len(value) <= MAX_URL_CHARS:
        return None
    if any(ch.isspace() or not ch.isprintable() for ch in value):  # browsers strip these silently
        return None
    try:
        _HTTP_URL.validate_python(value)
    except ValidationError:
        return None
    return value


class _Event(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    def to_json(self) -> str:
        """Compact JSON, UTF-8 (no \\uXXXX escaping of non-ASCII), optional keys omitted when unset."""
        return self.model_dump_json(by_alias=True, exclude_none=True)


class Cite(_Event):
    """A passage span that supports the text: `source` is its `[n]` (1-based, into the sources list)."""

    source: int = Field(ge=1)
    cited_text: str = Field(alias="citedText")


class TextEvent(_Event):
    """One piece of the answer, in order.

    `citations`, when present, starts a new span of the answer: this text and that of the following text
    events, up to the next one that carries `citations`, rests on these passage spans (`[]`: on none).
    Text before the first `citations` is uncited. Clients that ignore the key see the same answer.
    """

    text: str
    sequence_number: int = Field(alias="sequenceNumber", ge=1)
    timestamp: float
    citations: list[Cite] | None = None


class Source(_Event):
    """A document the answer was grounded on. `[n]` in the text refers to the n-th source."""

    source: str
    snippet: str = Field(max_length=240)
    similarity: float = Field(ge=0.0, le=1.0)
    url: str | None = None
    section: str | None = None
    id: str | None = None
    # The exact spans of this source the answer cited (Claude's `cited_text`), in the order first cited.
    cited: list[str] | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _http_only(cls, value: object) -> str | None:
        return http_url(value)


class SourcesEvent(_Event):
    """Exactly one, after the last text event and before done."""

    sources: list[Source]


class Usage(_Event):
    input_tokens: int = Field(alias="inputTokens")
    output_tokens: int = Field(alias="outputTokens")
    cache_read_tokens: int = Field(0, alias="cacheReadTokens")


class DoneEvent(_Event):
    """The last event of a successful stream. `sequenceNumber` is the number of text events sent."""

    done: bool = True
    sequence_number: int = Field(alias="sequenceNumber", ge=0)
    timestamp: float
    stream_duration: float = Field(alias="streamDuration", ge=0)
    model: str | None = None
    degraded: bool | None = None
    usage: Usage | None = None
    # Only with TIMING_HEADERS=true (benchmarks): milliseconds spent in each stage of the producer. A
    # benchmark aid, not part of the documented contract: left out of the schema.
    timing: SkipJsonSchema[dict[str, float] | None] = None
    # The conversation this answer belongs to: send it back as `conversation_id` to continue it.
    conversation_id: str | None = Field(None, alias="conversationId")


class ErrorEvent(_Event):
    """Terminal. Clients read `done` before `error`, so `error` must read as the end of an answer."""

    error: str
    code: str
    done: bool = True
    sequence_number: int = Field(alias="sequenceNumber", ge=0)
    timestamp: float
    retry_after: int | None = Field(None, alias="retryAfter")

    @classmethod
    def of(cls, error: ZantaraError, sequence_number: int, *, retry_after: int | None = None) -> ErrorEvent:
        """The terminal event for `error`, after `sequence_number` text events, stamped now."""
        return cls(
            error=error.message,
            code=error.code,
            sequence_number=sequence_number,
            timestamp=now(),
            retry_after=retry_after,
        )


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of a non-streaming error response: same message and code as the in-band event."""
    return {"error": message, "code": code, **extra}
