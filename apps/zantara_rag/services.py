"""The long-lived parts of the service, built once in the lifespan: the embedder, the store, the retriever,
the answerer, the stream hub, the team directory, the metrics, the conversations. Routes read them through
`http.deps`."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

from .conversations.keeper import ConversationKeeper
from .errors import ZantaraError
from .generation.answerer import Answerer
from .generation.claude import Claude, make_client
from .generation.team import TeamDirectory
from .knowledge.ingest import IngestionStopped, ingest
from .logs import KeyedHash, log_stream_end
from .metrics import Metrics
from .retrieval.embedder import Embedder
from .retrieval.search import Retriever
from .retrieval.store import VectorStore, connect
from .settings import Settings
from .streaming.hub import StreamHub, new_machine_id
from .streaming.stream import Stream

log = logging.getLogger(__name__)

# Longest the shutdown waits for the producers it cancels (after the drain window, and again at the end).
CLOSE_WAIT_SECONDS = 2.0
# Recorded on the collection while the first-start ingestion runs: a start that finds it carries on.
SAMPLE_INGESTION_UNFINISHED = "sample_ingestion_unfinished"


@dataclass
class Services:
    settings: Settings
    embedder: Embedder
    store: VectorStore
    retriever: Retriever
    answerer: Answerer
    hub: StreamHub
    team: TeamDirectory
    metrics: Metrics
    hashes: KeyedHash  # e-mail addresses, stream ids and owners, as logs and the hub see them
    conversations: ConversationKeeper
    ingesting: bool = False
    ingest_error: str | None = None
    drain_event: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)
    # Set at shutdown: the first-start ingestion (a thread, which cancelling its task cannot stop) stops
    # before its next file, so nothing writes to the store once it is closed.
    stop_ingestion: threading.Event = field(default_factory=threading.Event)

    @property
    def draining(self) -> bool:
        return self.drain_event.is_set()

    async def aclose(self) -> None:
        await self.hub.close(wait_seconds=CLOSE_WAIT_SECONDS)
        await self.conversations.aclose()  # after the hub: turns ended by the shutdown are written too
        await self.answerer.aclose()
        self.embedder.close()


async def build_services(settings: Settings) -> Services:
    """Load the model and open the store (both blocking: done in threads, before the app accepts traffic);
    migrate the conversation database."""
    if settings.store_conversations and settings.auth_secret is not None and settings.log_hash_key is None:
        # A conversation belongs to the keyed hash of the token's subject: a key that changes at each restart
        # would hand every user a fresh, empty list.
        raise ZantaraError(
            "LOG_HASH_KEY must be set when AUTH_SECRET is set and conversations are stored (the owner of a "
            "conversation is a keyed hash of the token's subject): openssl rand -hex 32"
        )
    # The store first: a collection built by another model is refused before seconds go into loading one.
    client = await asyncio.to_thread(connect, settings)
    store = await asyncio.to_thread(VectorStore, client, settings.chroma_collection, settings.embedding_model)
    embedder = await asyncio.to_thread(Embedder.from_settings, settings)
    metrics = Metrics()
    sdk_client = make_client(settings)
    if sdk_client is None:
        log.warning(
            "ANTHROPIC_API_KEY is not set: answers are extractive summaries of the retrieved passages "
            "(labelled as such), not written by Claude"
        )

    hashes = KeyedHash(settings.log_hash_key)
    conversations = ConversationKeeper.from_settings(settings, metrics, hashes)
    await conversations.start()

    def finished(stream: Stream) -> None:
        metrics.stream_finished(stream)
        log_stream_end(stream)
        conversations.finished(stream)  # queues the turn; written after the terminal event is sent

    hub = StreamHub(
        new_machine_id(settings.fly_machine_id),
        tag=lambda stream_id: hashes.of("stream", stream_id),
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
        retriever=Retriever.from_settings(embedder, store, settings),
        answerer=Answerer(settings, None if sdk_client is None else Claude(settings, sdk_client, metrics)),
        hub=hub,
        team=TeamDirectory.load(settings.team_directory),
        metrics=metrics,
        hashes=hashes,
        conversations=conversations,
    )


async def ingest_sample_if_empty(services: Services) -> None:
    """First start: fill an empty collection from the sample knowledge base, in the background.

    A start that finds an earlier first-start ingestion unfinished (stopped by a shutdown) carries it on.
    """
    settings = services.settings
    store = services.store
    if not settings.auto_ingest:
        return
    unfinished = await asyncio.to_thread(store.flag, SAMPLE_INGESTION_UNFINISHED)
    if not unfinished and await asyncio.to_thread(store.count) > 0:
        return
    services.ingesting = True
    log.info(
        "%s: ingesting the sample knowledge base from %s",
        "carrying on an unfinished first-start ingestion" if unfinished else "the collection is empty",
        settings.knowledge_path,
    )
    try:
        await asyncio.to_thread(store.set_flag, SAMPLE_INGESTION_UNFINISHED, True)
        report = await asyncio.to_thread(
            ingest,
            [settings.knowledge_path],
            services.store,
            services.embedder,
            root=settings.knowledge_path,
            max_chars=settings.chunk_max_chars,
            overlap=settings.chunk_overlap_chars,
            max_file_bytes=settings.ingest_max_file_bytes,
            max_pdf_pages=settings.ingest_max_pdf_pages,
            progress=False,
            stop=services.stop_ingestion,
        )
        await asyncio.to_thread(store.set_flag, SAMPLE_INGESTION_UNFINISHED, False)
        log.info("ingested: %s", report.summary())
    except IngestionStopped:
        log.info("first-start ingestion stopped by the shutdown; the next start carries on")
    except Exception as exc:
        services.ingest_error = type(exc).__name__
        log.error("first-start ingestion failed (%s)", type(exc).__name__)
    finally:
        services.ingesting = False
