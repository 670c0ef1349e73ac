"""One answer's life as events: text chunks, then sources, then done — or a terminal error.

This runs as the stream's producer task, independent of any HTTP response, so it can outlive a
disconnected reader (resume) and be cancelled cleanly (the upstream request closes with it).
"""

from __future__ import annotations

import asyncio
import logging
import time

from .answer import Answerer, AnswerMeta
from .chat import ChatRequest
from .errors import ShuttingDown, ZantaraError
from .events import DoneEvent, ErrorEvent, SourcesEvent, TextEvent, Usage, clean_text, now
from .retrieval import Passage
from .streams import Stream
from .team import Member

log = logging.getLogger(__name__)


def error_json(error: ZantaraError, sequence_number: int, retry_after: int | None = None) -> str:
    return ErrorEvent(
        error=error.message,
        code=error.code,
        sequence_number=sequence_number,
        timestamp=now(),
        retry_after=retry_after,
    ).to_json()


async def produce(
    stream: Stream,
    answerer: Answerer,
    request: ChatRequest,
    passages: list[Passage],
    member: Member | None,
    *,
    draining: asyncio.Event | None = None,
) -> None:
    started = time.perf_counter()
    meta = AnswerMeta()
    count = 0
    try:
        async for delta in answerer.answer(request, passages, member, meta):
            if not delta:
                continue
            count += 1
            stream.append(TextEvent(text=clean_text(delta), sequence_number=count, timestamp=now()).to_json())
        stream.append(SourcesEvent(sources=[p.source() for p in passages]).to_json())
        done = DoneEvent(
            sequence_number=count,
            timestamp=now(),
            stream_duration=round(time.perf_counter() - started, 3),
            model=meta.model,
            degraded=meta.degraded,
            usage=Usage(
                input_tokens=meta.input_tokens,
                output_tokens=meta.output_tokens,
                cache_read_tokens=meta.cache_read_tokens,
            )
            if meta.upstream_attempts
            else None,
        )
        stream.append(done.to_json(), terminal=True, outcome="degraded" if meta.degraded else "done")
    except ZantaraError as exc:
        stream.append(error_json(exc, count), terminal=True, outcome=exc.code)
    except asyncio.CancelledError:
        # Cancelled by the drain at shutdown (readers are told) or because every reader left (nobody to tell).
        if draining is not None and draining.is_set():
            stream.append(error_json(ShuttingDown(), count), terminal=True, outcome="shutting_down")
        else:
            stream.append(error_json(ZantaraError(), count), terminal=True, outcome="cancelled")
        raise
    except Exception as exc:
        log.error("answer %s failed unexpectedly (%s)", stream.id, type(exc).__name__)
        stream.append(error_json(ZantaraError(), count), terminal=True, outcome="internal_error")
    finally:
        stream.meta = meta
