"""Live answer streams, decoupled from the HTTP responses that read them.

Generation runs in its own task and appends encoded events to a `Stream`; a response *follows* the stream
from a position. That split is what makes resume cheap and correct: a reconnect carrying `Last-Event-ID`
follows the same stream from where the client stopped, so nothing is generated twice and nothing is
skipped. When the last reader leaves, generation goes on for `RESUME_GRACE_SECONDS` (if resume is on)
and is then cancelled, which closes the upstream request. Finished streams are kept for
`RESUME_TTL_SECONDS` so a reconnect after the end gets a clean `204`.

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
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass

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


class Stream:
    """One answer's events, in order, with a bounded replay buffer."""

    def __init__(self, stream_id: str, max_events: int, max_bytes: int) -> None:
        self.id = stream_id
        # Positions are contiguous, so a list plus the position of its first element is the whole index.
        self._events: list[str] = []
        self._base = 1
        self._bytes = 0
        self._max_events = max_events
        self._max_bytes = max_bytes
        self.next_position = 1
        self.finished = False
        self.outcome: str | None = None
        self.readers = 0
        self.task: asyncio.Task[None] | None = None
        self.created = time.monotonic()
        self.finished_at: float | None = None
        self.resumes = 0
        self.cancelled_by_disconnect = False
        self.meta: object | None = None  # the producer's AnswerMeta, for logs and metrics
        self._changed = asyncio.Event()
        self._grace: asyncio.TimerHandle | None = None

    @property
    def first_kept(self) -> int:
        return self._base

    @property
    def last_position(self) -> int:
        return self.next_position - 1

    def append(self, data: str, *, terminal: bool = False, outcome: str | None = None) -> None:
        """Add one encoded event; evict the oldest beyond the bounds (a resume from there will expire)."""
        if self.finished:
            return
        self._events.append(data)
        self._bytes += len(data)
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
        self._changed.set()
        self._changed = asyncio.Event()

    def can_replay_from(self, position: int) -> bool:
        """True when every event after `position` is still in the buffer."""
        return position + 1 >= self.first_kept and position <= self.last_position

    async def follow(self, after: int, max_lag: int) -> AsyncIterator[tuple[int, str]]:
        """Events after `after`, live. Returns when the stream is finished or the reader lags too far."""
        position = after
        while True:
            changed = self._changed
            while position < self.last_position:
                index = position + 1 - self._base
                if index < 0:
                    raise LookupError("events evicted")
                if self.last_position - position > max_lag:
                    # A reader this far behind holds the buffer hostage; drop it, it can resume.
                    log.info(
                        "dropping a slow reader of %s (%d behind)", self.id, self.last_position - position
                    )
                    return
                position += 1
                yield position, self._events[index]
            if self.finished:
                return
            await changed.wait()


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
        on_abandoned: Callable[[Stream], None] | None = None,
    ) -> None:
        self.machine_id = machine_id
        self.grace_seconds = grace_seconds
        self.ttl_seconds = ttl_seconds
        self.max_streams = max_streams
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.on_abandoned = on_abandoned
        self._streams: OrderedDict[str, Stream] = OrderedDict()

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def active(self) -> int:
        return sum(1 for s in self._streams.values() if not s.finished)

    def create(self, producer: Callable[[Stream], Coroutine[object, object, None]]) -> Stream:
        self._sweep()
        stream = Stream(f"{self.machine_id}-{secrets.token_hex(6)}", self.max_events, self.max_bytes)
        self._streams[stream.id] = stream
        stream.task = asyncio.create_task(producer(stream), name=f"answer {stream.id}")
        return stream

    def create_finished(self, data: str, outcome: str) -> Stream:
        """A stream of one terminal event (a refusal), kept so a reconnect after it gets 204."""
        self._sweep()
        stream = Stream(f"{self.machine_id}-{secrets.token_hex(6)}", self.max_events, self.max_bytes)
        stream.append(data, terminal=True, outcome=outcome)
        self._streams[stream.id] = stream
        return stream

    def get(self, stream_id: str) -> Stream | None:
        self._sweep()
        return self._streams.get(stream_id)

    def attach(self, stream: Stream) -> None:
        stream.readers += 1
        if stream._grace is not None:
            stream._grace.cancel()
            stream._grace = None

    def detach(self, stream: Stream) -> None:
        """The reader left. Without readers, generation gets the grace window, then is cancelled."""
        stream.readers -= 1
        if stream.readers > 0 or stream.finished:
            return
        if self.grace_seconds > 0:
            stream._grace = asyncio.get_running_loop().call_later(self.grace_seconds, self._abandon, stream)
        else:
            self._abandon(stream)

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
            for sid in [sid for sid, s in self._streams.items() if s.finished]:
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
