"""The HTTP response that relays one `Stream` to one client.

A deliberate divergence from FastAPI's generator-based SSE responses, measured in docs/performance.md. The
wire format is still FastAPI's own (`fastapi.sse.format_sse_event` encodes every event when the producer
appends it; `: ping` is its `KEEPALIVE_COMMENT`) and the route describes its `text/event-stream` body in
the OpenAPI document with FastAPI's own item schema (`SSE_ITEM_SCHEMA`); only the sending loop is ours.
Per event, FastAPI's loop hops through two tasks and two memory streams of its own and arms a cancel scope
for its keep-alive timer, and Starlette's
`StreamingResponse` beneath it adds a task switch: most of what the relay cost per event, and the reason an
overloaded process delivered a few hundred events per second, since a reader that had fallen behind
caught up one event per event-loop pass. Here:

- the events are already bytes, encoded once when appended (a resume replays those same bytes);
- one task per response wakes once per append and sends *everything* pending in one write, so a reader
  that has fallen behind (a slow network, a busy process) catches up in one send;
- the keep-alive is a timer that fires only when the stream has been quiet for `heartbeat_seconds`
  (`: ping` after that long without an event, as FastAPI does), not a cancel scope per event;
- a disconnect is seen by one task waiting on `receive()`, as in Starlette's `StreamingResponse`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..errors import StreamExpired
from ..events import ErrorEvent
from .stream import Reader, Stream

# Fly's proxy compresses (and so buffers) anything without a Content-Encoding; FastAPI's own
# `Cache-Control: no-cache` lacks `no-transform`; nginx-style proxies buffer without X-Accel-Buffering.
STREAM_HEADERS = {
    "cache-control": "no-cache, no-transform",
    "content-encoding": "none",
    "x-accel-buffering": "no",
}

# The OpenAPI description of one event (what FastAPI generates for its own SSE routes): `data` is the JSON
# of a text, sources, done or error event (docs/api.md).
SSE_ITEM_SCHEMA = {
    "type": "object",
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def _expired(reader: Reader, stream: Stream) -> bytes:
    """The terminal `stream_expired` event for a reader that fell behind what the buffer keeps, stamped now.

    Text events are the stream's first events, so the reader has seen `min(position, text_chunks)` of them.
    It carries no id: it is not one of the stream's events, and a resume from the last id expires as well.
    """
    seen = min(reader.position, stream.text_chunks)
    return format_sse_event(data_str=ErrorEvent.of(StreamExpired(), seen).to_json())


class StreamRelay(Response):
    """`text/event-stream` of a stream's events after the reader's position, live, until its end."""

    media_type = "text/event-stream"

    def __init__(
        self,
        stream: Stream,
        reader: Reader,
        *,
        heartbeat_seconds: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # No `super().__init__()`: with no body there must be no Content-Length (as StreamingResponse).
        self.status_code = 200
        self.background = None
        self.init_headers({**STREAM_HEADERS, **(headers or {})})
        self.stream = stream
        self.reader = reader
        self.heartbeat_seconds = heartbeat_seconds
        self._disconnected = False
        self._ping_due = False
        self._sent_at = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        reader, stream = self.reader, self.stream
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        self._sent_at = loop.time()
        listener = asyncio.create_task(self._listen(receive), name=f"disconnect {stream.tag}")
        self._timer = loop.call_later(self.heartbeat_seconds, self._tick)
        try:
            while not self._disconnected:
                # Cleared before taking: an append between the take and the wait sets it again.
                reader.wake.clear()
                try:
                    chunk = stream.take(reader)
                except LookupError:  # the reader fell behind what the buffer keeps
                    await send(
                        {"type": "http.response.body", "body": _expired(reader, stream), "more_body": True}
                    )
                    break
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    self._sent_at = loop.time()
                    self._ping_due = False
                elif self._ping_due:
                    self._ping_due = False
                    await send({"type": "http.response.body", "body": KEEPALIVE_COMMENT, "more_body": True})
                    self._sent_at = loop.time()
                # A dropped (slow) reader's body ends without a terminal event: EventSource resumes.
                if reader.dropped or (stream.finished and reader.position >= stream.last_position):
                    break
                if not chunk:
                    await reader.wake.wait()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._timer.cancel()
            listener.cancel()

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._sent_at
        if quiet >= self.heartbeat_seconds:
            self._ping_due = True
            self.reader.wake.set()
            quiet = 0.0
        self._timer = loop.call_later(self.heartbeat_seconds - quiet, self._tick)

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._disconnected = True
        self.reader.wake.set()
