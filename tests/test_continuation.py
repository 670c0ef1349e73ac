"""Continuing an interrupted answer without an assistant prefill, on every generation of model.

The seam check on its own (`Seam`, `trim_seam`), then the answer chain in-process against the fake Claude
server, which refuses a prefill on 4.6+ models with the API's 400.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest

from tests.fakes.answers import answer_so_far, refuses_prefill
from tests.fakes.control import FakeAnthropic
from tests.test_answerer import GROUNDED, PASSAGES, QUESTION, collect, collect_pieces, settings
from zantara_rag.domain import AnswerMeta, AnswerPiece, Citation, Span
from zantara_rag.errors import UpstreamInterrupted
from zantara_rag.generation.answerer import Answerer
from zantara_rag.generation.claude import Claude, make_client
from zantara_rag.generation.continuation import Seam, continuation_messages, trim_seam
from zantara_rag.generation.prompt import build_messages

# --- the seam


@pytest.mark.parametrize(
    ("partial", "continuation", "joined"),
    [
        ("The fine is IDR 1,0", "00,000 per day.", "The fine is IDR 1,000,000 per day."),
        ("The fine is IDR 1,0", "IDR 1,000,000 per day.", "The fine is IDR 1,000,000 per day."),
        ("The fine is ", "is IDR 1,000,000.", "The fine is IDR 1,000,000."),
        ("The fine is ", " IDR 1,000,000.", "The fine is IDR 1,000,000."),
        ("The fine is", " IDR 1,000,000.", "The fine is IDR 1,000,000."),
        ("The fine is", "n't small.", "The fine isn't small."),
        ("It costs 10", "0 dollars.", "It costs 100 dollars."),  # a number, not a restated word
        ("Apply at (the", "the office).", "Apply at (the office)."),
        ("See the rules [1", "[1]. Then apply.", "See the rules [1]. Then apply."),
        ("Step one. Step two", "Step one. Step two. Step three.", "Step one. Step two. Step three."),
        ("Step one. Step two", "Step two. Step three.", "Step one. Step two. Step three."),
    ],
)
async def test_the_seam_neither_repeats_nor_loses_text(partial: str, continuation: str, joined: str) -> None:
    for size in (1, 3, 64):  # however the continuation is cut into deltas
        deltas = [continuation[i : i + size] for i in range(0, len(continuation), size)]
        kept = [p async for p in trim_seam(_pieces(deltas), partial) if isinstance(p, str)]
        assert partial + "".join(kept) == joined, (size, kept)


async def test_a_restart_of_a_long_answer_is_dropped_whole_and_the_rest_streams() -> None:
    partial = "Step one: register. " * 30  # 600 characters: more than any restated ending
    continuation = partial + "Step two: pay the fee."
    kept = [p async for p in trim_seam(_pieces([continuation[i : i + 7] for i in range(0, 700, 7)]), partial)]
    assert "".join(p for p in kept if isinstance(p, str)) == "Step two: pay the fee."


async def test_spans_stay_in_place_around_the_dropped_text() -> None:
    cite = Span((Citation(1, "IDR 1,000,000 per day."),))
    pieces: list[AnswerPiece] = [cite, "IDR 1,0", "00,000", Span(), " per day."]
    kept = [p async for p in trim_seam(_pieces(pieces), "The fine is IDR 1,0")]
    assert kept == [cite, "00,000", Span(), " per day."]


def test_a_seam_waits_while_the_start_could_still_be_a_restatement() -> None:
    seam = Seam("The fine is IDR 1,0")
    assert seam.cut("ID") is None and seam.cut("IDR 1,") is None
    assert seam.cut("IDR 1,000") == len("IDR 1,0")
    assert seam.cut("ID", final=True) == 0  # the continuation ended: nothing was restated after all
    assert seam.cut("Pay") == 0  # no restatement starts this way: released at once


def test_the_continuation_request_ends_with_a_user_turn_holding_the_answer_so_far() -> None:
    messages = build_messages(QUESTION, PASSAGES)
    continued = continuation_messages(messages, "According to ")
    assert continued[:-1] == messages[:-1]
    assert continued[-1]["role"] == "user"
    assert continued[-1]["content"][:-1] == messages[-1]["content"]
    assert answer_so_far({"messages": continued}) == "According to "
    assert "Continue the answer exactly where it stops" in continued[-1]["content"][-1]["text"]


async def _pieces(items: list[AnswerPiece]) -> AsyncGenerator[AnswerPiece, None]:
    for item in items:
        yield item


# --- the answer chain, on each generation of model

SETUPS = [
    pytest.param(
        "claude-haiku-4-5", "claude-sonnet-4-6", "claude-sonnet-4-6", id="fallback-claude-sonnet-4-6"
    ),
    pytest.param("claude-sonnet-5", None, "claude-sonnet-5", id="claude-sonnet-5-alone"),
    pytest.param("claude-haiku-4-5", None, "claude-haiku-4-5", id="pre-4.6-claude-haiku-4-5-alone"),
    pytest.param("claude-haiku-5-5", "claude-sonnet-5-5", "claude-sonnet-5-5", id="defaults-haiku-5-5"),
]


async def chain(claude: FakeAnthropic, primary: str, fallback: str | None, **overrides: Any) -> Answerer:
    s = settings(
        claude.base_url, anthropic_model=primary, anthropic_fallback_model=fallback or "", **overrides
    )
    return Answerer(s, Claude(s, make_client(s)))


@pytest.mark.parametrize(("primary", "fallback", "continues_on"), SETUPS)
@pytest.mark.parametrize("restate", [0, 9, 200], ids=["exact", "restates-the-last-words", "starts-again"])
async def test_a_broken_answer_is_continued_seamlessly_without_a_prefill(
    claude: FakeAnthropic, primary: str, fallback: str | None, continues_on: str, restate: int
) -> None:
    claude.enqueue(
        {"match_model": primary, "cut_after_chunks": 3}, {"match_model": continues_on, "restate": restate}
    )
    answerer = await chain(claude, primary, fallback)
    meta = AnswerMeta()
    deltas = await collect(answerer, meta)
    await answerer.aclose()

    assert "".join(deltas) == GROUNDED  # nothing repeated, nothing missing
    first, second = claude.requests()
    assert (first["model"], second["model"]) == (primary, continues_on)
    assert first["outcome"] == "cut" and second["status"] == 200
    partial = "".join(deltas[:3])
    assert answer_so_far(second["body"]) == partial
    for record in claude.requests():  # the API's rule, checked on what was actually sent
        if refuses_prefill(record["model"]):
            assert record["body"]["messages"][-1]["role"] == "user"
    assert (meta.model, meta.degraded) == (continues_on, True)


async def test_with_no_fallback_the_retry_on_the_same_model_continues_and_may_fail_too(
    claude: FakeAnthropic,
) -> None:
    claude.enqueue({"cut_after_chunks": 2}, {"cut_after_chunks": 1})
    answerer = await chain(claude, "claude-sonnet-5", None)
    deltas: list[str] = []
    with pytest.raises(UpstreamInterrupted):
        async for piece in answerer.answer(QUESTION, PASSAGES, None, AnswerMeta()):
            if isinstance(piece, str):
                deltas.append(piece)
    await answerer.aclose()
    assert "".join(deltas) == GROUNDED[: 3 * 16]  # two deltas, then one more from the continuation
    assert [r["model"] for r in claude.requests()] == ["claude-sonnet-5", "claude-sonnet-5"]
    assert answer_so_far(claude.requests()[1]["body"]) == GROUNDED[:32]


async def test_a_failure_before_text_then_one_after_continues_on_the_fallback(claude: FakeAnthropic) -> None:
    claude.enqueue({"status": 529}, {"cut_after_chunks": 4})
    answerer = await chain(claude, "claude-haiku-5-5", "claude-sonnet-5-5", upstream_retry_after_cap=0)
    assert "".join(await collect(answerer, AnswerMeta())) == GROUNDED
    await answerer.aclose()
    assert [r["model"] for r in claude.requests()] == [
        "claude-haiku-5-5",
        "claude-haiku-5-5",
        "claude-sonnet-5-5",
    ]
    assert answer_so_far(claude.requests()[2]["body"]) == GROUNDED[:64]


async def test_a_continuation_keeps_the_citations_of_the_text_it_adds(claude: FakeAnthropic) -> None:
    claude.enqueue({"cut_after_chunks": 1})  # inside the first, uncited block
    answerer = await chain(claude, "claude-haiku-5-5", "claude-sonnet-5-5")
    pieces = await collect_pieces(answerer)
    await answerer.aclose()
    spans = [p for p in pieces if isinstance(p, Span)]
    assert [c.number for span in spans for c in span.citations] == [1, 2]
    assert "".join(p for p in pieces if isinstance(p, str)) == GROUNDED
