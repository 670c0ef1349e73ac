"""Seed-style baseline: `StreamingResponse` over a generator that does everything, in the order it happens.

Status and headers go out first; retrieval runs inside the generator; every chunk is preceded by
`await request.is_disconnected()` and encoded with `json.dumps`. No heartbeat, no resume.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from bench.baselines._common import Parts, baseline_app, done_event, sources_event, text_event

app = baseline_app()


@app.get("/bali-zero/chat-stream")
async def chat_stream(request: Request, query: str = "") -> StreamingResponse:
    p: Parts = request.app.state.parts

    async def generate() -> AsyncIterator[str]:
        started = time.perf_counter()
        retrieval = await p.retriever.retrieve(query)
        count = 0
        async with p.client.messages.stream(**p.request(query, retrieval.passages)) as stream:
            async for text in stream.text_stream:
                if await request.is_disconnected():
                    return
                count += 1
                yield f"data: {json.dumps(text_event(text, count))}\n\n"
        yield f"data: {json.dumps(sources_event(retrieval.passages))}\n\n"
        yield f"data: {json.dumps(done_event(count, started, p.settings.anthropic_model))}\n\n"

    return StreamingResponse(generate(), media_type="text/event-stream")
