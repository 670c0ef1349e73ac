"""The long-lived parts of the service, built once in the lifespan and read by dependencies."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from .admission import Admission
from .answer import Answerer, make_client
from .embedder import Embedder
from .ingest import ingest
from .logs import EmailHasher, log_stream_end
from .metrics import Metrics
from .retrieval import Retriever
from .settings import Settings
from .store import VectorStore, connect
from .streams import Stream, StreamHub, new_machine_id
from .team import TeamDirectory

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    embedder: Embedder
    store: VectorStore
    retriever: Retriever
    answerer: Answerer
    hub: StreamHub
    team: TeamDirectory
    client: Any | None
    admission: Admission
    ingesting: bool = False
    ingest_error: str | None = None
    drain_event: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)
    metrics: Metrics = field(default_factory=Metrics)
    email_hash: EmailHasher = field(default_factory=lambda: EmailHasher(None))

    @property
    def draining(self) -> bool:
        return self.drain_event.is_set()

    async def aclose(self) -> None:
        await self.hub.close(wait_seconds=2.0)
        if self.client is not None:
            await self.client.close()
        self.embedder.close()


async def build_services(settings: Settings) -> Services:
    """Load the model and open the store (both blocking: done in threads, before the app accepts traffic)."""
    # The store first: a collection built by another model is refused before seconds go into loading one.
    client = await asyncio.to_thread(connect, settings)
    store = await asyncio.to_thread(VectorStore, client, settings.chroma_collection, settings.embedding_model)
    embedder = await asyncio.to_thread(
        lambda: Embedder(
            settings.embedding_model,
            settings.embedding_device,
            backend=settings.embedding_backend,
            cache_dir=settings.embedding_cache_dir,
        )
    )
    answer_client = make_client(settings)
    if answer_client is None:
        log.warning(
            "ANTHROPIC_API_KEY is not set: answers are extractive summaries of the retrieved passages "
            "(labelled as such), not written by Claude"
        )
    metrics = Metrics()

    def finished(stream: Stream) -> None:
        metrics.stream_finished(stream)
        log_stream_end(stream)

    hub = StreamHub(
        new_machine_id(settings.fly_machine_id),
        on_finish=finished,
        grace_seconds=settings.resume_grace_seconds,
        ttl_seconds=settings.resume_ttl_seconds,
        max_streams=settings.resume_max_streams,
        max_events=settings.resume_max_events,
        max_bytes=settings.resume_max_bytes,
        max_lag=settings.slow_client_max_lag_events,
    )
    return Services(
        settings=settings,
        embedder=embedder,
        store=store,
        retriever=Retriever(
            embedder, store, settings.retrieval_top_k, settings.sources_top_k, settings.min_similarity
        ),
        answerer=Answerer(settings, answer_client, metrics),
        hub=hub,
        team=TeamDirectory.load(settings.team_directory),
        client=answer_client,
        metrics=metrics,
        email_hash=EmailHasher(settings.log_hash_key),
        admission=Admission.from_settings(settings, on_refusal=metrics.rate_limited),
    )


async def ingest_sample_if_empty(services: Services) -> None:
    """First start: fill an empty collection from the sample knowledge base, in the background."""
    settings = services.settings
    if not settings.auto_ingest or await asyncio.to_thread(services.store.count) > 0:
        return
    services.ingesting = True
    log.info("the collection is empty: ingesting the sample knowledge base from %s", settings.knowledge_path)
    try:
        report = await asyncio.to_thread(
            ingest,
            [settings.knowledge_path],
            services.store,
            services.embedder,
            max_chars=settings.chunk_max_chars,
            overlap=settings.chunk_overlap_chars,
            progress=False,
        )
        log.info("ingested: %s", report.summary())
    except Exception as exc:
        services.ingest_error = type(exc).__name__
        log.error("first-start ingestion failed (%s)", type(exc).__name__)
    finally:
        services.ingesting = False


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
