"""The answer chain in-process (`Answerer` + `Claude` + the real SDK from `make_client`) against the fake
Claude server: the normal answer and its citations, retry, fallback model, errors that need an operator, no
key, a failure after some text continued on every generation of model, the circuit breaker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.anthropic_server import default_answer
from tests.fakes.control import FakeAnthropic
from zantara_rag.domain import (
    EXTRACTIVE,
    AnswerMeta,
    AnswerPiece,
    ChatRequest,
    Citation,
    Passage,
    Span,
    chunk_text,
)
from zantara_rag.errors import UpstreamInterrupted
from zantara_rag.generation.answerer import Answerer
from zantara_rag.generation.claude import Claude, make_client
from zantara_rag.generation.extractive import DECLINED, LABEL_EN, compose, compose_spans
from zantara_rag.generation.prompt import build_messages
from zantara_rag.settings import Settings

PRIMARY = "claude-haiku-4-5"
FALLBACK = "claude-sonnet-4-6"
QUESTION = ChatRequest(query="How much does the test visa cost?")
PASSAGES = [
    Passage(
        number=1,
        title="Test visa",
        url="https://balizero.com/kb/test",
        section="Fees",
        doc="kb/test.md",
        similarity=0.82,
        chunks=[chunk_text("Test visa", "Fees", "The test visa costs IDR 2,000,000 and lasts 60 days.")],
    ),
    Passage(
        number=2,
        title="Sponsors",
        url=None,
        section=None,
        doc="kb/sponsors.md",
        similarity=0.61,
        chunks=[chunk_text("Sponsors", "", "A local sponsor is required for every visit visa.")],
    ),
]
# What the fake answers for this question and these passages when no scenario says otherwise.
GROUNDED = default_answer({"messages": build_messages(QUESTION, PASSAGES)})


def settings(base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "anthropic_api_key": "sk-ant-test-0123456789",
        "anthropic_base_url": base_url,
        "anthropic_model": PRIMARY,
        "anthropic_fallback_model": FALLBACK,
        "upstream_retry_after_cap": 0.2,
        "upstream_first_token_timeout": 2,
        "upstream_idle_timeout": 2,
        "extractive_chunk_delay_ms": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the environment of whoever runs the tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
async def answerer(claude: FakeAnthropic) -> AsyncIterator[Answerer]:
    s = settings(claude.base_url)
    answerer = Answerer(s, Claude(s, make_client(s)))
    try:
        yield answerer
    finally:
        await answerer.aclose()


async def collect(answerer: Answerer, meta: AnswerMeta) -> list[str]:
    """The answer's text deltas (its `Span`s left out)."""
    return [piece for piece in await collect_pieces(answerer, meta) if isinstance(piece, str)]


async def collect_pieces(answerer: Answerer, meta: AnswerMeta | None = None) -> list[AnswerPiece]:
    return [piece async for piece in answerer.answer(QUESTION, PASSAGES, None, meta or AnswerMeta())]


def test_the_default_grounded_answer_cites_the_first_passage() -> None:
    # The fixture the other tests compare with: guard it against a change in the fake.
    assert GROUNDED.startswith("According to [1] Test visa [1], The test visa costs IDR 2,000,000")
    assert GROUNDED.endswith(" See also [2].")


async def test_a_normal_answer_is_claudes_text_from_the_primary_model(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    meta = AnswerMeta()
    deltas = await collect(answerer, meta)

    assert "".join(deltas) == GROUNDED
    assert len(deltas) > 1  # streamed in pieces, not in one
    assert (meta.model, meta.degraded) == (PRIMARY, False)
    assert meta.upstream_attempts == 1
    assert meta.input_tokens > 0
    assert meta.output_tokens == len(deltas)  # the fake counts one token per delta
    (request,) = claude.requests()
    assert request["model"] == PRIMARY and request["outcome"] == "completed"
    credentials = request["headers"].get("x-api-key") or request["headers"].get("authorization", "")
    assert credentials.endswith("sk-ant-test-0123456789")  # the key from the settings, either header


async def test_an_overloaded_first_attempt_is_retried_on_the_primary_model(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    claude.enqueue({"status": 529, "retry_after": 30})  # the cap (0.2 s) bounds the wait
    meta = AnswerMeta()
    deltas = await collect(answerer, meta)

    assert "".join(deltas) == GROUNDED
    assert [r["model"] for r in claude.requests()] == [PRIMARY, PRIMARY]
    assert (meta.model, meta.degraded) == (PRIMARY, False)
    assert meta.upstream_attempts == 2


async def test_after_two_retryable_failures_the_fallback_model_answers_degraded(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    claude.enqueue({"status": 529}, {"error_after_chunks": 0})
    meta = AnswerMeta()
    deltas = await collect(answerer, meta)

    assert "".join(deltas) == GROUNDED
    assert [r["model"] for r in claude.requests()] == [PRIMARY, PRIMARY, FALLBACK]
    assert (meta.model, meta.degraded) == (FALLBACK, True)


async def test_when_every_model_fails_the_answer_is_extractive(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    claude.enqueue({"status": 529}, {"status": 500}, {"status": 529})
    meta = AnswerMeta()
    answer = "".join(await collect(answerer, meta))

    assert answer.startswith(LABEL_EN)
    assert "IDR 2,000,000" in answer and "[1]" in answer
    assert len(claude.requests()) == 3
    assert (meta.model, meta.degraded) == (EXTRACTIVE, True)


async def test_a_fatal_401_makes_one_call_then_gives_the_labelled_extractive_answer(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    claude.enqueue({"status": 401})
    meta = AnswerMeta()
    answer = "".join(await collect(answerer, meta))

    assert len(claude.requests()) == 1
    assert answer.startswith(LABEL_EN)
    assert "- The test visa costs IDR 2,000,000 and lasts 60 days. [1]" in answer
    assert (meta.model, meta.degraded) == (EXTRACTIVE, True)


async def test_without_an_api_key_the_answer_is_extractive_and_nothing_is_called(
    claude: FakeAnthropic,
) -> None:
    s = settings(claude.base_url, anthropic_api_key=None)
    assert make_client(s) is None
    answerer = Answerer(s, None)
    meta = AnswerMeta()
    answer = "".join(await collect(answerer, meta))
    await answerer.aclose()

    assert answer.startswith(LABEL_EN)
    assert (meta.model, meta.degraded) == (EXTRACTIVE, False)  # by choice, not a fallback
    assert meta.upstream_attempts == 0
    assert claude.requests() == []


async def test_a_failure_after_some_text_continues_on_the_fallback_without_repeating_it(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    head = ["According ", "to "]  # the cut falls after a space, which the continuation must not double
    claude.enqueue({"chunks": [*head, GROUNDED[len("".join(head)) :]], "cut_after_chunks": 2})
    meta = AnswerMeta()
    deltas = await collect(answerer, meta)

    assert deltas[:2] == head
    assert "".join(deltas) == GROUNDED
    assert "".join(deltas).count("According to") == 1
    assert [r["model"] for r in claude.requests()] == [PRIMARY, FALLBACK]
    assert claude.requests()[0]["outcome"] == "cut"
    assert (meta.model, meta.degraded) == (FALLBACK, True)


async def test_when_the_continuation_fails_too_the_text_sent_stands_and_the_stream_is_interrupted(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    claude.enqueue({"chunks": ["According ", "to ", "the rest."], "cut_after_chunks": 2}, {"status": 529})
    meta = AnswerMeta()
    deltas: list[str] = []
    with pytest.raises(UpstreamInterrupted):
        async for delta in answerer.answer(QUESTION, PASSAGES, None, meta):
            deltas.append(delta)

    assert deltas == ["According ", "to "]
    assert len(claude.requests()) == 2


# --- Claude's citations


async def test_claudes_citations_become_spans_before_the_text_they_support(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    pieces = await collect_pieces(answerer)

    sentence = "The test visa costs IDR 2,000,000 and lasts 60 days."
    spans = [(i, p) for i, p in enumerate(pieces) if isinstance(p, Span)]
    assert [span.citations for _, span in spans] == [
        (Citation(1, sentence),),  # the claim from passage [1]...
        (),  # ...then uncited text...
        (Citation(2, "A local sponsor is required for every visit visa."),),  # ...then passage [2]
    ]
    claim_at = spans[0][0]
    assert "".join(p for p in pieces[claim_at:] if isinstance(p, str)).startswith(sentence[:20])
    assert "".join(p for p in pieces if isinstance(p, str)) == GROUNDED
    # What Claude was sent: citations on every passage, each cut into sentence-sized blocks.
    (request,) = claude.requests()
    results = [b for b in request["body"]["messages"][-1]["content"] if b["type"] == "search_result"]
    assert [r["title"] for r in results] == ["[1] Test visa", "[2] Sponsors"]
    assert all(r["citations"] == {"enabled": True} for r in results)


async def test_a_thinking_block_before_the_text_changes_nothing(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    claude.enqueue({"thinking": True})
    pieces = await collect_pieces(answerer)
    assert "".join(p for p in pieces if isinstance(p, str)) == GROUNDED
    assert sum(isinstance(p, Span) for p in pieces) == 3


async def test_thinking_longer_than_the_first_token_timeout_is_not_a_stall(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    # The thinking block is open for 3 s; UPSTREAM_FIRST_TOKEN_TIMEOUT is 2 s in these settings.
    claude.enqueue({"thinking": True, "first_token_delay_ms": 3000})
    meta = AnswerMeta()
    assert "".join(await collect(answerer, meta)) == GROUNDED
    assert len(claude.requests()) == 1 and (meta.model, meta.degraded) == (PRIMARY, False)


async def test_silence_before_the_first_token_without_thinking_is_still_cut(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    claude.enqueue({"first_token_delay_ms": 3000})
    meta = AnswerMeta()
    assert "".join(await collect(answerer, meta)) == GROUNDED  # from the retry
    assert [r["outcome"] for r in claude.requests()] == ["client_disconnected", "completed"]


async def test_citations_the_chain_cannot_place_are_dropped(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    out_of_range = {
        "type": "search_result_location",
        "cited_text": "Invented.",
        "search_result_index": 5,  # there are two passages
        "source": "kb/none.md",
        "title": "[6] None",
        "start_block_index": 0,
        "end_block_index": 1,
    }
    char_location = {  # a document citation, not a search result's
        "type": "char_location",
        "cited_text": "Some text.",
        "document_index": 0,
        "document_title": None,
        "start_char_index": 0,
        "end_char_index": 10,
    }
    claude.enqueue(
        {
            "segments": [
                {"text": "Plain. "},
                {"text": "Placed.", "cite": [[1, 0, 1], out_of_range]},
                {"text": " Unplaced.", "cite": [char_location]},
            ]
        }
    )
    pieces = await collect_pieces(answerer)
    assert pieces == [
        "Plain. ",
        Span((Citation(2, "A local sponsor is required for every visit visa."),)),
        "Placed.",
        Span(),
        " Unplaced.",
    ]


async def test_the_extractive_stream_is_the_composed_answer_with_a_span_per_quoted_line() -> None:
    answerer = Answerer(settings("http://127.0.0.1:9", anthropic_api_key=None), None)
    pieces = await collect_pieces(answerer)
    spans = compose_spans(QUESTION.query, PASSAGES)
    # Every character arrives, the label's blank line included.
    assert "".join(p for p in pieces if isinstance(p, str)) == compose(QUESTION.query, PASSAGES)
    assert [p for p in pieces if isinstance(p, Span)] == [Span(cites) for _, cites in spans[1:]]
    assert spans[0] == (LABEL_EN + "\n\n", ())
    for text, (citation,) in spans[1:]:
        assert citation.cited_text in text and text.rstrip().endswith(f"[{citation.number}]")


# --- a request the safety classifiers decline (stop_reason "refusal", no server-side fallback)


async def test_a_declined_request_is_asked_once_of_the_fallback_model(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    claude.enqueue({"match_model": PRIMARY, "chunks": [], "stop_reason": "refusal"})
    meta = AnswerMeta()
    deltas = await collect(answerer, meta)

    assert "".join(deltas) == GROUNDED
    assert [r["model"] for r in claude.requests()] == [PRIMARY, FALLBACK]  # no retry of the same model
    assert (meta.model, meta.degraded) == (FALLBACK, True)
    assert answerer.breakers[PRIMARY].state == "closed"  # a decline is not a failure of the model


async def test_declined_everywhere_the_answer_is_a_short_refusal_in_the_question_s_language(
    claude: FakeAnthropic,
) -> None:
    declined = {"chunks": [], "stop_reason": "refusal"}
    claude.enqueue(declined, declined)
    s = settings(claude.base_url)
    answerer = Answerer(s, Claude(s, make_client(s)))
    question = ChatRequest(query="Bagaimana cara memalsukan visa?")
    try:
        meta = AnswerMeta()
        pieces = [p async for p in answerer.answer(question, PASSAGES, None, meta)]
        text = "".join(p for p in pieces if isinstance(p, str))
    finally:
        await answerer.aclose()
    assert text == DECLINED["id"]
    assert len(claude.requests()) == 2 and meta.model == FALLBACK


async def test_a_decline_after_some_text_ends_the_answer_there(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    claude.enqueue({"chunks": ["The test visa ", "costs"], "stop_reason": "refusal"})
    meta = AnswerMeta()
    deltas = await collect(answerer, meta)

    assert "".join(deltas) == "The test visa costs"
    assert len(claude.requests()) == 1  # nothing to continue: the model chose to stop
    assert (meta.model, meta.degraded) == (PRIMARY, False)


async def test_a_declined_continuation_leaves_the_text_already_sent_alone(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    claude.enqueue(
        {"match_model": PRIMARY, "chunks": ["According to ", "the ", "fee"], "cut_after_chunks": 2},
        {"match_model": FALLBACK, "chunks": [], "stop_reason": "refusal"},
    )
    meta = AnswerMeta()
    text = "".join(await collect(answerer, meta))

    assert text == "According to the "  # no refusal glued onto the answer
    assert [r["model"] for r in claude.requests()] == [PRIMARY, FALLBACK]
    assert (meta.model, meta.degraded) == (FALLBACK, True)


async def test_a_decline_with_the_fallback_s_breaker_open_is_still_a_refusal(
    answerer: Answerer, claude: FakeAnthropic
) -> None:
    fallback = answerer.breakers[FALLBACK]
    for _ in range(answerer.settings.upstream_breaker_failures):
        fallback.failure("http_529")
    assert fallback.state == "open"
    claude.enqueue({"match_model": PRIMARY, "chunks": [], "stop_reason": "refusal"})
    meta = AnswerMeta()
    text = "".join(await collect(answerer, meta))

    assert text == DECLINED["en"]  # not the extractive answer's passages
    assert [r["model"] for r in claude.requests()] == [PRIMARY]
    assert meta.model == PRIMARY
