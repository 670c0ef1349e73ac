"""Property-based tests (hypothesis) of the request parser and the event encoder.

- Any input to `parse_chat` yields a valid `ChatRequest` or an `InvalidRequest`, never another exception.
- Any raw query string yields nothing or an `InvalidRequest` from `check_request_target`.
- Any text, as a text event encoded by FastAPI's SSE encoder, is read back by a spec-compliant SSE parser
  (httpx-sse, fed in arbitrary chunks) as exactly one event with the same text.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
from fastapi.sse import format_sse_event
from httpx_sse import EventSource
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zantara_rag.domain import ChatRequest
from zantara_rag.errors import InvalidRequest
from zantara_rag.events import TextEvent, clean_text
from zantara_rag.http.parsing import check_request_target, parse_chat
from zantara_rag.settings import Settings

LIMITS = Settings(
    max_query_chars=200, max_history_turns=4, max_history_chars=300, max_history_param_bytes=2000
)
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

any_text = st.text(st.characters(codec=None), max_size=300)  # surrogates, controls, astral, everything
turn = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "", 3]),
        "content": st.one_of(any_text, st.integers()),
    }
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
histories = st.one_of(
    st.none(),
    any_text,
    st.lists(turn, max_size=8).map(json.dumps),
    json_values.map(json.dumps),
    st.sampled_from(
        ["", "null", "undefined", "[]", "[" * 5000, "{}", '[{"role":"user","content":"\\ud800"}]']
    ),
)
emails = st.one_of(st.none(), any_text, st.emails().map(str), st.sampled_from(["undefined", "null", "a@b"]))


@EXAMPLES
@given(query=st.one_of(st.none(), any_text), user_email=emails, history=histories)
def test_parse_chat_returns_a_valid_request_or_refuses_cleanly(
    query: str | None, user_email: str | None, history: str | None
) -> None:
    try:
        chat = parse_chat(query, user_email, history, LIMITS)
    except InvalidRequest as exc:
        assert exc.code.startswith("invalid_") or exc.code == "query_too_long"
        assert exc.message and 400 <= exc.status < 500
        return
    assert isinstance(chat, ChatRequest)
    assert chat.query and chat.query == chat.query.strip() and len(chat.query) <= LIMITS.max_query_chars
    assert len(chat.history) <= LIMITS.max_history_turns
    assert sum(len(t.content) for t in chat.history) <= LIMITS.max_history_chars
    for text in (chat.query, chat.user_email or "", *(t.content for t in chat.history)):
        text.encode("utf-8")  # no lone surrogates: everything downstream can encode it
        assert all(ch in "\n\t" or unicodedata.category(ch) != "Cc" for ch in text)
    assert all(t.role in ("user", "assistant") and t.content for t in chat.history)


@EXAMPLES
@given(raw=st.binary(max_size=400))
def test_any_raw_query_string_is_accepted_or_refused_cleanly(raw: bytes) -> None:
    try:
        check_request_target(b"/bali-zero/chat-stream", raw, LIMITS.max_url_bytes)
    except InvalidRequest as exc:
        assert exc.code == "invalid_query"


@EXAMPLES
@given(params=st.dictionaries(st.text(min_size=1, max_size=20), any_text.map(clean_text), max_size=4))
def test_properly_encoded_utf8_is_never_refused(params: dict[str, str]) -> None:
    query_string = urlencode({clean_text(k): v for k, v in params.items()}).encode("ascii")
    check_request_target(b"/bali-zero/chat-stream", query_string, LIMITS.max_url_bytes)


def chunked(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        yield data[start:cut]
        start = cut
    yield data[start:]


@EXAMPLES
@given(text=any_text, sequence=st.integers(1, 10**6), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_any_text_is_one_well_formed_event_with_the_same_text(
    text: str, sequence: int, cuts: list[int]
) -> None:
    data = TextEvent(text=clean_text(text), sequence_number=sequence, timestamp=1.5).to_json()
    wire = format_sse_event(data_str=data, id=f"local-0123456789ab:{sequence}")
    assert wire.endswith(b"\n\n")
    # Split anywhere, even inside a UTF-8 sequence or between CR and LF, as a network would.
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=chunked(wire, cuts))
    (event,) = list(EventSource(response).iter_sse())
    assert event.event == "message" and event.id == f"local-0123456789ab:{sequence}"
    payload = json.loads(event.data)
    assert payload["text"] == clean_text(text) and payload["sequenceNumber"] == sequence
