"""Live answer streams, decoupled from the HTTP responses that read them.

Generation runs in its own task and appends encoded events to a `Stream`; a response *follows* the stream
from a position. That split is what makes resume cheap and correct: a reconnect carrying `Last-Event-ID`
follows the same stream from where the client stopped, so nothing is generated twice and nothing is
skipped. When the last reader leaves, generation goes on for `RESUME_GRACE_SECONDS` (if resume is on)
and is then cancelled, which closes the upstream request. Finished streams are kept for
`RESUME_TTL_SECONDS` so a reconnect after the end gets a clean `204`. A reader that stops taking events
while far behind (its client stopped reading) is dropped by the producer, which is the only side that
can see it; it can resume.

Event ids are `<machine>-<token>:<n>`: `n` counts every event of the stream from 1, and the machine part
lets a reconnect that lands on another Fly machine be replayed to the right one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from fastapi.sse import format_sse_event

log = logging.getLogger(__name__)

_EVENT_ID = re.compile(
    r"^(?P<stream>(?P<machine>[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*)-(?P<token>[0-9a-f]{12})):(?P<n>\d{1,9})$"
)


@dataclass(frozen=True, slots=True)
class EventId:
    stream: str
    machine: str
    position: int

    @classmethod
    def parse(cls, raw: str | None) -> EventId | None:
        match = _EVENT_ID.match((raw or "").strip())
        if not match:
            return None
        return cls(match["stream"], match["machine"], int(match["n"]))


# A reader too far behind is dropped only if it also took nothing for this long: one that is still
# draining (a burst it has not caught up with yet, a slow but live connection) is left alone.
STUCK_SECONDS = 1.0


class Reader:
    """One response following a stream: the last position it was handed, and whether it was dropped."""

    __slots__ = ("attached", "dropped", "moved_at", "position", "slack", "wake")

    def __init__(self, position: int, slack: int) -> None:
        self.position = position
        # How far behind the newest event it may fall before it counts as slow.
        self.slack = slack
        self.moved_at = time.monotonic()
        self.dropped = False
        self.attached = True
        # Set on every append (a drop happens inside one): its response waits on it.
        self.wake = asyncio.Event()

    def stuck(self, last_position: int, now: float) -> bool:
        return last_position - self.position > self.slack and now - self.moved_at > STUCK_SECONDS


class Stream:
    """One answer's events, in order, with a bounded replay buffer of their encoded bytes."""

    def __init__(self, stream_id: str, max_events: int, max_bytes: int, retry_ms: int | None = None) -> None:
        self.id = stream_id
        # The SSE `retry:` hint carried by every event (a refusal that names a wait), else None.
        self.retry_ms = retry_ms
        # Positions are contiguous, so a list plus the position of its first element is the whole index.
        self._events: list[bytes] = []
        self._base = 1
        self._bytes = 0
        self._max_events = max_events
        self._max_bytes = max_bytes
        self.next_position = 1
        self.finished = False
        self.outcome: str | None = None
        self.readers = 0
        self._followers: list[Reader] = []
        self.on_reader_dropped: Callable[[Stream, Reader], None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.created = time.monotonic()
        self.finished_at: float | None = None
        self.delivered = False  # a reader was handed the terminal event
        self.resumes = 0
        self.cancelled_by_disconnect = False
        self.meta: object | None = None  # the producer's AnswerMeta, for logs and metrics
        # For the end-of-stream log line and metrics (monotonic clock, like `created`).
        self.received = self.created
        self.first_text_at: float | None = None
        self.text_chunks = 0
        self.log_fields: dict[str, object] = {}
        self.on_finish: Callable[[Stream], None] | None = None
        self._grace: asyncio.TimerHandle | None = None

    @property
    def first_kept(self) -> int:
        return self._base

    @property
    def last_position(self) -> int:
        return self.next_position - 1

    @property
    def awaiting_resume(self) -> bool:
        """Every reader left and generation goes on through the grace window."""
        return self._grace is not None

    def append(self, data: str, *, terminal: bool = False, outcome: str | None = None) -> None:
        """Add one event (its JSON), encoded once for the wire with its id; evict the oldest beyond the bounds
        (a resume from there will expire)."""
        if self.finished:
            return
        encoded = format_sse_event(data_str=data, id=f"{self.id}:{self.next_position}", retry=self.retry_ms)
        self._events.append(encoded)
        self._bytes += len(encoded)
        self.next_position += 1
        if len(self._events) > self._max_events or self._bytes > self._max_bytes:
            drop = 0
            while len(self._events) - drop > 1 and (
                len(self._events) - drop > self._max_events or self._bytes > self._max_bytes
            ):
                self._bytes -= len(self._events[drop])
                drop += 1
            del self._events[:drop]
            self._base += drop
        if terminal:
            self.finished = True
            self.outcome = outcome
            self.finished_at = time.monotonic()
        if self._followers:
            # Checked here, by the producer: a reader stuck in a send (its client stopped reading) is
            # suspended and cannot notice its own lag. Collected first: dropping detaches (edits the list).
            now = time.monotonic()
            stuck: list[Reader] = []
            for reader in self._followers:
                reader.wake.set()
                if not reader.dropped and reader.stuck(self.last_position, now):
                    stuck.append(reader)
            for reader in stuck:
                reader.dropped = True
                if self.on_reader_dropped is not None:
                    self.on_reader_dropped(self, reader)
        if terminal and self.on_finish is not None:
            try:
                self.on_finish(self)
            except Exception as exc:  # bookkeeping must never break a stream
                log.error("end-of-stream hook failed for %s (%s)", self.id, type(exc).__name__)

    def can_replay_from(self, position: int) -> bool:
        """True when every event after `position` is still in the buffer."""
        return position + 1 >= self.first_kept and position <= self.last_position

    def take(self, reader: Reader) -> bytes:
        """Every event after the reader's position, as one piece of the body; moves the reader to the end.

        Raises LookupError when some of those events were evicted (the reader fell too far behind).
        """
        if reader.dropped or reader.position >= self.last_position:
            if self.finished and reader.position >= self.last_position:
                self.delivered = True
            return b""
        start = reader.position + 1 - self._base
        if start < 0:
            raise LookupError("events evicted")
        chunk = self._events[start] if start == len(self._events) - 1 else b"".join(self._events[start:])
        reader.position = self.last_position
        reader.moved_at = time.monotonic()
        if self.finished:
            self.delivered = True
        return chunk

    def _add(self, reader: Reader) -> None:
        self._followers.append(reader)
        self.readers += 1

    def _remove(self, reader: Reader) -> bool:
        if not reader.attached:
            return False
        reader.attached = False
        self._followers.remove(reader)
        self.readers -= 1
        return True


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
        on_abandoned: Callable[[Stream], None] | None = None,
        on_finish: Callable[[Stream], None] | None = None,
    ) -> None:
        self.machine_id = machine_id
        self.grace_seconds = grace_seconds
        self.ttl_seconds = ttl_seconds
        self.max_streams = max_streams
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_lag = max_lag
        self.on_abandoned = on_abandoned
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
        stream_id = f"{self.machine_id}-{secrets.token_hex(6)}"
        stream = Stream(stream_id, self.max_events, self.max_bytes, retry_ms)
        if received is not None:
            stream.received = received
        stream.log_fields = dict(log_fields or {})
        stream.on_finish = self.on_finish
        stream.on_reader_dropped = self._drop
        return stream

    def get(self, stream_id: str) -> Stream | None:
        self._sweep()
        return self._streams.get(stream_id)

    def attach(self, stream: Stream, after: int = 0) -> Reader:
        """A new reader from position `after`; a resume cancels the pending abandonment."""
        # A resume starts behind by however much it missed; only falling further behind counts as slow.
        reader = Reader(after, self.max_lag + max(0, stream.last_position - after))
        stream._add(reader)
        if stream._grace is not None:
            stream._grace.cancel()
            stream._grace = None
        return reader

    def detach(self, stream: Stream, reader: Reader) -> None:
        """The reader left (or was dropped). Without readers, generation gets the grace window, then stops."""
        if not stream._remove(reader) or stream.readers > 0 or stream.finished:
            return
        if self.grace_seconds > 0:
            stream._grace = asyncio.get_running_loop().call_later(self.grace_seconds, self._abandon, stream)
        else:
            self._abandon(stream)

    def _drop(self, stream: Stream, reader: Reader) -> None:
        behind = stream.last_position - reader.position
        log.info("dropping a slow reader of %s (%d events behind)", stream.id, behind)
        self.detach(stream, reader)

    def _abandon(self, stream: Stream) -> None:
        stream._grace = None
        if stream.readers == 0 and not stream.finished and stream.task is not None:
            stream.cancelled_by_disconnect = True
            stream.task.cancel()
            if self.on_abandoned is not None:
                self.on_abandoned(stream)

    def _sweep(self) -> None:
        now = time.monotonic()
        # Finished streams expire after the TTL; beyond the count bound the oldest finished go first.
        for sid in [
            sid
            for sid, s in self._streams.items()
            if s.finished_at is not None and now - s.finished_at > self.ttl_seconds
        ]:
            del self._streams[sid]
        if len(self._streams) >= self.max_streams:
            # Those whose end a reader already has go first: losing one costs a 204, not half an answer.
            finished = [sid for sid, s in self._streams.items() if s.finished]
            finished.sort(key=lambda sid: not self._streams[sid].delivered)  # stable: oldest first in each
            for sid in finished:
                del self._streams[sid]
                if len(self._streams) < self.max_streams:
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
