"""The answer chain in-process (`Answerer` + `Claude` + the real SDK from `make_client`) against the fake
Claude server: the normal answer, retry, fallback model, fatal errors, no key, a failure after some text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.anthropic_server import default_answer
from tests.fakes.control import FakeAnthropic
from zantara_rag.domain import EXTRACTIVE, AnswerMeta, ChatRequest, Passage, chunk_text
from zantara_rag.errors import UpstreamInterrupted
from zantara_rag.generation.answerer import Answerer
from zantara_rag.generation.claude import Claude, make_client
from zantara_rag.generation.extractive import LABEL_EN
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
    return [delta async for delta in answerer.answer(QUESTION, PASSAGES, None, meta)]


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
