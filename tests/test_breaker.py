"""The circuit breaker per model: on its own with a hand-driven clock, then inside the answer chain against
the fake Claude server (an outage, an account out of credit, the recovery after the cool-down)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.fakes.control import FakeAnthropic
from tests.test_answerer import GROUNDED, PASSAGES, QUESTION, collect, settings
from zantara_rag.domain import EXTRACTIVE, AnswerMeta
from zantara_rag.generation.answerer import Answerer
from zantara_rag.generation.breaker import Breaker
from zantara_rag.generation.claude import Claude, make_client
from zantara_rag.metrics import Metrics

MODEL = "claude-haiku-5-5"
# The real API's words when an organisation's spend limit is reached (the date varies).
SPEND_LIMIT_MESSAGE = (
    "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC."
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(metrics: Metrics, model: str = MODEL) -> float | None:
    return metrics.registry.get_sample_value("zantara_upstream_breaker_state", {"model": model})


def test_the_circuit_opens_after_the_threshold_and_one_probe_decides(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="zantara_rag.generation.breaker")
    clock, metrics = Clock(), Metrics()
    breaker = Breaker(MODEL, 3, 30, clock=clock, metrics=metrics)
    assert state(metrics) == 0
    for _ in range(2):
        assert breaker.allow()
        breaker.failure("http_529")
    breaker.success()  # a success in between: the count starts again
    for _ in range(3):
        assert breaker.allow()
        breaker.failure("http_529")
    assert breaker.state == "open" and state(metrics) == 2
    assert not breaker.allow()  # skipped during the cool-down...
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()  # ...then one probe goes through
    assert breaker.state == "half_open" and state(metrics) == 1
    assert not breaker.allow()  # and only one
    breaker.failure("timeout")  # the probe failed: another cool-down
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 30
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and state(metrics) == 0 and breaker.allow()
    skips = metrics.registry.get_sample_value("zantara_upstream_breaker_skips_total", {"model": MODEL})
    assert skips == 4

    prefix = f"circuit breaker for {MODEL} "
    transitions = [r.getMessage().removeprefix(prefix) for r in caplog.records if r.name.endswith("breaker")]
    assert transitions == [
        "open: 3 consecutive failures, the last http_529; it is skipped for 30 s",
        "half-open: the cool-down is over, this request probes it",
        "open: the probe failed (timeout); it is skipped for 30 s",
        "half-open: the cool-down is over, this request probes it",
        "closed: it answered again",
    ]


def test_an_abandoned_probe_lets_the_next_request_probe() -> None:
    clock = Clock()
    breaker = Breaker(MODEL, 1, 30, clock=clock)
    breaker.failure("http_529")
    clock.now += 30
    assert breaker.allow() and not breaker.allow()
    breaker.abandon()  # the user left while the probe was in flight
    assert breaker.allow() and breaker.state == "half_open"


def test_a_threshold_of_zero_never_opens() -> None:
    breaker = Breaker(MODEL, 0, 30, clock=Clock())
    for _ in range(100):
        breaker.failure("http_529")
    assert breaker.allow() and breaker.state == "closed"


# --- in the answer chain


def chain(claude: FakeAnthropic, metrics: Metrics, **overrides: object) -> Answerer:
    s = settings(claude.base_url, upstream_retry_after_cap=0, **overrides)
    return Answerer(s, Claude(s, make_client(s), metrics))


@pytest.mark.parametrize("fallback", ["claude-sonnet-4-6", None], ids=["with-fallback", "primary-alone"])
async def test_six_questions_during_an_outage_cost_at_most_the_threshold_per_model(
    claude: FakeAnthropic, fallback: str | None
) -> None:
    claude.set_default(status=529)
    metrics = Metrics()
    answerer = chain(claude, metrics, anthropic_fallback_model=fallback or "")
    per_question = []
    for _ in range(6):
        before = len(claude.requests())
        meta = AnswerMeta()
        answer = "".join(await collect(answerer, meta))
        assert (meta.model, meta.degraded) == (EXTRACTIVE, True) and "IDR 2,000,000" in answer
        per_question.append(len(claude.requests()) - before)
    await answerer.aclose()

    models = [r["model"] for r in claude.requests()]
    print(f"\n[outage, fallback={fallback}] upstream requests per question: {per_question}")
    assert models.count("claude-haiku-4-5") == 5  # UPSTREAM_BREAKER_FAILURES, then skipped
    assert models.count("claude-sonnet-4-6") == (5 if fallback else 0)
    assert per_question[-1] == 0  # skipped models cost nothing
    assert sum(per_question) <= 5 * (2 if fallback else 1) < 6 * (3 if fallback else 2)  # was 18 / 12
    assert state(metrics, "claude-haiku-4-5") == 2


async def test_after_the_cool_down_one_probe_and_claude_answers_again(claude: FakeAnthropic) -> None:
    metrics = Metrics()
    answerer = chain(
        claude,
        metrics,
        anthropic_fallback_model="",
        upstream_breaker_failures=2,
        upstream_breaker_cooldown_seconds=0.3,
    )
    claude.enqueue({"status": 529}, {"status": 529})
    meta = AnswerMeta()
    await collect(answerer, meta)
    assert meta.model == EXTRACTIVE and state(metrics, "claude-haiku-4-5") == 2
    await collect(answerer, AnswerMeta())  # open: nothing sent
    assert len(claude.requests()) == 2

    await asyncio.sleep(0.35)
    meta = AnswerMeta()
    assert "".join(await collect(answerer, meta)) == GROUNDED
    await answerer.aclose()
    assert (meta.model, meta.degraded) == ("claude-haiku-4-5", False)
    assert len(claude.requests()) == 3  # exactly one probe
    assert state(metrics, "claude-haiku-4-5") == 0


async def test_an_open_primary_sends_the_question_straight_to_the_fallback(claude: FakeAnthropic) -> None:
    metrics = Metrics()
    answerer = chain(claude, metrics, upstream_breaker_failures=2)
    claude.enqueue({"status": 529}, {"status": 529})  # opens the primary; the fallback answers
    await collect(answerer, AnswerMeta())
    meta = AnswerMeta()
    assert "".join(await collect(answerer, meta)) == GROUNDED
    await answerer.aclose()
    assert [r["model"] for r in claude.requests()] == [
        "claude-haiku-4-5",
        "claude-haiku-4-5",
        "claude-sonnet-4-6",
        "claude-sonnet-4-6",
    ]
    assert (meta.model, meta.degraded) == ("claude-sonnet-4-6", True)


async def test_a_reader_leaving_mid_answer_is_no_verdict_on_the_model(claude: FakeAnthropic) -> None:
    metrics = Metrics()
    answerer = chain(claude, metrics, upstream_breaker_failures=1)
    claude.enqueue({"delay_ms": 50})
    stream = answerer.answer(QUESTION, PASSAGES, None, AnswerMeta())
    async for _ in stream:
        break
    await stream.aclose()  # what cancelling the producer does
    await answerer.aclose()
    assert answerer.breakers["claude-haiku-4-5"].state == "closed"
    assert answerer.breakers["claude-haiku-4-5"].failures == 0


@pytest.mark.parametrize(
    "scenario",
    [
        {"status": 402},
        {"status": 400, "error_message": SPEND_LIMIT_MESSAGE},
        {"status": 429, "error_code": "enforced_spend_limit_reached"},
        {"status": 429},  # a monthly cap: no retry-after
    ],
    ids=["402-out-of-credit", "400-spend-limit", "429-spend-cap", "429-without-retry-after"],
)
async def test_billing_problems_make_one_call_and_an_error_log_naming_billing(
    claude: FakeAnthropic, caplog: pytest.LogCaptureFixture, scenario: dict[str, object]
) -> None:
    claude.enqueue(scenario)
    answerer = chain(claude, Metrics())
    meta = AnswerMeta()
    with caplog.at_level(logging.WARNING):
        answer = "".join(await collect(answerer, meta))
    await answerer.aclose()
    assert len(claude.requests()) == 1, "a retry cannot add credit"
    assert (meta.model, meta.degraded) == (EXTRACTIVE, True) and "IDR 2,000,000" in answer
    (line,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.levelno == logging.ERROR and "billing" in line.getMessage()
    assert "regain access" not in line.getMessage()  # the upstream's own words stay out of the logs


async def test_a_rate_limit_with_retry_after_is_still_retried(claude: FakeAnthropic) -> None:
    claude.enqueue({"status": 429, "retry_after": 1})
    answerer = chain(claude, Metrics())
    assert "".join(await collect(answerer, AnswerMeta())) == GROUNDED
    await answerer.aclose()
    assert len(claude.requests()) == 2
