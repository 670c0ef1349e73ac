"""`StreamHub`: all live and recently finished streams of this process, bounded in count and time.

At most `max_streams` streams are kept, live ones included: finished streams make room (those whose end a
reader already has first, then the oldest), and when every stream is live a new one is refused
(`RateLimited`), so the hub bounds the producers of this machine whatever the admission caps say.
Finished streams are kept in the order they finished, so expiring them costs only the ones that expire.
A refusal is never kept (`refusal`): its id always answers `204` (`stream.REFUSAL_TOKEN`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine

from ..errors import RateLimited, ShuttingDown
from .stream import REFUSAL_TOKEN, TOKEN_HEX, Reader, Stream

log = logging.getLogger(__name__)

# A slot frees up when an answer ends; most answers take a few seconds to a few tens of seconds.
STREAM_RETRY_AFTER = 5
HUB_FULL = "Zantara is answering as many people as it can right now. Please ask again in a few seconds."


def random_tag() -> Callable[[str], str]:
    """A keyed hash with a key of this process (when the service supplies none)."""
    key = secrets.token_bytes(32)
    return lambda value: hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:24]


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
        tag: Callable[[str], str] | None = None,
    ) -> None:
        self.machine_id = machine_id
        self.grace_seconds = grace_seconds
        self.ttl_seconds = ttl_seconds
        self.max_streams = max_streams
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_lag = max_lag
        self.on_finish = on_finish
        self.tag = tag or random_tag()
        self._streams: dict[str, Stream] = {}
        self._finished: OrderedDict[str, Stream] = OrderedDict()  # in the order they finished
        self.closing = False  # set by `close`: no answer starts after the shutdown ended the others

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def active(self) -> int:
        """Live streams: their producers are running (generating, or in the grace window)."""
        return len(self._streams) - len(self._finished)

    def has_room(self) -> bool:
        """Whether `create` would find a place (a finished stream can always make one)."""
        self._sweep()
        return len(self._streams) < self.max_streams or bool(self._finished)

    def create(
        self,
        producer: Callable[[Stream], Coroutine[object, object, None]],
        *,
        owner: str,
        received: float | None = None,
        log_fields: dict[str, object] | None = None,
    ) -> Stream:
        """Start an answer for `owner`. `received` (monotonic) is when its request arrived, for latency
        metrics. Raises `RateLimited` when `max_streams` streams are live, `ShuttingDown` once `close` ran (a
        question that was still being retrieved when the drain ended the streams)."""
        if self.closing:
            raise ShuttingDown()
        self._sweep()
        while len(self._streams) >= self.max_streams and self._finished:
            self._evict_one()
        if len(self._streams) >= self.max_streams:
            raise RateLimited(HUB_FULL, retry_after=STREAM_RETRY_AFTER)
        stream = self._new(secrets.token_hex(TOKEN_HEX // 2), owner, received, log_fields)
        self._streams[stream.id] = stream
        stream.task = asyncio.create_task(producer(stream), name=f"answer {stream.tag}")
        return stream

    def refusal(
        self,
        data: str,
        outcome: str,
        *,
        retry_ms: int | None = None,
        received: float | None = None,
        log_fields: dict[str, object] | None = None,
    ) -> Stream:
        """A stream of one terminal event (a refusal), logged and counted like any other, and not kept:
        its id is the refusal id, to which a reconnect gets 204."""
        stream = self._new(REFUSAL_TOKEN, "", received, log_fields, retry_ms)
        stream.append(data, terminal=True, outcome=outcome)
        return stream

    def _new(
        self,
        token: str,
        owner: str,
        received: float | None,
        log_fields: dict[str, object] | None,
        retry_ms: int | None = None,
    ) -> Stream:
        stream_id = f"{self.machine_id}-{token}"
        stream = Stream(
            stream_id, self.max_events, self.max_bytes, retry_ms, owner=owner, tag=self.tag(stream_id)
        )
        if received is not None:
            stream.received = received
        stream.log_fields = dict(log_fields or {})
        stream.on_finish = self._finish
        stream.on_reader_dropped = self._drop
        return stream

    def _finish(self, stream: Stream) -> None:
        if self._streams.get(stream.id) is stream:
            self._finished[stream.id] = stream
        if self.on_finish is not None:
            self.on_finish(stream)

    def find(self, stream_id: str, owner: str) -> Stream | None:
        """The stream, if it is kept and `owner` asked for it; else None, exactly as for an unknown id."""
        self._sweep()
        stream = self._streams.get(stream_id)
        if stream is None or not hmac.compare_digest(stream.owner.encode(), owner.encode()):
            return None
        return stream

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
        log.info("dropping a slow reader of %s (%d events behind)", stream.tag, behind)
        self.detach(stream, reader)

    def _abandon(self, stream: Stream) -> None:
        stream.disarm_grace()
        if stream.readers == 0 and not stream.finished and stream.task is not None:
            stream.cancelled_by_disconnect = True
            stream.task.cancel()

    def _sweep(self) -> None:
        """Finished streams leave after the TTL, oldest first; the rest of the loop is never touched."""
        expired = time.monotonic() - self.ttl_seconds
        while self._finished:
            sid, stream = next(iter(self._finished.items()))
            if stream.finished_at is None or stream.finished_at >= expired:
                break
            del self._finished[sid], self._streams[sid]

    def _evict_one(self) -> None:
        """Make room: a finished stream whose end a reader has (losing it costs a 204), else the oldest."""
        victim = next((sid for sid, s in self._finished.items() if s.delivered), None)
        if victim is None:
            victim = next(iter(self._finished))
        del self._finished[victim], self._streams[victim]

    async def close(self, wait_seconds: float) -> None:
        """Cancel every producer still running and wait for them (used at shutdown); start no more."""
        self.closing = True
        tasks = [s.task for s in self._streams.values() if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=wait_seconds)

    def live(self) -> list[Stream]:
        return [s for s in self._streams.values() if not s.finished]


def new_machine_id(configured: str | None) -> str:
    return configured or "local"
