"""The answer chain under upstream faults: what the user gets, and what it costs upstream.

    python -m bench.answer_chain

Runs the real `Answerer` and `Claude` (the real SDK) in-process against the fake Claude server, which
refuses an assistant prefill on 4.6+ models as the API does, and prints:

- characters delivered across a mid-answer failure (a connection cut after 3 deltas), per model setup;
- upstream requests for six questions in a row while every model answers 529, the wait per question
  while every request stalls, and the requests for one answer while the account is out of credit (402).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tests.fakes.answers import default_answer
from tests.fakes.control import FakeAnthropic

from zantara_rag.domain import AnswerMeta, ChatRequest, Passage, chunk_text
from zantara_rag.generation.answerer import Answerer
from zantara_rag.generation.claude import Claude, make_client
from zantara_rag.generation.prompt import build_messages
from zantara_rag.settings import Settings

QUESTION = ChatRequest(query="How much is the overstay fine in Indonesia?")
BODY = (
    "Foreigners who overstay their permit pay IDR 1,000,000 for each day of overstay at the immigration "
    "office before they may leave. Overstays of more than 60 days lead to deportation and a ban on "
    "re-entry. The fine is paid in cash or by bank transfer at the airport or the immigration office. "
    "Keep the receipt: it is checked again at departure."
)
PASSAGES = [
    Passage(1, "Overstay fines", None, None, "kb/overstay.md", 0.8, [chunk_text("Overstay fines", "", BODY)]),
    Passage(2, "Visa extensions", None, None, "kb/ext.md", 0.6, [chunk_text("Visa extensions", "", BODY)]),
]
SETUPS = [
    ("claude-haiku-4-5 + fallback claude-sonnet-4-6", "claude-haiku-4-5", "claude-sonnet-4-6"),
    ("claude-sonnet-5 alone", "claude-sonnet-5", None),
    ("claude-haiku-4-5 alone (pre-4.6)", "claude-haiku-4-5", None),
    ("claude-haiku-5-5 + fallback claude-sonnet-5-5", "claude-haiku-5-5", "claude-sonnet-5-5"),
]


def settings(base_url: str, model: str, fallback: str | None, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "anthropic_api_key": "sk-ant-bench-0123456789",
        "anthropic_base_url": base_url,
        "anthropic_model": model,
        "anthropic_fallback_model": fallback or "",
        "upstream_retry_after_cap": 0.0,
        "extractive_chunk_delay_ms": 0,
        **extra,
    }
    return Settings(**values)


async def answer(s: Settings) -> tuple[str, str]:
    answerer = Answerer(s, Claude(s, make_client(s)))
    meta = AnswerMeta()
    text, outcome = "", "done"
    try:
        async for item in answerer.answer(QUESTION, PASSAGES, None, meta):
            if isinstance(item, str):
                text += item
    except Exception as exc:
        outcome = getattr(exc, "code", type(exc).__name__)
    finally:
        await answerer.aclose()
    return text, outcome


async def main() -> None:
    logging.disable(logging.WARNING)  # the chain's warnings, one per failed attempt, would drown the figures
    with FakeAnthropic() as fake:
        full = len(default_answer({"messages": build_messages(QUESTION, PASSAGES)}))
        print("Characters delivered across a mid-answer failure (connection cut after 3 deltas):")
        for label, model, fallback in SETUPS:
            fake.reset()
            fake.enqueue({"cut_after_chunks": 3})
            text, outcome = await answer(settings(fake.base_url, model, fallback))
            statuses = [r["status"] for r in fake.requests()]
            print(f"  {label:48} {len(text):4} of {full} ({outcome}; upstream statuses {statuses})")

        print("Upstream requests during an outage (every request 529), six questions in a row:")
        for label, model, fallback in SETUPS[:2]:
            fake.reset()
            fake.set_default(status=529)
            s = settings(fake.base_url, model, fallback, upstream_breaker_cooldown_seconds=60)
            # (Settings without the breaker, as before this change, ignore the unknown field.)
            answerer = Answerer(s, Claude(s, make_client(s)))
            started = time.perf_counter()
            per_question = []
            for _ in range(6):
                before = len(fake.requests())
                async for _item in answerer.answer(QUESTION, PASSAGES, None, AnswerMeta()):
                    pass
                per_question.append(len(fake.requests()) - before)
            await answerer.aclose()
            elapsed = time.perf_counter() - started
            print(f"  {label:48} {sum(per_question):3} requests {per_question} in {elapsed:.2f} s")

        print("Seconds per question while every request stalls (UPSTREAM_FIRST_TOKEN_TIMEOUT 0.5 s):")
        fake.reset()
        fake.set_default(first_token_delay_ms=60_000)
        s = settings(fake.base_url, *SETUPS[0][1:], upstream_first_token_timeout=0.5)
        answerer = Answerer(s, Claude(s, make_client(s)))
        waits = []
        for _ in range(6):
            started = time.perf_counter()
            async for _item in answerer.answer(QUESTION, PASSAGES, None, AnswerMeta()):
                pass
            waits.append(round(time.perf_counter() - started, 2))
        await answerer.aclose()
        print(f"  {SETUPS[0][0]:48} {waits} ({sum(waits):.1f} s in all)")

        fake.reset()
        fake.set_default(status=402)
        await answer(settings(fake.base_url, *SETUPS[0][1:]))
        print(f"Upstream requests for one answer while out of credit (402): {len(fake.requests())}")


if __name__ == "__main__":
    asyncio.run(main())
