"""One answer's life as events: text chunks, then sources, then done — or a terminal error.

This runs as the stream's producer task, independent of any HTTP response, so it can outlive a
disconnected reader (resume) and be cancelled cleanly (the upstream request closes with it).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..domain import AnswerMeta, ChatRequest, Citation, Passage
from ..errors import ShuttingDown, StreamExpired, ZantaraError
from ..events import Cite, DoneEvent, ErrorEvent, SourcesEvent, TextEvent, Usage, clean_text, now
from ..generation.answerer import Answerer
from ..generation.team import Member
from ..metrics import Metrics
from .stream import Stream

log = logging.getLogger(__name__)


def _error(error: ZantaraError, count: int) -> str:
    return ErrorEvent.of(error, count).to_json()


def _cites(citations: tuple[Citation, ...], cited: dict[int, list[str]]) -> list[Cite]:
    """The wire form of a span's citations, noting each cited text under its passage for the sources event."""
    cites = [Cite(source=c.number, cited_text=clean_text(c.cited_text)) for c in citations]
    for cite in cites:
        spans = cited.setdefault(cite.source, [])
        if cite.cited_text not in spans:
            spans.append(cite.cited_text)
    return cites


async def produce(
    stream: Stream,
    answerer: Answerer,
    request: ChatRequest,
    passages: list[Passage],
    member: Member | None,
    *,
    metrics: Metrics | None = None,
    conversation_id: str | None = None,
) -> None:
    started = time.perf_counter()
    meta = AnswerMeta()
    meta.timing["queue"] = (time.monotonic() - stream.created) * 1000
    stream.meta = meta  # read by the end-of-stream hook, which runs inside the terminal append
    count = 0
    span: tuple[Citation, ...] | None = None  # citations that start a new span at the next text event
    cited: dict[int, list[str]] = {}  # per passage number, the spans cited, in order
    if metrics is not None:
        metrics.streams_active.inc()
    try:
        async for delta in answerer.answer(request, passages, member, meta):
            if not isinstance(delta, str):
                span = delta.citations
                continue
            if not delta:
                continue
            count += 1
            citations = None if span is None else _cites(span, cited)
            span = None
            text = clean_text(delta)
            event = TextEvent(text=text, sequence_number=count, timestamp=now(), citations=citations)
            stream.append(event.to_json())
            meta.text.append(text)
            stream.text_chunks = count
            if count == 1:
                stream.first_text_at = time.monotonic()
            if metrics is not None:
                metrics.text_chunk(unread=stream.awaiting_resume)
        meta.sources = [p.source(cited.get(p.number)) for p in passages]
        stream.append(SourcesEvent(sources=meta.sources).to_json())
        done = DoneEvent(
            sequence_number=count,
            timestamp=now(),
            stream_duration=round(time.perf_counter() - started, 3),
            model=meta.model,
            degraded=meta.degraded,
            conversation_id=conversation_id,
            usage=Usage(
                input_tokens=meta.input_tokens,
                output_tokens=meta.output_tokens,
                cache_read_tokens=meta.cache_read_tokens,
            )
            if meta.upstream_attempts
            else None,
            timing={k: round(v, 3) for k, v in meta.timing.items()}
            if answerer.settings.timing_headers
            else None,
        )
        stream.append(done.to_json(), terminal=True, outcome="degraded" if meta.degraded else "done")
    except ZantaraError as exc:
        stream.append(_error(exc, count), terminal=True, outcome=exc.code)
    except asyncio.CancelledError:
        # Every reader left and none came back within the grace window: a late resume replays what was
        # generated, then learns the rest is gone. Otherwise it is the shutdown (readers are told).
        if stream.cancelled_by_disconnect:
            stream.append(_error(StreamExpired(), count), terminal=True, outcome="cancelled")
        else:
            stream.append(_error(ShuttingDown(), count), terminal=True, outcome="shutting_down")
        raise
    except Exception as exc:
        log.error("answer %s failed unexpectedly (%s)", stream.tag, type(exc).__name__)
        stream.append(_error(ZantaraError(), count), terminal=True, outcome="internal_error")
    finally:
        if metrics is not None:
            metrics.streams_active.dec()
