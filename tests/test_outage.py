"""An account out of credit and an outage, through the real server with its circuit breakers on: what each
question costs upstream, what the user gets, what the operator sees (logs, `/metrics`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.control import FakeAnthropic
from tests.harness import DEFAULT_FALLBACK, DEFAULT_MODEL, ServerProcess
from tests.sse import ask, assert_contract
from tests.streaming import metrics, wait_settled

pytestmark = pytest.mark.slow  # boots the service as a subprocess

API_KEY = "sk-ant-test-SECRET-outage-0123456789"
QUESTION = "How much is the overstay fine in Indonesia?"
COOLDOWN = 2.0


@pytest.fixture(scope="module")
def server(kb_template: Path, fake_claude: FakeAnthropic) -> Iterator[ServerProcess]:
    """The default models, the default threshold (5) and a short cool-down."""
    with ServerProcess(
        kb_template,
        ANTHROPIC_API_KEY=API_KEY,
        ANTHROPIC_BASE_URL=fake_claude.base_url,
        UPSTREAM_BREAKER_FAILURES="5",
        UPSTREAM_BREAKER_COOLDOWN_SECONDS=str(COOLDOWN),
        UPSTREAM_RETRY_AFTER_CAP="0",
    ) as server:
        yield server
        assert API_KEY not in server.logs() and "Traceback" not in server.logs()


def log_lines(server: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]


def breaker(server: ServerProcess, model: str) -> float:
    return metrics(server)[f'zantara_upstream_breaker_state{{model="{model}"}}']


def test_out_of_credit_makes_one_call_and_one_error_line_naming_billing(
    server: ServerProcess, claude: FakeAnthropic
) -> None:
    before = len(log_lines(server))
    claude.enqueue({"status": 402})
    got = ask(server.url, QUESTION)
    assert_contract(got)
    assert (got.last["model"], got.last["degraded"]) == ("extractive", True)
    assert len(claude.requests()) == 1, "a retry cannot add credit (it was three calls)"
    errors = [line for line in log_lines(server)[before:] if line["level"] == "error"]
    assert len(errors) == 1 and "billing" in errors[0]["msg"] and "http_402" in errors[0]["msg"]
    wait_settled(server, claude)
    assert_contract(ask(server.url, QUESTION))  # credit is back: the next question is Claude's again


def test_an_outage_costs_the_threshold_per_model_then_nothing_until_a_probe_closes_it(
    server: ServerProcess, claude: FakeAnthropic
) -> None:
    claude.set_default(status=529)
    assert breaker(server, DEFAULT_MODEL) == breaker(server, DEFAULT_FALLBACK) == 0  # exported from the start
    per_question = []
    for _ in range(6):
        before = len(claude.requests())
        got = ask(server.url, QUESTION)
        assert_contract(got)
        assert (got.last["model"], got.last["degraded"]) == ("extractive", True)
        per_question.append(len(claude.requests()) - before)
    print(f"\n[outage] upstream requests per question: {per_question} (was 3 each)")
    models = [r["model"] for r in claude.requests()]
    assert models.count(DEFAULT_MODEL) == models.count(DEFAULT_FALLBACK) == 5
    # The primary's circuit opens at its 5th failure (3rd question), the fallback's at its 5th (5th question);
    # then the extractive answer costs nothing upstream.
    assert per_question == [3, 3, 2, 1, 1, 0]
    samples = metrics(server)
    assert breaker(server, DEFAULT_MODEL) == breaker(server, DEFAULT_FALLBACK) == 2
    assert samples[f'zantara_upstream_breaker_skips_total{{model="{DEFAULT_MODEL}"}}'] >= 2
    opened = [line["msg"] for line in log_lines(server) if "circuit breaker" in line["msg"]]
    assert [m.split(":")[0] for m in opened] == [
        f"circuit breaker for {DEFAULT_MODEL} open",
        f"circuit breaker for {DEFAULT_FALLBACK} open",
    ]

    # Claude is back. Within the cool-down nothing is tried; after it, one probe per model at most.
    claude.reset()
    assert ask(server.url, QUESTION).last["model"] == "extractive" and claude.requests() == []
    time.sleep(COOLDOWN)
    got = ask(server.url, QUESTION)
    assert_contract(got)
    assert (got.last["model"], got.last["degraded"]) == (DEFAULT_MODEL, False)
    assert [r["model"] for r in claude.requests()] == [DEFAULT_MODEL]  # the probe, and it answered
    assert breaker(server, DEFAULT_MODEL) == 0
    transitions = [line["msg"].split(":")[0] for line in log_lines(server) if DEFAULT_MODEL in line["msg"]]
    assert transitions[-2:] == [
        f"circuit breaker for {DEFAULT_MODEL} half-open",
        f"circuit breaker for {DEFAULT_MODEL} closed",
    ]
