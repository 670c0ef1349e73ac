"""`StreamHub`: all live and recently finished streams of this process, bounded in count and time."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine

from .stream import TOKEN_HEX, Reader, Stream

log = logging.getLogger(__name__)


class StreamHub:
    """All live and recently finished streams of this process, bounded in count and time."""

    def __init__(
        self,
        machine_id: str,
        *,
        grace_seconds: float,
        ttl_seconds: float,
        max_streams: int,
        max_events: int,
        max_bytes: int,
        max_lag: int = 2000,
        on_finish: Callable[[Stream], None] | None = None,
    ) -> None:
        self.machine_id = machine_id
        self.grace_seconds = grace_seconds
        self.ttl_seconds = ttl_seconds
        self.max_streams = max_streams
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_lag = max_lag
        self.on_finish = on_finish
        self._streams: OrderedDict[str, Stream] = OrderedDict()

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def active(self) -> int:
        return sum(1 for s in self._streams.values() if not s.finished)

    def create(
        self,
        producer: Callable[[Stream], Coroutine[object, object, None]],
        *,
        received: float | None = None,
        log_fields: dict[str, object] | None = None,
    ) -> Stream:
        """Start an answer. `received` (monotonic) is when its request arrived, for latency metrics."""
        self._sweep()
        stream = self._new(received, log_fields)
        self._streams[stream.id] = stream
        stream.task = asyncio.create_task(producer(stream), name=f"answer {stream.id}")
        return stream

    def create_finished(
        self,
        data: str,
        outcome: str,
        *,
        retry_ms: int | None = None,
        received: float | None = None,
        log_fields: dict[str, object] | None = None,
    ) -> Stream:
        """A stream of one terminal event (a refusal), kept so a reconnect after it gets 204."""
        self._sweep()
        stream = self._new(received, log_fields, retry_ms)
        stream.append(data, terminal=True, outcome=outcome)
        self._streams[stream.id] = stream
        return stream

    def _new(
        self, received: float | None, log_fields: dict[str, object] | None, retry_ms: int | None = None
    ) -> Stream:
        stream_id = f"{self.machine_id}-{secrets.token_hex(TOKEN_HEX // 2)}"
        stream = Stream(stream_id, self.max_events, self.max_bytes, retry_ms)
        if received is not None:
            stream.received = received
        stream.log_fields = dict(log_fields or {})
        stream.on_finish = self.on_finish
        stream.on_reader_dropped = self._drop
        return stream

    def get(self, stream_id: str) -> Stream | None:
        self._sweep(room=0)  # a lookup adds nothing: only expired streams go
        return self._streams.get(stream_id)

    def attach(self, stream: Stream, after: int = 0) -> Reader:
        """A new reader from position `after`; a resume cancels the pending abandonment."""
        # A resume starts behind by however much it missed; only falling further behind counts as slow.
        reader = Reader(after, self.max_lag + max(0, stream.last_position - after))
        stream.add_reader(reader)
        return reader

    def detach(self, stream: Stream, reader: Reader) -> None:
        """The reader left (or was dropped). Without readers, generation gets the grace window, then stops."""
        if not stream.remove_reader(reader) or stream.readers > 0 or stream.finished:
            return
        if self.grace_seconds > 0:
            stream.arm_grace(asyncio.get_running_loop().call_later(self.grace_seconds, self._abandon, stream))
        else:
            self._abandon(stream)

    def _drop(self, stream: Stream, reader: Reader) -> None:
        behind = stream.last_position - reader.position
        log.info("dropping a slow reader of %s (%d events behind)", stream.id, behind)
        self.detach(stream, reader)

    def _abandon(self, stream: Stream) -> None:
        stream.disarm_grace()
        if stream.readers == 0 and not stream.finished and stream.task is not None:
            stream.cancelled_by_disconnect = True
            stream.task.cancel()

    def _sweep(self, room: int = 1) -> None:
        """Drop expired streams, then finished ones until `room` more fit under the count bound."""
        now = time.monotonic()
        # Finished streams expire after the TTL; beyond the count bound the oldest finished go first.
        for sid in [
            sid
            for sid, s in self._streams.items()
            if s.finished_at is not None and now - s.finished_at > self.ttl_seconds
        ]:
            del self._streams[sid]
        limit = self.max_streams - room
        if len(self._streams) > limit:
            # Those whose end a reader already has go first: losing one costs a 204, not half an answer.
            finished = [sid for sid, s in self._streams.items() if s.finished]
            finished.sort(key=lambda sid: not self._streams[sid].delivered)  # stable: oldest first in each
            for sid in finished:
                del self._streams[sid]
                if len(self._streams) <= limit:
                    break

    async def close(self, wait_seconds: float) -> None:
        """Cancel every producer still running and wait for them (used at shutdown)."""
        tasks = [s.task for s in self._streams.values() if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=wait_seconds)

    def live(self) -> list[Stream]:
        return [s for s in self._streams.values() if not s.finished]


def new_machine_id(configured: str | None) -> str:
    return configured or "local"
