"""Prometheus metrics: one registry per app, built in the lifespan and carried on `Services`.

A registry per app (not prometheus_client's process-wide default) lets tests run several apps in one
process. Names are part of the operations contract (docs/operations.md): never rename one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

from .domain import FinishedStream, stream_timings

_FIRST_CHUNK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
_DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RETRIEVAL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_KB_WRITE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """Every series the service exports, and the few events that update more than one of them."""

    def __init__(self) -> None:
        # `*_created` samples double the series count and no dashboard of ours reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        self.streams_active = Gauge("zantara_streams_active", "Answer producer tasks running.", registry=r)
        self.stream_readers = Gauge("zantara_stream_readers", "Open SSE responses.", registry=r)
        self.upstream_requests_active = Gauge(
            "zantara_upstream_requests_active", "Open HTTP requests to Claude.", registry=r
        )
        self.streams_total = Counter(
            "zantara_streams_total",
            "Streams finished, by outcome: done, degraded, cancelled, or the error code.",
            ["outcome"],
            registry=r,
        )
        self.stream_resumes_total = Counter(
            "zantara_stream_resumes_total", "Reconnects that resumed a stream with Last-Event-ID.", registry=r
        )
        self.time_to_first_chunk = Histogram(
            "zantara_time_to_first_chunk_seconds",
            "From the request arriving to the first text event of its answer.",
            buckets=_FIRST_CHUNK_BUCKETS,
            registry=r,
        )
        self.stream_duration = Histogram(
            "zantara_stream_duration_seconds",
            "From the request arriving to the terminal event of its answer.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.retrieval_seconds = Histogram(
            "zantara_retrieval_seconds",
            "Retrieval time per stage: embed (the query vector) and search (the Chroma query).",
            ["stage"],
            buckets=_RETRIEVAL_BUCKETS,
            registry=r,
        )
        self.chunks_sent_total = Counter(
            "zantara_chunks_sent_total", "Text events appended to answer streams.", registry=r
        )
        self.upstream_tokens_total = Counter(
            "zantara_upstream_tokens_total",
            "Tokens Claude reported, by kind: input, output, cache_read.",
            ["kind"],
            registry=r,
        )
        self.tokens_after_disconnect_total = Counter(
            "zantara_tokens_after_disconnect_total",
            "Text chunks generated while their stream had no reader (waiting for a resume).",
            registry=r,
        )
        self.upstream_breaker_state = Gauge(
            "zantara_upstream_breaker_state",
            "Each model's circuit breaker: 0 closed, 1 half-open (one probe request), 2 open (skipped).",
            ["model"],
            registry=r,
        )
        self.upstream_breaker_skips_total = Counter(
            "zantara_upstream_breaker_skips_total",
            "Requests to a model not sent because its circuit breaker was open.",
            ["model"],
            registry=r,
        )
        self.rate_limited_total = Counter(
            "zantara_rate_limited_total",
            "Requests refused by rate limiting, by reason.",
            ["reason"],
            registry=r,
        )

        self.kb_documents_total = Counter(
            "zantara_kb_documents_total",
            "Knowledge base changes by document: added, updated, unchanged, rejected, deleted.",
            ["action"],
            registry=r,
        )
        self.kb_chunks_embedded_total = Counter(
            "zantara_kb_chunks_embedded_total", "Chunks embedded by this process's writes.", registry=r
        )
        self.kb_write_seconds = Histogram(
            "zantara_kb_write_seconds",
            "One document's upload (parse, embed, write) or deletion through the admin API.",
            buckets=_KB_WRITE_BUCKETS,
            registry=r,
        )
        self.kb_refreshes_total = Counter(
            "zantara_kb_refreshes_total",
            "Knowledge base changes noticed, by origin: local (this process wrote) or remote (another did).",
            ["origin"],
            registry=r,
        )
        # Conversations (apps/zantara_rag/conversations): each turn is written after its stream has ended.
        self.turns_stored_total = Counter(
            "zantara_turns_stored_total", "Conversation turns written to the database.", registry=r
        )
        self.turns_lost_total = Counter(
            "zantara_turns_lost_total",
            "Conversation turns that could not be written (database failing, unreachable or not migrated).",
            registry=r,
        )
        self.turns_pending = Gauge(
            "zantara_turns_pending", "Finished turns waiting to be written to the database.", registry=r
        )
        self.turn_write_seconds = Histogram(
            "zantara_turn_write_seconds",
            "From the end of a stream to the commit of its turn.",
            buckets=_WRITE_BUCKETS,
            registry=r,
        )
        self.turns_purged_total = Counter(
            "zantara_turns_purged_total", "Turns deleted by CONVERSATION_RETENTION_DAYS.", registry=r
        )
        self.feedback_total = Counter(
            "zantara_feedback_total",
            "Ratings received on answers, by rating: up (1) or down (-1).",
            ["rating"],
            registry=r,
        )

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type, in the format the scraper asked for."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    def rate_limited(self, reason: str) -> None:
        self.rate_limited_total.labels(reason).inc()

    def retrieved(self, embed_ms: float, search_ms: float) -> None:
        self.retrieval_seconds.labels("embed").observe(embed_ms / 1000)
        self.retrieval_seconds.labels("search").observe(search_ms / 1000)

    def text_chunk(self, unread: bool) -> None:
        """One text event appended; `unread` when its stream has no reader (waiting for a resume)."""
        self.chunks_sent_total.inc()
        if unread:
            self.tokens_after_disconnect_total.inc()

    @asynccontextmanager
    async def upstream_request(self) -> AsyncIterator[None]:
        self.upstream_requests_active.inc()
        try:
            yield
        finally:
            self.upstream_requests_active.dec()

    def stream_finished(self, stream: FinishedStream) -> None:
        """Called once per stream, when its terminal event is appended."""
        self.streams_total.labels(stream.outcome or "unknown").inc()
        meta = stream.meta
        if meta is None or stream.finished_at is None:
            return  # a refusal before any answer: no latency to speak of
        first, duration = stream_timings(stream)
        self.stream_duration.observe(duration)
        if first is not None:
            self.time_to_first_chunk.observe(first)
        if meta.upstream_attempts:
            self.upstream_tokens_total.labels("input").inc(meta.input_tokens)
            self.upstream_tokens_total.labels("output").inc(meta.output_tokens)
            self.upstream_tokens_total.labels("cache_read").inc(meta.cache_read_tokens)
