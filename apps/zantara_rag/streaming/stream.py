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
lets a reconnect that lands on another Fly machine be replayed to the right one. The token is 128 random
bits, but an id is not a capability: a stream belongs to whoever asked (`owner`, a keyed hash of the
token's subject, or of the client's address without authentication) and answers no one else. A refusal
is not kept at all: its one event carries the all-zero token, which always answers `204`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi.sse import format_sse_event

from ..domain import AnswerMeta
from ..settings import MACHINE_ID_PATTERN

log = logging.getLogger(__name__)

TOKEN_HEX = 32  # 128 random bits
REFUSAL_TOKEN = "0" * TOKEN_HEX  # the stream of every refusal: never stored, a reconnect gets 204
_EVENT_ID = re.compile(
    rf"^(?P<stream>(?P<machine>{MACHINE_ID_PATTERN})-(?P<token>[0-9a-f]{{{TOKEN_HEX}}})):(?P<n>\d{{1,9}})$"
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

    @property
    def refusal(self) -> bool:
        """The id of a refusal's one event: its client already has the terminal event."""
        return self.stream.endswith(f"-{REFUSAL_TOKEN}")


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

    def __init__(
        self,
        stream_id: str,
        max_events: int,
        max_bytes: int,
        retry_ms: int | None = None,
        *,
        owner: str = "",
        tag: str = "",
    ) -> None:
        self.id = stream_id
        # Who may follow it: a keyed hash of who asked (see the module docstring).
        self.owner = owner
        # What logs and task names call it: a keyed hash of the id, never the id, which would let a log
        # reader replay a stream from an address that shares the owner's (behind one NAT).
        self.tag = tag
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
        self._followers: list[Reader] = []
        self.on_reader_dropped: Callable[[Stream, Reader], None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.created = time.monotonic()
        self.finished_at: float | None = None
        self.delivered = False  # a reader was handed the terminal event
        self.resumes = 0
        self.cancelled_by_disconnect = False
        self.meta: AnswerMeta | None = None  # set by the producer; read by logs and metrics
        # For the end-of-stream log line and metrics (monotonic clock, like `created`).
        self.received = self.created
        self.first_text_at: float | None = None
        self.text_chunks = 0
        self.log_fields: dict[str, object] = {}
        self.on_finish: Callable[[Stream], None] | None = None
        self._grace: asyncio.TimerHandle | None = None

    @property
    def readers(self) -> int:
        return len(self._followers)

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
                log.error("end-of-stream hook failed for %s (%s)", self.tag, type(exc).__name__)

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

    def add_reader(self, reader: Reader) -> None:
        """A response starts following; a pending abandonment (the grace window) is called off."""
        self._followers.append(reader)
        self.disarm_grace()

    def remove_reader(self, reader: Reader) -> bool:
        """The response stopped following; False if it had already been removed (a drop, then the exit)."""
        if not reader.attached:
            return False
        reader.attached = False
        self._followers.remove(reader)
        return True

    def arm_grace(self, handle: asyncio.TimerHandle) -> None:
        """No reader is left: `handle` abandons the stream unless a reader comes back first."""
        self._grace = handle

    def disarm_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
