"""The domain types every wing shares: a question, a passage, an answer's bookkeeping, a chunk's text.

They live here, below every wing, so that retrieval, generation, streaming and http can all use them without
importing one another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .events import Source

SNIPPET_CHARS = 240
EXTRACTIVE = "extractive"


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier turn of the conversation."""

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """A validated question, with who asks and the conversation so far."""

    query: str
    user_email: str | None = None
    history: list[Turn] = field(default_factory=list)


# --- a chunk's stored text: a heading line (title and section), a blank line, then the body.


def chunk_text(title: str, section: str, body: str, also: str = "") -> str:
    """What gets embedded and stored: the title and section give a bare paragraph its context.

    `also` (the document's title in the other language) is a second heading line: the English embedding model
    then places an Indonesian document's chunks near English questions too (docs/retrieval.md).
    """
    head = f"{title} — {section}" if section else title
    if also:
        head = f"{head}\n{also}"
    return f"{head}\n\n{body}"


def chunk_body(text: str) -> str:
    """The body of a stored chunk, without its heading line."""
    return text.split("\n\n", 1)[1] if "\n\n" in text else text


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The chunk body on one line, cut at a word boundary to at most `limit` characters."""
    body = " ".join(chunk_body(text).split())
    if len(body) <= limit:
        return body
    cut = body.rfind(" ", 0, limit - 1)
    return body[: cut if cut > limit // 2 else limit - 1].rstrip(" ,;:") + "…"


@dataclass
class Passage:
    """One source document and its retrieved chunks, in rank order; `number` is its `[n]` in the answer."""

    number: int
    title: str
    url: str | None
    section: str | None
    doc: str
    similarity: float
    chunks: list[str] = field(default_factory=list)
    # The document's language code (`language` front-matter key), when known: the extractive answer prefers
    # sentences in the question's language. Not on the wire.
    language: str | None = None

    def source(self, cited: list[str] | None = None) -> Source:
        """This passage as the sources event lists it; `cited`: the spans of it the answer cited."""
        return Source(
            source=self.title,
            snippet=snippet(self.chunks[0]),
            similarity=round(self.similarity, 4),
            url=self.url or None,
            section=self.section or None,
            id=self.doc,
            cited=cited or None,
        )


@dataclass(frozen=True, slots=True)
class Citation:
    """A passage span that supports part of an answer: passage `number` (its `[n]`) and the text cited."""

    number: int
    cited_text: str


@dataclass(frozen=True, slots=True)
class Span:
    """In an answer's stream of text deltas: the text from here to the next `Span` rests on `citations`
    (none: uncited text). What Claude's cited content blocks, and the extractive answer's lines, become."""

    citations: tuple[Citation, ...] = ()


# What an answer streams: text deltas, and a `Span` wherever the citations behind the text change.
AnswerPiece = str | Span


@dataclass
class AnswerMeta:
    """Filled in while the answer streams; read when the done event is built, and by logs and metrics."""

    model: str = EXTRACTIVE
    degraded: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    upstream_attempts: int = 0
    # Milliseconds per stage (queue, prompt, upstream_connect, upstream_first_token), with TIMING_HEADERS.
    timing: dict[str, float] = field(default_factory=dict)
    # What the stream sent, for the conversation's record: the text of each text event, and the sources event.
    text: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Every token the answer cost, for the daily budgets."""
        return self.input_tokens + self.cache_read_tokens + self.output_tokens


class FinishedStream(Protocol):
    """What the end-of-stream hooks (the log line, the metrics) read of a stream that has just ended."""

    @property
    def tag(self) -> str: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def meta(self) -> AnswerMeta | None: ...
    @property
    def received(self) -> float: ...
    @property
    def first_text_at(self) -> float | None: ...
    @property
    def finished_at(self) -> float | None: ...
    @property
    def text_chunks(self) -> int: ...
    @property
    def resumes(self) -> int: ...
    @property
    def cancelled_by_disconnect(self) -> bool: ...
    @property
    def log_fields(self) -> dict[str, object]: ...


def stream_timings(stream: FinishedStream) -> tuple[float | None, float]:
    """Seconds from the request to the stream's first text (None without text) and to its end (now, if it
    has not ended): what the log line, the metrics and the stored turn report."""
    first = None if stream.first_text_at is None else stream.first_text_at - stream.received
    end = stream.finished_at if stream.finished_at is not None else time.monotonic()
    return first, end - stream.received


def milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
