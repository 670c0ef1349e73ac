"""The answer chain: Claude with a retry and a fallback model, always ending in a grounded answer.

Before any text has been sent, a retryable failure is retried once (after a capped `retry-after`), then
the fallback model is tried, then the extractive answer is given (`degraded`). Auth and request errors
skip straight to the extractive answer and are logged loudly: they need an operator, not a retry.
After text has been sent, the fallback model continues the answer from where it stopped (the partial
answer is its assistant prefill); if that fails too, `UpstreamInterrupted` ends the stream and the text
already sent stands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ..domain import EXTRACTIVE, AnswerMeta, ChatRequest, Passage
from ..errors import UpstreamInterrupted
from ..settings import Settings
from .claude import FATAL_STATUSES, Claude, classify
from .extractive import compose, pieces
from .prompt import build_messages, build_system
from .team import Member

log = logging.getLogger(__name__)


async def extractive_stream(query: str, passages: list[Passage], delay: float) -> AsyncIterator[str]:
    for piece in pieces(compose(query, passages)):
        yield piece
        if delay:
            await asyncio.sleep(delay)


class Answerer:
    """Produces the text of one answer as an async stream of deltas."""

    def __init__(self, settings: Settings, claude: Claude | None) -> None:
        self.settings = settings
        self.claude = claude  # None when no API key is configured: every answer is extractive
        self.extractive_delay = settings.extractive_chunk_delay_ms / 1000

    async def aclose(self) -> None:
        if self.claude is not None:
            await self.claude.aclose()

    async def answer(
        self, request: ChatRequest, passages: list[Passage], member: Member | None, meta: AnswerMeta
    ) -> AsyncIterator[str]:
        claude = self.claude
        if claude is None:
            meta.model = EXTRACTIVE
            async for piece in extractive_stream(request.query, passages, self.extractive_delay):
                yield piece
            return

        started = time.perf_counter()
        system = build_system(member)
        messages = build_messages(request, passages)
        meta.timing["prompt"] = (time.perf_counter() - started) * 1000
        primary = self.settings.anthropic_model
        fallback = self.settings.anthropic_fallback_model
        chain = [primary, primary] + ([fallback] if fallback and fallback != primary else [])
        sent: list[str] = []

        for attempt, model in enumerate(chain):
            try:
                async for delta in claude.stream(model, system, messages, meta):
                    sent.append(delta)
                    yield delta
                meta.model, meta.degraded = model, model != primary
                return
            except Exception as exc:
                failure = classify(exc)
            if sent:
                break
            if not failure.retryable:
                log.error(
                    "Claude refused the request (%s) for model %s: check %s. Answers are extractive "
                    "(degraded) until this is fixed",
                    failure.kind,
                    model,
                    FATAL_STATUSES.get(failure.status or 0, "ANTHROPIC_API_KEY and the model names"),
                )
                break
            log.warning("Claude attempt %d on %s failed (%s)", attempt + 1, model, failure.kind)
            if attempt == 0:
                await asyncio.sleep(min(failure.retry_after, self.settings.upstream_retry_after_cap))

        if sent:
            async for delta in self._continue(
                claude, "".join(sent), fallback or primary, system, messages, meta
            ):
                yield delta
            return

        meta.model, meta.degraded = EXTRACTIVE, True
        async for piece in extractive_stream(request.query, passages, self.extractive_delay):
            yield piece

    async def _continue(
        self,
        claude: Claude,
        partial: str,
        model: str,
        system: list[dict[str, Any]],
        messages: list[dict[str, Any]],
        meta: AnswerMeta,
    ) -> AsyncIterator[str]:
        """Resume a broken answer: the partial text is the assistant's prefill, the model continues it."""
        # The API rejects a prefill that ends in whitespace; the client already has that whitespace.
        prefill = partial.rstrip()
        trailing_space = prefill != partial
        if prefill:
            messages = [*messages, {"role": "assistant", "content": prefill}]
        first = True
        try:
            async for delta in claude.stream(model, system, messages, meta):
                if first and trailing_space:
                    delta = delta.lstrip()
                    if not delta:
                        continue
                first = False
                yield delta
        except Exception as exc:
            log.warning("continuation on %s failed (%s)", model, classify(exc).kind)
            raise UpstreamInterrupted() from None
        meta.model, meta.degraded = model, True


class OverBudgetAnswerer(Answerer):
    """The extractive answer, once the daily token budget is spent (a fallback, so `degraded`)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, None)

    async def answer(
        self, request: ChatRequest, passages: list[Passage], member: Member | None, meta: AnswerMeta
    ) -> AsyncIterator[str]:
        meta.degraded = True
        async for piece in super().answer(request, passages, member, meta):
            yield piece
