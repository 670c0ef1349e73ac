"""The fake Anthropic server, read by the real ``anthropic`` SDK, in every scenario we rely on."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from tests.fakes.answers import (
    EMPTY_TEXT_BLOCK,
    PREFILL_REFUSED,
    SO_FAR_CLOSE,
    SO_FAR_OPEN,
    TRAILING_WHITESPACE,
    model_generation,
    refuses_prefill,
)
from tests.fakes.anthropic_server import CONTINUED, NO_ANSWER
from tests.fakes.control import FakeAnthropic

HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-6"
QUESTION = "How long can I stay in Bali on a B211A visa?"
VISA_TEXT = (
    "The B211A visit visa allows a stay of 60 days and can be extended twice, each time for 60 more days, "
    "at an immigration office in Bali."
)
SYSTEM = [{"type": "text", "text": "You are Zantara. Answer only from the sources."}]


def search_result(title: str, *texts: str, citations: bool = True) -> dict[str, Any]:
    return {
        "type": "search_result",
        "source": f"kb://{title.lower().replace(' ', '-')}",
        "title": title,
        "content": [{"type": "text", "text": text} for text in texts],
        "citations": {"enabled": citations},
    }


def grounded_messages(*sources: dict[str, Any], question: str = QUESTION) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [*sources, {"type": "text", "text": question}]}]


PLAIN = [{"role": "user", "content": "Hello"}]
# How soon the fake must record a client disconnect: long before anything else could have ended those
# exchanges (a 60 s first-token delay; 100 more deltas), short of what a busy machine adds (measured: < 1 ms).
PROMPT_S = 1.0


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeAnthropic) -> FakeAnthropic:
    fake_server.reset()
    return fake_server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        api_key="test-key", base_url=fake.base_url, max_retries=0, timeout=10.0
    ) as client:
        yield client


async def stream_deltas(
    client: anthropic.AsyncAnthropic, messages: list[dict[str, Any]] = PLAIN, **kwargs: Any
) -> tuple[list[str], Any]:
    """All text deltas of one streamed answer and the final message."""
    kwargs.setdefault("model", HAIKU)
    kwargs.setdefault("max_tokens", 1024)
    async with client.messages.stream(messages=messages, **kwargs) as stream:
        deltas = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    return deltas, final


def last(fake: FakeAnthropic) -> dict[str, Any]:
    return fake.requests()[-1]


# -- happy path --------------------------------------------------------------------------------------


async def test_default_answer_is_grounded_in_the_first_source(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    messages = grounded_messages(
        search_result("Visa Guide", VISA_TEXT, citations=False),
        search_result("Fees", "IDR 2.000.000", citations=False),
    )
    deltas, final = await stream_deltas(client, messages, system=SYSTEM)

    expected = f"According to Visa Guide [1], {VISA_TEXT[:100]}. See also [2]."
    assert "".join(deltas) == expected
    assert len(deltas) == -(-len(expected) // 16)  # 16-character deltas by default
    assert QUESTION not in expected
    assert final.content[0].text == expected
    assert final.content[0].citations is None  # citations off: one plain text block
    assert final.stop_reason == "end_turn"
    assert final.model == HAIKU
    assert final.id == "msg_1"
    assert final.usage.output_tokens == len(deltas)
    assert final.usage.input_tokens > 50
    assert final.usage.cache_read_input_tokens == 0
    assert final.usage.cache_creation_input_tokens == 0

    rec = last(fake)
    assert rec["outcome"] == "completed"
    assert rec["chunks_sent"] == len(deltas)
    assert rec["ended_at"] >= rec["started_at"]
    assert fake.stats()["active_streams"] == 0


async def test_answer_without_sources_and_with_a_document(client: anthropic.AsyncAnthropic) -> None:
    deltas, _ = await stream_deltas(client, [{"role": "user", "content": QUESTION}])
    assert "".join(deltas) == NO_ANSWER

    document = {
        "type": "document",
        "title": "KITAS Rules",
        "source": {"type": "text", "media_type": "text/plain", "data": "A KITAS is a limited stay permit."},
    }
    deltas, _ = await stream_deltas(client, grounded_messages(document))
    assert "".join(deltas) == "According to KITAS Rules [1], A KITAS is a limited stay permit.."


async def test_explicit_chunks_arrive_intact_as_separate_deltas(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    chunks = [
        "Selamat datang di Bali! Visa Anda berlaku 60 hari. ",
        "مرحبا بكم في بالي، ",
        "👩‍👩‍👧‍👦 👍🏽 🇮🇩 ",
        '\n\ndata: {"done":true}',
        "\r\nevent: message_stop\n\n",
        "",
        "end",
    ]
    fake.enqueue({"chunks": chunks})
    deltas, final = await stream_deltas(client)
    assert deltas == chunks
    assert final.content[0].text == "".join(chunks)
    assert final.usage.output_tokens == len(chunks)


async def test_usage_overrides_and_max_tokens_truncation(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue({"text": "x" * 100, "chunk_size": 10, "input_tokens": 5000, "cache_read_input_tokens": 4096})
    deltas, final = await stream_deltas(client, max_tokens=3)
    assert deltas == ["x" * 10] * 3
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 3
    assert final.usage.input_tokens == 5000
    assert final.usage.cache_read_input_tokens == 4096


async def test_huge_answer_without_delay(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue({"text": "Bali Zero. ", "repeat": 5000, "chunk_size": 11})
    deltas, final = await stream_deltas(client, max_tokens=100_000)
    assert len(deltas) == 5000
    assert set(deltas) == {"Bali Zero. "}
    assert final.usage.output_tokens == 5000


async def test_delays_and_a_short_stall(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue(
        {
            "text": "abcdefgh",
            "chunk_size": 2,
            "first_token_delay_ms": 150,
            "delay_ms": 40,
            "stall_after_chunks": 2,
            "stall_ms": 200,
        }
    )
    started = time.monotonic()
    arrivals: list[float] = []
    async with client.messages.stream(model=HAIKU, max_tokens=100, messages=PLAIN) as stream:
        async for _ in stream.text_stream:
            arrivals.append(time.monotonic() - started)
        final = await stream.get_final_message()
    assert final.content[0].text == "abcdefgh"  # the stream carries on after a finite stall
    # Lower bounds only (the server cannot send early; a busy client may read late):
    # first delta at 150 ms, next 40 ms later, then 40 ms + a 200 ms stall, then 40 ms.
    schedule = [0.15, 0.19, 0.43, 0.47]
    assert all(got >= due - 0.01 for got, due in zip(arrivals, schedule, strict=True)), arrivals
    assert last(fake)["outcome"] == "completed"


async def test_prefill_is_continued_not_repeated(client: anthropic.AsyncAnthropic) -> None:
    sources = grounded_messages(search_result("Visa Guide", VISA_TEXT))
    full = f"According to Visa Guide [1], {VISA_TEXT[:100]}."

    prefill = "According to Visa Guide"
    messages = [*sources, {"role": "assistant", "content": prefill}]
    deltas, final = await stream_deltas(client, messages)
    assert prefill + "".join(deltas) == full
    assert not "".join(deltas).startswith("According")
    assert "".join(block.text for block in final.content) == full[len(prefill) :]

    messages = [*sources, {"role": "assistant", "content": [{"type": "text", "text": "Something else"}]}]
    deltas, _ = await stream_deltas(client, messages)
    assert "".join(deltas) == CONTINUED


async def test_request_record_carries_body_and_headers(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    messages = grounded_messages(search_result("Visa Guide", VISA_TEXT))
    await stream_deltas(client, messages, model=SONNET, system=SYSTEM, max_tokens=512)
    rec = last(fake)
    assert rec["n"] == 1
    assert rec["model"] == SONNET
    assert rec["status"] == 200
    assert rec["stream"] is True
    assert rec["body"]["model"] == SONNET
    assert rec["body"]["system"] == SYSTEM
    assert rec["body"]["messages"] == messages
    assert rec["body"]["max_tokens"] == 512
    assert rec["headers"]["authorization"] == "Bearer test-key"
    assert rec["headers"]["anthropic-version"]
    assert rec["headers"]["x-stainless-retry-count"] == "0"
    assert rec["chunks_sent_after_disconnect"] == 0


async def test_non_streaming_and_env_base_url(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    async with anthropic.AsyncAnthropic(api_key="test-key", max_retries=0) as client:
        message = await client.messages.create(model=HAIKU, max_tokens=64, messages=PLAIN)
    assert message.content[0].text == NO_ANSWER
    assert message.stop_reason == "end_turn"
    rec = last(fake)
    assert rec["stream"] is False
    assert rec["outcome"] == "completed"


async def test_auth_is_required_and_x_api_key_is_accepted(fake: FakeAnthropic) -> None:
    body = {"model": HAIKU, "max_tokens": 16, "messages": PLAIN, "stream": True}
    async with httpx.AsyncClient(base_url=fake.base_url, trust_env=False) as http:
        no_key = await http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
        assert no_key.status_code == 401
        assert no_key.json()["error"]["type"] == "authentication_error"
        assert no_key.json()["request_id"].startswith("req_")

        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        ok = await http.post("/v1/messages", json=body, headers=headers)
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("text/event-stream")
        events = [line.split(": ", 1)[1] for line in ok.text.splitlines() if line.startswith("event:")]
        assert events[:3] == ["message_start", "content_block_start", "ping"]
        assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert set(events[3:-3]) == {"content_block_delta"}
    assert [r["outcome"] for r in fake.requests()] == ["http_error", "completed"]


# -- match_model ---------------------------------------------------------------------------------------


async def test_match_model_scenarios_are_taken_by_their_model_only(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.set_default(text="default")
    fake.enqueue({"match_model": SONNET, "text": "for sonnet"}, {"text": "for anyone"})
    haiku, _ = await stream_deltas(client, model=HAIKU)
    sonnet, _ = await stream_deltas(client, model=SONNET)
    again, _ = await stream_deltas(client, model=SONNET)
    assert ["".join(haiku), "".join(sonnet), "".join(again)] == ["for anyone", "for sonnet", "default"]
    assert [r["model"] for r in fake.requests(since=2)] == [SONNET]
    assert fake.stats()["queued"] == 0


# -- HTTP errors ----------------------------------------------------------------------------------------


async def test_429_with_retry_after(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue({"status": 429, "retry_after": 7})
    with pytest.raises(anthropic.RateLimitError) as info:
        await stream_deltas(client)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert info.value.request_id == last(fake)["request_id"]
    assert last(fake)["outcome"] == "http_error"


async def test_sdk_retry_honours_retry_after_ms(fake: FakeAnthropic) -> None:
    fake.enqueue({"status": 529, "retry_after_ms": 50, "retry_after": 30})
    async with anthropic.AsyncAnthropic(api_key="test-key", base_url=fake.base_url, max_retries=1) as client:
        started = time.monotonic()
        deltas, _ = await stream_deltas(client)
        elapsed = time.monotonic() - started
    assert "".join(deltas) == NO_ANSWER
    assert elapsed < 5  # retry-after-ms (50 ms) wins over retry-after (30 s)
    assert [r["headers"]["x-stainless-retry-count"] for r in fake.requests()] == ["0", "1"]


async def test_x_should_retry_false_stops_retries(fake: FakeAnthropic) -> None:
    fake.enqueue({"status": 500, "should_retry": False})
    async with anthropic.AsyncAnthropic(api_key="test-key", base_url=fake.base_url, max_retries=2) as client:
        with pytest.raises(anthropic.InternalServerError):
            await stream_deltas(client)
    assert len(fake.requests()) == 1


@pytest.mark.parametrize(
    ("status", "exc_type", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.ContentTooLargeError, "request_too_large"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_http_error_statuses(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, status: int, exc_type: type, error_type: str
) -> None:
    fake.enqueue({"status": status})
    with pytest.raises(exc_type) as info:
        await stream_deltas(client)
    assert info.value.status_code == status
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == error_type


# -- failures after the stream has started ---------------------------------------------------------


async def test_error_event_after_partial_text(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue({"text": "abcdefghij", "chunk_size": 2, "error_after_chunks": 3})
    got: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(model=HAIKU, max_tokens=100, messages=PLAIN) as stream:
            async for text in stream.text_stream:
                got.append(text)
    assert got == ["ab", "cd", "ef"]
    assert info.value.status_code == 200  # the 200 had already been sent
    assert info.value.body["error"]["type"] == "overloaded_error"
    assert last(fake)["outcome"] == "error_event"


@pytest.mark.parametrize(
    ("mode", "exc_type"), [("close", httpx2.RemoteProtocolError), ("reset", httpx2.ReadError)]
)
async def test_cut_connection_is_not_a_clean_end(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, mode: str, exc_type: type
) -> None:
    fake.enqueue({"text": "abcdefghij", "chunk_size": 2, "cut_after_chunks": 2, "cut_mode": mode})
    got: list[str] = []
    completed = False
    # The SDK lets the raw transport error through: it is not wrapped in anthropic.APIConnectionError.
    with pytest.raises(exc_type):
        async with client.messages.stream(model=HAIKU, max_tokens=100, messages=PLAIN) as stream:
            async for text in stream.text_stream:
                got.append(text)
            completed = True
    assert not completed
    assert got == ["ab", "cd"]
    rec = last(fake)
    assert (rec["outcome"], rec["chunks_sent"]) == ("cut", 2)


# -- the client leaves ------------------------------------------------------------------------------------


async def test_stall_client_timeout_is_seen_as_disconnect(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue({"text": "abcdefghij", "chunk_size": 2, "stall_after_chunks": 2})
    got: list[str] = []

    async def consume() -> None:
        async with client.messages.stream(model=HAIKU, max_tokens=100, messages=PLAIN) as stream:
            async for text in stream.text_stream:
                got.append(text)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(consume(), timeout=0.5)
    closed_at = time.time()
    assert got == ["ab", "cd"]
    records = await fake.wait_for_async(lambda rs: rs[-1]["outcome"] == "client_disconnected", timeout=1.0)
    rec = records[-1]
    assert rec["chunks_sent"] == 2
    assert rec["ended_at"] - closed_at < PROMPT_S
    assert fake.stats()["active_streams"] == 0


async def test_leaving_mid_stream_is_recorded_promptly(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue({"text": "x" * 400, "chunk_size": 4, "delay_ms": 20})
    got: list[str] = []
    async with client.messages.stream(model=HAIKU, max_tokens=1000, messages=PLAIN) as stream:
        async for text in stream.text_stream:
            got.append(text)
            if len(got) == 3:
                assert fake.stats()["active_streams"] == 1
                assert last(fake)["outcome"] == "in_progress"
                break
    closed_at = time.time()
    rec = fake.wait_for(lambda rs: rs[-1]["outcome"] == "client_disconnected", timeout=1.0)[-1]
    assert rec["ended_at"] - closed_at < PROMPT_S
    assert 3 <= rec["chunks_sent"] < 25
    assert rec["chunks_sent_after_disconnect"] == 0
    assert fake.stats()["active_streams"] == 0
    await asyncio.sleep(0.1)  # nothing more is sent after the disconnect
    assert last(fake)["chunks_sent"] == rec["chunks_sent"]


async def test_leaving_during_first_token_delay(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue({"first_token_delay_ms": 60_000})
    async with client.messages.stream(model=HAIKU, max_tokens=100, messages=PLAIN) as stream:
        assert stream.request_id == "req_fake00000000000000000001"  # headers arrive before the first token
    closed_at = time.time()
    records = await fake.wait_for_async(lambda rs: rs[-1]["outcome"] == "client_disconnected", timeout=1.0)
    assert records[-1]["ended_at"] - closed_at < PROMPT_S
    assert records[-1]["chunks_sent"] == 0


# -- soak-test faults -----------------------------------------------------------------------------------


async def test_random_faults_are_deterministic_per_seed(fake: FakeAnthropic) -> None:
    spec = {"seed": 42, "p_status_529": 0.25, "p_error_event": 0.25, "p_cut": 0.25, "p_stall": 0.0}

    async def run_batch() -> list[tuple[str | None, str]]:
        fake.reset()
        fake.set_default(text="abcdefghijklmnop", chunk_size=2, random=spec)
        async with anthropic.AsyncAnthropic(api_key="k", base_url=fake.base_url, max_retries=0) as client:
            for _ in range(16):
                with contextlib.suppress(anthropic.APIStatusError, httpx2.TransportError):
                    await stream_deltas(client)
        return [(r["fault"], r["outcome"]) for r in fake.requests()]

    first = await run_batch()
    assert first == await run_batch()
    expected_outcome = {
        None: "completed",
        "status_529": "http_error",
        "error_event": "error_event",
        "cut": "cut",
    }
    assert all(outcome == expected_outcome[fault] for fault, outcome in first)
    assert len({fault for fault, _ in first}) >= 3


async def test_unknown_scenario_fields_are_rejected(fake: FakeAnthropic) -> None:
    with pytest.raises(RuntimeError, match="unknown scenario field"):
        fake.enqueue({"stall_after_chunk": 3})


# -- the rules of the 4.6 generation and later ----------------------------------------------------------

# Anthropic's migration guide: "Prefilling assistant messages returns a 400 error on Claude 4.6 models";
# the SDK's own model list (anthropic 2.12, types/model.py) names these ids.
REFUSE_PREFILL = [
    "claude-sonnet-4-6",
    "claude-opus-4-6",
    "claude-opus-4-7",
    "claude-opus-4-8",
    "claude-sonnet-5",
    "claude-opus-5",
    "claude-sonnet-5-5",
    "claude-haiku-5-5",
    "claude-fable-5-1",
]
ACCEPT_PREFILL = [
    "claude-haiku-4-5",
    "claude-haiku-4-5-20251001",
    "claude-opus-4-5",
    "claude-opus-4-5-20251101",
]


def test_model_generations_are_read_from_every_id_shape() -> None:
    assert model_generation("claude-haiku-4-5-20251001") == (4, 5)
    assert model_generation("claude-sonnet-4-6") == (4, 6)
    assert model_generation("claude-sonnet-5") == (5, 0)
    assert model_generation("claude-haiku-5-5") == (5, 5)
    assert model_generation("claude-opus-4-20250514") == (4, 0)
    assert model_generation("claude-3-5-haiku-20241022") == (3, 5)
    assert model_generation("claude-3-haiku-20240307") == (3, 0)
    assert model_generation("gpt-4o") is None
    assert all(refuses_prefill(m) for m in REFUSE_PREFILL)
    assert not any(refuses_prefill(m) for m in ACCEPT_PREFILL)
    assert refuses_prefill("claude-next")  # an id of no known shape gets the strict rule


@pytest.mark.parametrize("model", REFUSE_PREFILL)
async def test_a_prefill_is_refused_by_the_4_6_generation_and_later(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, model: str
) -> None:
    messages = [
        *grounded_messages(search_result("Visa Guide", VISA_TEXT)),
        {"role": "assistant", "content": "Acc"},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        await stream_deltas(client, messages, model=model)
    assert info.value.status_code == 400
    assert info.value.body["type"] == "error"
    assert info.value.body["error"] == {"type": "invalid_request_error", "message": PREFILL_REFUSED}
    assert last(fake)["outcome"] == "http_error"


@pytest.mark.parametrize("model", ACCEPT_PREFILL)
async def test_a_prefill_is_continued_by_older_models_unless_it_ends_in_whitespace(
    client: anthropic.AsyncAnthropic, model: str
) -> None:
    sources = grounded_messages(search_result("Visa Guide", VISA_TEXT))
    deltas, _ = await stream_deltas(
        client, [*sources, {"role": "assistant", "content": "According to"}], model=model
    )
    assert "".join(deltas).startswith(" Visa Guide [1], The B211A")

    with pytest.raises(anthropic.BadRequestError) as info:
        await stream_deltas(
            client, [*sources, {"role": "assistant", "content": "According to "}], model=model
        )
    assert info.value.body["error"]["message"] == TRAILING_WHITESPACE


async def test_an_empty_text_block_in_a_search_result_is_refused(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await stream_deltas(client, grounded_messages(search_result("Visa Guide", VISA_TEXT, "")))
    assert info.value.body["error"] == {"type": "invalid_request_error", "message": EMPTY_TEXT_BLOCK}


def continuation(messages: list[dict[str, Any]], so_far: str) -> list[dict[str, Any]]:
    """The request shape of the answer chain's continuation: the answer so far in the last user turn."""
    *earlier, last_turn = messages
    note = f"Your answer was cut off. The user has:\n{SO_FAR_OPEN}{so_far}{SO_FAR_CLOSE}\nContinue it."
    return [*earlier, {**last_turn, "content": [*last_turn["content"], {"type": "text", "text": note}]}]


@pytest.mark.parametrize("model", [SONNET, "claude-sonnet-5", HAIKU])
async def test_the_answer_so_far_in_the_last_user_turn_is_continued_on_every_model(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, model: str
) -> None:
    messages = grounded_messages(search_result("Visa Guide", VISA_TEXT, citations=False))
    full = f"According to Visa Guide [1], {VISA_TEXT[:100]}."
    so_far = full[:37]

    deltas, _ = await stream_deltas(client, continuation(messages, so_far), model=model)
    assert so_far + "".join(deltas) == full

    fake.enqueue({"restate": 12})  # a model that repeats the last words it was given
    deltas, _ = await stream_deltas(client, continuation(messages, so_far), model=model)
    assert "".join(deltas) == full[37 - 12 :]

    deltas, _ = await stream_deltas(client, continuation(messages, "Something else"), model=model)
    assert "".join(deltas) == CONTINUED
    assert [r["status"] for r in fake.requests()] == [200, 200, 200]


# -- citations, as the API streams them ------------------------------------------------------------------


async def test_cited_spans_arrive_in_their_own_blocks_with_the_sdks_citation_types(
    client: anthropic.AsyncAnthropic,
) -> None:
    sentences = ["The B211A visit visa allows a stay of 60 days. ", "It can be extended twice."]
    messages = grounded_messages(
        search_result("Visa Guide", *sentences), search_result("Fees", "IDR 2.000.000")
    )
    # `messages.create(stream=True)` validates every event against the SDK's union of event models.
    stream = await client.messages.create(model=HAIKU, max_tokens=1024, messages=messages, stream=True)
    events = [event async for event in stream]

    kinds = [(e.type, getattr(getattr(e, "delta", None), "type", None)) for e in events]
    starts = [e.index for e in events if isinstance(e, anthropic.types.RawContentBlockStartEvent)]
    stops = [e.index for e in events if isinstance(e, anthropic.types.RawContentBlockStopEvent)]
    assert starts == stops == [0, 1, 2, 3]  # uncited, cited, uncited, cited: a block around each cited span
    deltas = [e for e in events if isinstance(e, anthropic.types.RawContentBlockDeltaEvent)]
    cited = [e for e in deltas if isinstance(e.delta, anthropic.types.CitationsDelta)]
    assert [e.index for e in cited] == [1, 3]
    for event in cited:
        location = event.delta.citation
        assert isinstance(location, anthropic.types.CitationsSearchResultLocation)
        block_texts = [
            d.delta.text for d in deltas if d.index == event.index and d.delta.type == "text_delta"
        ]
        # The citation comes before the cited text of its block.
        assert deltas.index(event) < min(
            i for i, d in enumerate(deltas) if d.index == event.index and d.delta.type == "text_delta"
        )
        assert block_texts
    first, second = (e.delta.citation for e in cited)
    assert (first.search_result_index, first.start_block_index, first.end_block_index) == (0, 0, 1)
    assert (
        first.cited_text == sentences[0] and first.source == "kb://visa-guide" and first.title == "Visa Guide"
    )
    assert (second.search_result_index, second.cited_text) == (1, "IDR 2.000.000")
    assert kinds[-3:] == [("content_block_stop", None), ("message_delta", None), ("message_stop", None)]


async def test_the_sdks_stream_helper_rebuilds_cited_blocks(client: anthropic.AsyncAnthropic) -> None:
    messages = grounded_messages(search_result("Visa Guide", VISA_TEXT))
    async with client.messages.stream(model=HAIKU, max_tokens=1024, messages=messages) as stream:
        seen = [event async for event in stream]
        final = await stream.get_final_message()
    assert [b.text for b in final.content] == ["According to Visa Guide [1], ", VISA_TEXT[:100].rstrip(), "."]
    assert final.content[0].citations is None and final.content[2].citations is None
    (location,) = final.content[1].citations or []
    assert isinstance(location, anthropic.types.CitationsSearchResultLocation)
    assert location.cited_text == VISA_TEXT
    assert [e.type for e in seen].count("citation") == 1


async def test_segments_scenario_cites_any_block_range(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(
        {"segments": [{"text": "Sixty days"}, {"text": " twice", "cite": [[0, 0, 2]]}], "chunk_size": 4}
    )
    messages = grounded_messages(search_result("Visa Guide", "One. ", "Two."))
    async with client.messages.stream(model=HAIKU, max_tokens=1024, messages=messages) as stream:
        deltas = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert deltas == ["Sixt", "y da", "ys", " twi", "ce"]  # deltas never span two blocks
    (location,) = final.content[1].citations or []
    assert (location.cited_text, location.end_block_index) == ("One. Two.", 2)


async def test_the_non_streamed_answer_carries_the_same_citations(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(
        model=HAIKU, max_tokens=1024, messages=grounded_messages(search_result("Visa Guide", VISA_TEXT))
    )
    assert isinstance(message.content[1], anthropic.types.TextBlock)
    (location,) = message.content[1].citations or []
    assert isinstance(location, anthropic.types.CitationsSearchResultLocation)


async def test_a_thinking_block_may_come_before_the_text(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue({"thinking": True})
    messages = grounded_messages(search_result("Visa Guide", VISA_TEXT))
    async with client.messages.stream(model="claude-haiku-5-5", max_tokens=1024, messages=messages) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == f"According to Visa Guide [1], {VISA_TEXT[:100]}."
    assert final.content[0].type == "thinking"
    assert [b.type for b in final.content[1:]] == ["text", "text", "text"]


# -- the operator's problems ------------------------------------------------------------------------------


async def test_billing_and_spend_cap_errors(fake: FakeAnthropic, client: anthropic.AsyncAnthropic) -> None:
    fake.enqueue({"status": 402}, {"status": 429, "error_code": "enforced_spend_limit_reached"})
    with pytest.raises(anthropic.APIStatusError) as info:
        await stream_deltas(client)
    assert info.value.status_code == 402 and info.value.body["error"]["type"] == "billing_error"
    with pytest.raises(anthropic.RateLimitError) as limited:
        await stream_deltas(client)
    assert limited.value.body["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
    assert "retry-after" not in limited.value.response.headers
