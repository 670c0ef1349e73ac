"""The long-lived parts of the service, built once in the lifespan: the embedder, the store, the lexical
mirror, the glossary, the retriever, the answerer, the stream hub, the team directory, the metrics, the
conversations, the knowledge base's writer (`Library`) and its change signal. Routes read them through
`http.deps`.

In-process copies of the knowledge base (the lexical mirror) refresh through `Services.changes` (see
`retrieval.changes`): after every write of this process, after the first-start ingestion, and within
`KNOWLEDGE_POLL_SECONDS` of another process's write in server mode."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from .conversations.keeper import FLUSH_SECONDS as CONVERSATIONS_FLUSH_SECONDS
from .conversations.keeper import ConversationKeeper
from .errors import IndexOutdated, InvalidGlossary
from .generation.answerer import Answerer
from .generation.claude import Claude, make_client
from .generation.team import TeamDirectory
from .knowledge.enrichment import Enricher
from .knowledge.ingest import IngestionStopped, doc_key
from .knowledge.library import Library
from .language import load_language_model
from .logs import KeyedHash, log_stream_end
from .metrics import Metrics
from .retrieval.changes import KnowledgeChanges
from .retrieval.embedder import Embedder
from .retrieval.glossary import Glossary, GlossaryError
from .retrieval.mirror import LexicalMirror
from .retrieval.search import Retriever
from .retrieval.store import INDEX_FORMAT, VectorStore
from .retrieval.writer_lock import WriterLock
from .settings import Settings, removed_settings
from .streaming.hub import StreamHub, new_machine_id
from .streaming.stream import Stream

log = logging.getLogger(__name__)

# Longest the shutdown waits for the producers it cancels (after the drain window, and again at the end).
CLOSE_WAIT_SECONDS = 2.0
# Longest `Services.aclose` takes: the hub's producers, then the conversations' last turns and connections.
SERVICES_CLOSE_SECONDS = CLOSE_WAIT_SECONDS + 2 * CONVERSATIONS_FLUSH_SECONDS
# Recorded on the collection while the first-start ingestion runs: a start that finds it carries on.
SAMPLE_INGESTION_UNFINISHED = "sample_ingestion_unfinished"


@dataclass
class Services:
    settings: Settings
    embedder: Embedder
    store: VectorStore
    mirror: LexicalMirror
    retriever: Retriever
    answerer: Answerer
    hub: StreamHub
    team: TeamDirectory
    metrics: Metrics
    hashes: KeyedHash  # e-mail addresses, stream ids and owners, as logs and the hub see them
    conversations: ConversationKeeper
    changes: KnowledgeChanges
    library: Library
    writer_lock: WriterLock | None = None
    ingesting: bool = False
    ingest_error: str | None = None
    # The collection is of an earlier index format and holds only the sample knowledge base: re-ingested
    # (upgraded) in the background at start, like a first start (`prepare_knowledge`).
    upgrade: bool = False
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
        if self.writer_lock is not None:
            self.writer_lock.release()


async def build_services(settings: Settings) -> Services:
    """Load the model and open the store (both blocking: done in threads, before the app accepts traffic);
    migrate the conversation database."""
    for line in removed_settings(os.environ):
        log.warning(line)
    # Embedded: this process becomes the store's only writer, or refuses to start (retrieval.writer_lock).
    lock = (
        WriterLock(settings.chroma_path).acquire("zantara-rag serve") if settings.chroma_url is None else None
    )
    try:
        # The store first: a collection built by another model is refused before seconds go into loading one.
        store = await asyncio.to_thread(VectorStore.open, settings)
        upgrade = await asyncio.to_thread(check_index_format, store, settings)
        try:
            glossary = Glossary.load(settings.glossary_path)
        except (GlossaryError, OSError) as exc:
            raise InvalidGlossary(str(exc)) from None
        embedder = await asyncio.to_thread(Embedder.from_settings, settings)
        mirror = LexicalMirror(store)
        await asyncio.to_thread(mirror.refresh)
        await asyncio.to_thread(load_language_model)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    metrics = Metrics()
    changes = KnowledgeChanges(
        store,
        poll_seconds=settings.knowledge_poll_seconds,
        on_refresh=lambda origin: metrics.kb_refreshes_total.labels(origin).inc(),
    )

    # The lexical index is this process's copy of the knowledge base: rebuilt on every change.
    async def refresh_mirror() -> None:
        await asyncio.to_thread(mirror.refresh)

    changes.subscribe(refresh_mirror)
    sdk_client = make_client(settings)
    if sdk_client is None:
        log.warning(
            "ANTHROPIC_API_KEY is not set: answers are extractive summaries of the retrieved passages "
            "(labelled as such), not written by Claude"
        )

    hashes = KeyedHash.from_settings(settings)
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
        mirror=mirror,
        retriever=Retriever.from_settings(embedder, store, settings, mirror=mirror, glossary=glossary),
        answerer=Answerer(settings, None if sdk_client is None else Claude(settings, sdk_client, metrics)),
        hub=hub,
        team=TeamDirectory.load(settings.team_directory),
        metrics=metrics,
        hashes=hashes,
        conversations=conversations,
        changes=changes,
        library=Library(
            settings, store, embedder, changes, metrics, enricher=Enricher.from_settings(settings)
        ),
        writer_lock=lock,
        upgrade=upgrade,
    )


def check_index_format(store: VectorStore, settings: Settings) -> bool:
    """Whether the collection needs the start-up upgrade; raises `IndexOutdated` when it cannot have it.

    A collection of an earlier format that holds only documents of KNOWLEDGE_PATH (the sample knowledge base
    a first start ingested, or the operator's own) is re-ingested from there at start (`AUTO_INGEST`); any
    other is refused with the command that rebuilds it, never searched as if it were current.
    """
    if store.index_format >= INDEX_FORMAT:
        return False
    if store.count() == 0:
        store.set_index_format()
        return False
    documents = store.documents()
    root = settings.knowledge_path
    inside = f"{doc_key(root, root)}/"
    if settings.auto_ingest and root.is_dir() and all(d.startswith(inside) for d in documents):
        return True
    folders = sorted(
        {str(root)}
        | {d.rsplit("/", 1)[0] if "/" in d else "." for d in documents if not d.startswith(inside)}
    )
    raise IndexOutdated(
        f"The collection {store.name!r} was built by an earlier version of zantara-rag (index format "
        f"{store.index_format}; this version reads format {INDEX_FORMAT}, with each chunk's title in the "
        "other language and bilingual keywords). It holds documents from outside KNOWLEDGE_PATH, so it is "
        "not upgraded on start. Rebuild it with: "
        f"`zantara-rag ingest --reset {' '.join(folders)}`"
    )


async def ingest_sample_if_empty(services: Services) -> None:
    """First start: fill an empty collection from the sample knowledge base, in the background.

    A start that finds an earlier first-start ingestion unfinished (stopped by a shutdown) carries it on, and
    a collection of an earlier index format that holds only KNOWLEDGE_PATH is re-ingested from it (the
    upgrade: only chunks whose text changed are embedded again; files gone are pruned).
    """
    settings = services.settings
    store = services.store
    if not settings.auto_ingest:
        return
    unfinished = await asyncio.to_thread(store.flag, SAMPLE_INGESTION_UNFINISHED)
    if not unfinished and not services.upgrade and await asyncio.to_thread(store.count) > 0:
        return
    services.ingesting = True
    if services.upgrade:
        reason = "the collection is of an earlier index format: upgrading it"
    elif unfinished:
        reason = "carrying on an unfinished first-start ingestion"
    else:
        reason = "the collection is empty"
    log.info("%s: ingesting the knowledge base from %s", reason, settings.knowledge_path)
    try:
        await asyncio.to_thread(store.set_flag, SAMPLE_INGESTION_UNFINISHED, True)
        # Through the one writer: an upload or a watched file waits for it (knowledge/library.py).
        report = await services.library.ingest_folder(
            settings.knowledge_path, prune=services.upgrade, stop=services.stop_ingestion
        )
        if services.upgrade:
            await asyncio.to_thread(store.set_index_format)
            services.upgrade = False
        await asyncio.to_thread(store.set_flag, SAMPLE_INGESTION_UNFINISHED, False)
        log.info("ingested: %s", report.summary())
    except IngestionStopped:
        log.info("first-start ingestion stopped by the shutdown; the next start carries on")
    except Exception as exc:
        services.ingest_error = type(exc).__name__
        log.error("first-start ingestion failed (%s)", type(exc).__name__)
    finally:
        services.ingesting = False
