"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .deps import ServicesDep

router = APIRouter()


@router.get("/health", summary="The process is alive")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Ready to answer: store reachable, collection non-empty, embedder loaded")
async def ready(services: ServicesDep) -> JSONResponse:
    reason = None
    if services.draining:
        reason = "shutting down"
    elif services.ingesting:
        reason = "ingesting the sample knowledge base"
    else:
        try:
            count = await asyncio.wait_for(asyncio.to_thread(services.store.count), timeout=3.0)
        except Exception:
            reason = "vector store unreachable"
        else:
            if count == 0:
                reason = "the knowledge base is empty: run `zantara-rag ingest`"
                if services.ingest_error:
                    reason = "first-start ingestion failed: see the logs, then run `zantara-rag ingest`"
    if reason is not None:
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    return JSONResponse(
        {
            "status": "ready",
            "chunks": count,
            "embedding_model": services.embedder.name,
            "answers": "claude" if services.answerer.claude is not None else "extractive",
        }
    )
