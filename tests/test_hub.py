"""`StreamHub` in-process: whose a stream is, how many it keeps (live ones too), and what a refusal costs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine

import pytest

from zantara_rag.errors import RateLimited
from zantara_rag.streaming.hub import StreamHub
from zantara_rag.streaming.stream import REFUSAL_TOKEN, TOKEN_HEX, EventId, Stream

Producer = Callable[[Stream], Coroutine[object, object, None]]


def hub(**kw: float) -> StreamHub:
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


def finished() -> Producer:
    async def produce(stream: Stream) -> None:
        stream.append('{"done":true}', terminal=True, outcome="done")

    return produce


async def settle(*streams: Stream) -> None:
    await asyncio.wait([s.task for s in streams if s.task is not None])


async def test_ids_carry_128_random_bits_and_parse_back() -> None:
    h = hub()
    streams = [h.create(finished(), owner="o") for _ in range(50)]
    await settle(*streams)
    tokens = {s.id.removeprefix("m1-") for s in streams}
    assert len(tokens) == 50 and all(len(t) == TOKEN_HEX == 32 for t in tokens)
    parsed = EventId.parse(f"{streams[0].id}:1")
    assert parsed is not None and parsed.stream == streams[0].id and not parsed.refusal


async def test_a_stream_is_found_by_its_owner_only() -> None:
    h = hub()
    stream = h.create(generating(asyncio.Event()), owner="alice")
    assert h.find(stream.id, "alice") is stream
    assert h.find(stream.id, "bob") is None
    assert h.find(stream.id, "") is None
    assert h.find("m1-" + "f" * 32, "alice") is None  # unknown: the same answer
    await h.close(1)


async def test_the_hub_never_holds_more_than_max_streams_live_ones_included() -> None:
    h = hub(max_streams=3)
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
    more = [h.create(finished(), owner="o") for _ in range(3)]
    await settle(*more)
    assert len(h) == 3 and {s.id for s in more} == {s.id for s in h._streams.values()}


async def test_finished_streams_whose_end_was_delivered_are_evicted_first() -> None:
    h = hub(max_streams=2)
    first, second = h.create(finished(), owner="o"), h.create(finished(), owner="o")
    await settle(first, second)
    second.delivered = True
    third = h.create(finished(), owner="o")
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
    h = hub(ttl_seconds=0.2, max_streams=10_000)
    old = [h.create(finished(), owner="o") for _ in range(200)]
    await settle(*old)
    await asyncio.sleep(0.25)
    fresh = h.create(finished(), owner="o")
    await settle(fresh)
    assert len(h) == 1 and h.find(fresh.id, "o") is fresh and h.find(old[0].id, "o") is None


async def test_a_lookup_does_not_walk_every_kept_stream() -> None:
    h = hub(max_streams=10_000)
    kept = [h.create(finished(), owner="o") for _ in range(5000)]
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
    stream = h.create(finished(), owner="o")
    await settle(stream)
    assert stream.tag == f"tag-of-{len(stream.id)}" and stream.id not in stream.tag
    assert stream.task is not None and stream.id not in stream.task.get_name()
