"""What the SDK-based baselines share with the service: settings, retrieval, prompt, client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from zantara_rag.domain import ChatRequest, Passage
from zantara_rag.generation.claude import make_client
from zantara_rag.generation.prompt import build_messages, build_system
from zantara_rag.retrieval.embedder import Embedder
from zantara_rag.retrieval.search import Retriever
from zantara_rag.retrieval.store import VectorStore, connect
from zantara_rag.settings import Settings


@dataclass
class Parts:
    settings: Settings
    retriever: Retriever
    client: Any

    def request(self, query: str, passages: list[Passage]) -> dict[str, Any]:
        """The arguments of `client.messages.stream` for one question."""
        s = self.settings
        return {
            "model": s.anthropic_model,
            "max_tokens": s.max_output_tokens,
            "system": build_system(None),
            "messages": build_messages(ChatRequest(query=query), passages),
        }


def text_event(text: str, n: int) -> dict[str, Any]:
    return {"text": text, "sequenceNumber": n, "timestamp": round(time.time(), 3)}


def sources_event(passages: list[Passage]) -> dict[str, Any]:
    return {"sources": [p.source().model_dump(by_alias=True, exclude_none=True) for p in passages]}


def done_event(n: int, started: float, model: str) -> dict[str, Any]:
    return {
        "done": True,
        "sequenceNumber": n,
        "timestamp": round(time.time(), 3),
        "streamDuration": round(time.perf_counter() - started, 3),
        "model": model,
    }


@asynccontextmanager
async def parts() -> AsyncIterator[Parts]:
    settings = Settings()
    client = connect(settings)
    store = VectorStore(client, settings.chroma_collection, settings.embedding_model)
    embedder = Embedder(
        settings.embedding_model,
        settings.embedding_device,
        backend=settings.embedding_backend,
        cache_dir=settings.embedding_cache_dir,
    )
    retriever = Retriever.from_settings(embedder, store, settings)
    anthropic_client = make_client(settings)
    try:
        yield Parts(settings, retriever, anthropic_client)
    finally:
        if anthropic_client is not None:
            await anthropic_client.close()
        embedder.close()


def baseline_app() -> FastAPI:
    """A FastAPI app whose lifespan puts the shared `Parts` on `app.state.parts`, with `GET /ready`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with parts() as p:
            app.state.parts = p
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"status": "ready"})

    return app
