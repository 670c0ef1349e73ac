"""`Stream`, `Reader`, `EventId` and `StreamHub`, driven directly: the replay buffer, slow readers, the grace
window, the sweep, whose a stream is and how many the hub keeps. In-process and fast (the longest wait is a
few 50 ms grace windows)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine

import pytest
from fastapi.sse import format_sse_event

from zantara_rag.errors import RateLimited
from zantara_rag.events import TextEvent
from zantara_rag.streaming import stream as stream_module
from zantara_rag.streaming.hub import StreamHub
from zantara_rag.streaming.stream import REFUSAL_TOKEN, TOKEN_HEX, EventId, Reader, Stream

GRACE = 0.05
OWNER = "owner-hash"


def text(n: int, body: str = "piece") -> str:
    return TextEvent(text=f"{body} {n}", sequence_number=n, timestamp=1_700_000_000.0).to_json()


def make_hub(**overrides: object) -> StreamHub:
    options: dict[str, object] = {
        "grace_seconds": GRACE,
        "ttl_seconds": 60.0,
        "max_streams": 100,
        "max_events": 100,
        "max_bytes": 1_000_000,
        "max_lag": 50,
    }
    options.update(overrides)
    return StreamHub("test-machine", **options)  # type: ignore[arg-type]


async def forever(stream: Stream) -> None:
    """A producer that never ends by itself (cancelled by the grace window or the test)."""
    await asyncio.Event().wait()


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def kept(hub: StreamHub) -> set[str]:
    """The ids the hub holds, read without `find` (which sweeps)."""
    return set(hub._streams)


async def finished_stream(hub: StreamHub, *, retry_ms: int | None = None) -> Stream:
    """A kept stream whose producer appended one terminal event."""

    async def producer(stream: Stream) -> None:
        stream.append(text(1), terminal=True, outcome="done")

    stream = hub.create(producer, owner=OWNER)
    await until(lambda: stream.finished)
    return stream


async def stop(*streams: Stream) -> None:
    """Cancel and await the producers a test started, so no task outlives it."""
    tasks = [s.task for s in streams if s.task is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- Stream: append and take


def test_each_event_is_encoded_once_with_its_stream_and_position_as_id() -> None:
    stream = Stream("m-0123456789ab", max_events=10, max_bytes=10_000)
    stream.append(text(1))
    stream.append(text(2))
    reader = Reader(0, slack=10)

    chunk = stream.take(reader)

    assert chunk == format_sse_event(data_str=text(1), id="m-0123456789ab:1") + format_sse_event(
        data_str=text(2), id="m-0123456789ab:2"
    )
    assert reader.position == 2 == stream.last_position
    assert stream.take(Reader(0, slack=10)) == chunk  # a replay is the same bytes


def test_take_returns_everything_pending_in_one_piece_then_nothing() -> None:
    stream = Stream("s", max_events=10, max_bytes=10_000)
    reader = Reader(0, slack=10)
    for n in range(1, 4):
        stream.append(text(n))

    first = stream.take(reader)
    assert first.count(b"id: s:") == 3
    assert stream.take(reader) == b""

    stream.append(text(4))
    assert stream.take(reader) == format_sse_event(data_str=text(4), id="s:4")


def test_the_retry_hint_is_carried_by_every_event() -> None:
    stream = Stream("s", max_events=10, max_bytes=10_000, retry_ms=5000)
    stream.append(text(1))
    assert stream.take(Reader(0, slack=10)).endswith(b"id: s:1\nretry: 5000\n\n")


def test_nothing_is_appended_after_the_terminal_event() -> None:
    stream = Stream("s", max_events=10, max_bytes=10_000)
    stream.append(text(1), terminal=True, outcome="done")
    stream.append(text(2))
    assert stream.finished and stream.outcome == "done"
    assert stream.last_position == 1
    assert stream.finished_at is not None


def test_a_reader_handed_the_terminal_event_marks_the_stream_delivered() -> None:
    stream = Stream("s", max_events=10, max_bytes=10_000)
    reader = Reader(0, slack=10)
    stream.append(text(1))
    stream.take(reader)
    assert not stream.delivered
    stream.append(text(2), terminal=True, outcome="done")
    assert not stream.delivered
    stream.take(reader)
    assert stream.delivered


# --- Stream: the bounded replay buffer


def test_beyond_max_events_the_oldest_events_are_evicted() -> None:
    stream = Stream("s", max_events=3, max_bytes=1_000_000)
    for n in range(1, 6):
        stream.append(text(n))

    assert stream.first_kept == 3
    assert stream.last_position == 5
    assert stream.take(Reader(2, slack=10)).count(b"id: s:") == 3
    with pytest.raises(LookupError):
        stream.take(Reader(1, slack=10))


def test_beyond_max_bytes_the_oldest_events_are_evicted_but_the_newest_is_kept() -> None:
    one = len(format_sse_event(data_str=text(1), id="s:1"))
    stream = Stream("s", max_events=1000, max_bytes=2 * one + one // 2)
    for n in range(1, 5):
        stream.append(text(n))
    assert stream.first_kept == 3  # two events fit, the third would not

    stream.append(text(99, body="x" * (10 * one)))  # a single event over the byte bound stays
    assert stream.first_kept == stream.last_position == 5
    assert b"x" * 100 in stream.take(Reader(4, slack=10))


def test_a_reader_behind_the_evicted_part_gets_a_lookup_error_and_does_not_move() -> None:
    stream = Stream("s", max_events=2, max_bytes=1_000_000)
    reader = Reader(0, slack=10)
    for n in range(1, 4):
        stream.append(text(n))
    with pytest.raises(LookupError):
        stream.take(reader)
    assert reader.position == 0


def test_can_replay_from_says_whether_every_later_event_is_still_kept() -> None:
    stream = Stream("s", max_events=3, max_bytes=1_000_000)
    for n in range(1, 6):
        stream.append(text(n))  # keeps 3, 4, 5
    assert not stream.can_replay_from(1)  # would need 2
    assert stream.can_replay_from(2)
    assert stream.can_replay_from(5)  # nothing missing: the client is up to date
    assert not stream.can_replay_from(6)  # from the future


# --- EventId

T = "0123456789abcdef" * 2  # a 128-bit token
U = T.upper()
S = T[:-1]  # one hex digit short


@pytest.mark.parametrize(
    ("raw", "stream", "machine", "position"),
    [
        (f"local-{T}:1", f"local-{T}", "local", 1),
        (f"  local-{T}:42 \n", f"local-{T}", "local", 42),
        (f"148e21-{T}:7", f"148e21-{T}", "148e21", 7),
        (f"my-fly-machine-{T}:3", f"my-fly-machine-{T}", "my-fly-machine", 3),
        (f"a_b-{T}-{T}:9", f"a_b-{T}-{T}", f"a_b-{T}", 9),
    ],
)
def test_event_ids_parse_into_stream_machine_and_position(
    raw: str, stream: str, machine: str, position: int
) -> None:
    assert EventId.parse(raw) == EventId(stream, machine, position)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "garbage",
        f"local-{T}",  # no position
        f"local-{T}:",  # empty position
        f"local-{T}:-1",
        f"local-{T}:1234567890",  # over nine digits
        f"local-{U}:1",  # upper-case token
        f"local-{S}:1",  # token too short
        "local-0123456789ab:1",  # a 48-bit token, as ids were before
        f"-{T}:1",  # no machine
        f"a--b-{T}:1",  # empty word in the machine id
        f"a b-{T}:1",
        f"local-{T}:1:2",
    ],
)
def test_malformed_event_ids_parse_to_none(raw: str | None) -> None:
    assert EventId.parse(raw) is None


async def test_every_id_the_hub_hands_out_parses_back_to_its_stream() -> None:
    hub = StreamHub(
        "fly-machine-1", grace_seconds=0, ttl_seconds=60, max_streams=10, max_events=10, max_bytes=10_000
    )
    stream = await finished_stream(hub)
    parsed = EventId.parse(f"{stream.id}:1")
    assert parsed == EventId(stream.id, "fly-machine-1", 1)


# --- slow readers


async def test_a_reader_far_behind_that_has_not_moved_is_dropped_by_the_append_and_detached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream_module, "STUCK_SECONDS", 0.0)
    hub = make_hub(max_lag=2)
    stream = hub.create(forever, owner=OWNER)
    slow = hub.attach(stream)
    live = hub.attach(stream)

    for n in range(1, 3):
        stream.append(text(n))
        stream.take(live)  # this one keeps up
        assert not slow.dropped  # at most `slack` behind: kept

    stream.append(text(3))  # three behind, more than the slack of two

    assert slow.dropped and not slow.attached
    assert not live.dropped and live.attached
    assert stream.readers == 1
    assert stream.take(slow) == b""  # a dropped reader is handed nothing more
    await stop(stream)


async def test_a_reader_behind_that_moved_recently_is_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "STUCK_SECONDS", 60.0)  # "recently": within the minute
    hub = make_hub(max_lag=2)
    stream = hub.create(forever, owner=OWNER)
    reader = hub.attach(stream)
    for n in range(1, 10):
        stream.append(text(n))
    assert not reader.dropped and stream.readers == 1
    await stop(stream)


async def test_dropping_the_last_reader_starts_the_grace_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "STUCK_SECONDS", 0.0)
    hub = make_hub(max_lag=1, grace_seconds=10)
    stream = hub.create(forever, owner=OWNER)
    reader = hub.attach(stream)
    stream.append(text(1))
    stream.append(text(2))
    assert reader.dropped and stream.readers == 0
    assert stream.awaiting_resume
    hub.detach(stream, reader)  # the response's own exit, after the drop: nothing more happens
    assert stream.awaiting_resume
    await stop(stream)


async def test_a_resumed_reader_gets_slack_for_what_it_missed() -> None:
    hub = make_hub(max_lag=2)
    stream = hub.create(forever, owner=OWNER)
    for n in range(1, 11):
        stream.append(text(n))
    reader = hub.attach(stream, after=3)
    assert reader.slack == 2 + 7
    assert reader.position == 3
    await stop(stream)


# --- the grace window


async def test_detaching_the_last_reader_cancels_the_producer_when_the_grace_window_ends() -> None:
    hub = make_hub()
    stream = hub.create(forever, owner=OWNER)
    first, second = hub.attach(stream), hub.attach(stream)

    hub.detach(stream, first)
    assert not stream.awaiting_resume  # one reader is left
    hub.detach(stream, second)
    assert stream.awaiting_resume
    assert stream.task is not None and not stream.task.done()

    await until(lambda: stream.task is not None and stream.task.done())
    assert stream.task.cancelled()
    assert stream.cancelled_by_disconnect
    assert not stream.awaiting_resume


async def test_a_reader_back_within_the_grace_window_keeps_the_producer_running() -> None:
    hub = make_hub()
    stream = hub.create(forever, owner=OWNER)
    hub.detach(stream, hub.attach(stream))
    assert stream.awaiting_resume

    back = hub.attach(stream)
    assert not stream.awaiting_resume
    await asyncio.sleep(GRACE * 3)

    assert stream.task is not None and not stream.task.done()
    assert not stream.cancelled_by_disconnect
    hub.detach(stream, back)
    await until(lambda: stream.task is not None and stream.task.done())
    assert stream.cancelled_by_disconnect


async def test_with_no_grace_window_the_last_detach_cancels_at_once() -> None:
    hub = make_hub(grace_seconds=0)
    stream = hub.create(forever, owner=OWNER)
    hub.detach(stream, hub.attach(stream))
    assert stream.cancelled_by_disconnect
    assert not stream.awaiting_resume
    await stop(stream)
    assert stream.task is not None and stream.task.cancelled()


async def test_a_finished_stream_is_not_abandoned_when_its_last_reader_leaves() -> None:
    hub = make_hub(grace_seconds=0)
    stream = hub.create(forever, owner=OWNER)
    reader = hub.attach(stream)
    stream.append(text(1), terminal=True, outcome="done")
    hub.detach(stream, reader)
    assert not stream.cancelled_by_disconnect
    assert not stream.awaiting_resume
    await stop(stream)


async def test_a_producer_that_sees_the_cancel_can_append_its_terminal_event() -> None:
    async def producer(stream: Stream) -> None:
        stream.append(text(1))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stream.append(
                text(2), terminal=True, outcome="cancelled" if stream.cancelled_by_disconnect else ""
            )
            raise

    hub = make_hub()
    stream = hub.create(producer, owner=OWNER)
    await until(lambda: stream.last_position == 1)
    hub.detach(stream, hub.attach(stream))
    await until(lambda: stream.finished)
    assert stream.outcome == "cancelled"


# --- on_finish


async def test_on_finish_is_called_exactly_once_with_the_finished_stream() -> None:
    finished: list[Stream] = []
    hub = make_hub(on_finish=finished.append)

    async def producer(stream: Stream) -> None:
        stream.append(text(1))
        stream.append(text(2), terminal=True, outcome="done")
        stream.append(text(3), terminal=True, outcome="again")

    stream = hub.create(producer, owner=OWNER)
    await until(lambda: stream.task is not None and stream.task.done())
    assert finished == [stream]
    assert finished[0].finished and finished[0].outcome == "done"


def test_a_failing_on_finish_hook_does_not_break_the_stream() -> None:
    def boom(stream: Stream) -> None:
        raise RuntimeError("bookkeeping bug")

    hub = make_hub(on_finish=boom)
    stream = hub.refusal(text(1), outcome="rate_limited")
    assert stream.finished and stream.last_position == 1


# --- refusals and the sweep (with the owner and live-stream bounds: the tests after these)


def test_a_refusal_is_a_one_event_stream_that_is_over_and_not_kept() -> None:
    finished: list[Stream] = []
    hub = make_hub(on_finish=finished.append)
    stream = hub.refusal(text(1), outcome="rate_limited", retry_ms=3000, log_fields={"a": 1})

    assert stream.finished and stream.outcome == "rate_limited"
    assert stream.task is None and stream.log_fields == {"a": 1}
    assert finished == [stream]
    assert len(hub) == 0
    assert stream.take(Reader(0, slack=10)) == format_sse_event(
        data_str=text(1), id=f"{stream.id}:1", retry=3000
    )


async def test_a_lookup_at_capacity_evicts_nothing() -> None:
    # Only adding a stream needs room: looking one up (a resume) must not push out that very stream.
    hub = make_hub(max_streams=2)
    first = await finished_stream(hub)
    second = await finished_stream(hub)
    assert hub.find(second.id, OWNER) is second
    assert hub.find(first.id, OWNER) is first
    assert kept(hub) == {first.id, second.id}


async def test_close_cancels_every_producer_still_running() -> None:
    hub = make_hub()
    streams = [hub.create(forever, owner=OWNER) for _ in range(3)]
    await hub.close(wait_seconds=1.0)
    assert all(s.task is not None and s.task.cancelled() for s in streams)
    assert not any(s.cancelled_by_disconnect for s in streams)


# --- whose a stream is, how many the hub keeps (live ones too), what a refusal costs

Producer = Callable[[Stream], Coroutine[object, object, None]]


def small_hub(**kw: float) -> StreamHub:
    options: dict[str, float] = {
        "grace_seconds": 0,
        "ttl_seconds": 60,
        "max_streams": 100,
        "max_events": 100,
        "max_bytes": 100_000,
    }
    options.update(kw)
    return StreamHub("m1", **options)  # type: ignore[arg-type]


def generating(release: asyncio.Event) -> Producer:
    """A producer that appends one event, then waits for `release` before it ends."""

    async def produce(stream: Stream) -> None:
        stream.append('{"text":"a"}')
        await release.wait()
        stream.append('{"done":true}', terminal=True, outcome="done")

    return produce


def done_at_once() -> Producer:
    async def produce(stream: Stream) -> None:
        stream.append('{"done":true}', terminal=True, outcome="done")

    return produce


async def settle(*streams: Stream) -> None:
    await asyncio.wait([s.task for s in streams if s.task is not None])


async def test_ids_carry_128_random_bits_and_parse_back() -> None:
    h = small_hub()
    streams = [h.create(done_at_once(), owner="o") for _ in range(50)]
    await settle(*streams)
    tokens = {s.id.removeprefix("m1-") for s in streams}
    assert len(tokens) == 50 and all(len(t) == TOKEN_HEX == 32 for t in tokens)
    parsed = EventId.parse(f"{streams[0].id}:1")
    assert parsed is not None and parsed.stream == streams[0].id and not parsed.refusal


async def test_a_stream_is_found_by_its_owner_only() -> None:
    h = small_hub()
    stream = h.create(generating(asyncio.Event()), owner="alice")
    assert h.find(stream.id, "alice") is stream
    assert h.find(stream.id, "bob") is None
    assert h.find(stream.id, "") is None
    assert h.find("m1-" + "f" * 32, "alice") is None  # unknown: the same answer
    await h.close(1)


async def test_the_hub_never_holds_more_than_max_streams_live_ones_included() -> None:
    h = small_hub(max_streams=3)
    release = asyncio.Event()
    live = [h.create(generating(release), owner=f"o{n}") for n in range(3)]
    assert not h.has_room()
    with pytest.raises(RateLimited) as refused:
        h.create(generating(release), owner="o4")
    assert refused.value.retry_after == 5 and len(h) == h.active == 3
    release.set()
    await settle(*live)
    # Finished streams make room: the next three replace them.
    assert h.has_room() and h.active == 0
    more = [h.create(done_at_once(), owner="o") for _ in range(3)]
    await settle(*more)
    assert len(h) == 3 and {s.id for s in more} == {s.id for s in h._streams.values()}


async def test_finished_streams_whose_end_was_delivered_are_evicted_first() -> None:
    h = small_hub(max_streams=2)
    first, second = h.create(done_at_once(), owner="o"), h.create(done_at_once(), owner="o")
    await settle(first, second)
    second.delivered = True
    third = h.create(done_at_once(), owner="o")
    await settle(third)
    assert h.find(first.id, "o") is first and h.find(second.id, "o") is None


async def test_refusals_are_never_kept_and_share_the_refusal_id() -> None:
    ended: list[Stream] = []
    h = StreamHub("m1", grace_seconds=0, ttl_seconds=60, max_streams=3, max_events=10, max_bytes=10_000)
    h.on_finish = ended.append
    refusals = [h.refusal('{"code":"rate_limited"}', "rate_limited", retry_ms=5000) for _ in range(5000)]
    assert len(h) == 0 and h.has_room()
    assert {s.id for s in refusals} == {f"m1-{REFUSAL_TOKEN}"} and all(s.finished for s in refusals)
    assert len(ended) == 5000 and ended[0].outcome == "rate_limited"  # logged and counted all the same
    parsed = EventId.parse(f"{refusals[0].id}:1")
    assert parsed is not None and parsed.refusal
    assert b"retry: 5000" in refusals[0].take(h.attach(refusals[0]))


async def test_expiry_removes_finished_streams_after_the_ttl() -> None:
    h = small_hub(ttl_seconds=0.2, max_streams=10_000)
    old = [h.create(done_at_once(), owner="o") for _ in range(200)]
    await settle(*old)
    await asyncio.sleep(0.25)
    fresh = h.create(done_at_once(), owner="o")
    await settle(fresh)
    assert len(h) == 1 and h.find(fresh.id, "o") is fresh and h.find(old[0].id, "o") is None


async def test_a_lookup_does_not_walk_every_kept_stream() -> None:
    h = small_hub(max_streams=10_000)
    kept = [h.create(done_at_once(), owner="o") for _ in range(5000)]
    await settle(*kept)
    started = time.perf_counter()
    for stream in kept[:2000]:
        assert h.find(stream.id, "o") is stream
    # A sweep over 5000 streams per lookup took ~0.7 ms here: 2000 lookups would take over a second.
    assert time.perf_counter() - started < 0.25


async def test_stream_tags_are_keyed_hashes_of_the_id() -> None:
    h = StreamHub(
        "m1",
        grace_seconds=0,
        ttl_seconds=60,
        max_streams=3,
        max_events=10,
        max_bytes=10_000,
        tag=lambda stream_id: f"tag-of-{len(stream_id)}",
    )
    stream = h.create(done_at_once(), owner="o")
    await settle(stream)
    assert stream.tag == f"tag-of-{len(stream.id)}" and stream.id not in stream.tag
    assert stream.task is not None and stream.id not in stream.task.get_name()


async def test_once_closed_the_hub_starts_no_more_answers() -> None:
    # A question still being retrieved when the drain ended the streams must not start a producer that
    # uvicorn would then cut without a terminal event.
    from zantara_rag.errors import ShuttingDown

    hub = make_hub()
    live = hub.create(forever, owner=OWNER)
    await hub.close(wait_seconds=1.0)
    assert live.task is not None and live.task.cancelled()
    with pytest.raises(ShuttingDown):
        hub.create(forever, owner=OWNER)
    assert len(hub) == 1  # nothing was added
