"""sse-starlette baseline: the service loop (retrieve, then relay the SDK's text) on `EventSourceResponse`.

Retrieval finishes before the response starts, as in the service. sse-starlette sends its `: ping` every
`HEARTBEAT_SECONDS` whether or not events flowed, and watches for the client's disconnect itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from sse_starlette.sse import EventSourceResponse

from bench.baselines._common import Parts, baseline_app, done_event, sources_event, text_event

app = baseline_app()


@app.get("/bali-zero/chat-stream")
async def chat_stream(request: Request, query: str = "") -> EventSourceResponse:
    p: Parts = request.app.state.parts
    retrieval = await p.retriever.retrieve(query)

    async def events() -> AsyncIterator[dict[str, Any]]:
        started = time.perf_counter()
        count = 0
        async with p.client.messages.stream(**p.request(query, retrieval.passages)) as stream:
            async for text in stream.text_stream:
                count += 1
                yield {"data": json.dumps(text_event(text, count))}
        yield {"data": json.dumps(sources_event(retrieval.passages))}
        yield {"data": json.dumps(done_event(count, started, p.settings.anthropic_model))}

    return EventSourceResponse(events(), ping=p.settings.heartbeat_seconds)
