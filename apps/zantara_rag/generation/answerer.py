"""The answer chain: Claude with a retry, a fallback model and a circuit breaker per model, always ending in a
grounded answer.

The chain is the primary model, the primary model again, then the fallback model (when one is set). Each
failure moves along it:

- Before any text, a retryable failure (overloaded, rate limited, cut, silent) moves to the next attempt,
  the first retry after a capped `retry-after`. A failure that needs an operator (authentication, billing,
  spend limits, the model names, a malformed request) ends Claude's part at once and is logged loudly.
- After text was sent, the next attempt continues the answer from where it stopped (`continuation`): the
  fallback model when there is one, otherwise the primary model's retry. With no attempt left,
  `UpstreamInterrupted` ends the stream and the text already sent stands.

A model whose circuit breaker is open is skipped at no cost (`breaker`). When no model answers, the
extractive answer is given, `degraded`.

A request a model's safety classifiers decline (`claude.Declined`, before any text) is not a failure of the
model: the fallback model, another line, is asked once; if it declines too (or there is none), the answer is
a short refusal in the question's language, not the knowledge base's passages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from ..domain import EXTRACTIVE, AnswerMeta, AnswerPiece, ChatRequest, Citation, Passage, Span
from ..errors import UpstreamInterrupted
from ..language import detect_language
from ..settings import Settings
from .breaker import Breakers
from .claude import Claude, Declined, UpstreamFailure, classify
from .continuation import continuation_messages, trim_seam
from .extractive import DECLINED, compose_spans, pieces
from .prompt import build_messages, build_system
from .team import Member

log = logging.getLogger(__name__)


async def extractive_stream(query: str, passages: list[Passage], delay: float) -> AsyncIterator[AnswerPiece]:
    announced: tuple[Citation, ...] = ()
    for text, citations in compose_spans(query, passages):
        if citations != announced:
            announced = citations
            yield Span(citations)
        for piece in pieces(text):
            yield piece
            if delay:
                await asyncio.sleep(delay)


class Answerer:
    """Produces the text of one answer as an async stream of deltas (and `Span`s where citations change)."""

    def __init__(self, settings: Settings, claude: Claude | None) -> None:
        self.settings = settings
        self.claude = claude  # None when no API key is configured: every answer is extractive
        self.extractive_delay = settings.extractive_chunk_delay_ms / 1000
        self.breakers = Breakers(settings, claude.metrics if claude is not None else None)
        if claude is not None:  # exported from the start, closed
            for model in (settings.anthropic_model, settings.anthropic_fallback_model):
                if model:
                    self.breakers[model]

    async def aclose(self) -> None:
        if self.claude is not None:
            await self.claude.aclose()

    async def answer(
        self, request: ChatRequest, passages: list[Passage], member: Member | None, meta: AnswerMeta
    ) -> AsyncIterator[AnswerPiece]:
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
        # Once text was sent, the fallback model continues it rather than the model that just broke.
        continue_at = 2 if len(chain) == 3 else None
        sent: list[str] = []
        span: tuple[Citation, ...] = ()  # the citations of the span the client's text is in

        attempt = 0
        declined_by: str | None = None  # the model whose safety classifiers declined this request
        while attempt < len(chain):
            model = chain[attempt]
            breaker = self.breakers[model]
            if not breaker.allow():
                attempt += 1
                continue
            partial = "".join(sent)
            if partial:
                request_messages = continuation_messages(messages, partial)
                stream = trim_seam(claude.stream(model, system, request_messages, meta), partial)
            else:
                stream = claude.stream(model, system, messages, meta)
            first = True
            try:
                async with aclosing(stream):
                    async for piece in stream:
                        if isinstance(piece, str):
                            if first and span:  # this request's text starts uncited; the client's did not
                                span = ()
                                yield Span()
                            sent.append(piece)
                        else:
                            piece = Span(tuple(c for c in piece.citations if 1 <= c.number <= len(passages)))
                            span = piece.citations
                        first = False
                        yield piece
            except Declined:
                breaker.abandon()  # the model is healthy: it said no to this request
                log.info("model %s declined the request (safety classifiers)", model)
                if sent:  # a continuation declined: the text already sent stands, and ends there
                    meta.model, meta.degraded = model, True
                    return
                if declined_by is None and fallback and model != fallback:
                    declined_by = model
                    attempt = len(chain) - 1  # the fallback model, another line
                    continue
                declined_by = model
                break
            except Exception as exc:
                failure = classify(exc)
            except BaseException:  # cancelled, or closed because the reader left: no verdict on the model
                breaker.abandon()
                raise
            else:
                breaker.success()
                meta.model, meta.degraded = model, model != primary or bool(partial)
                return
            if failure.per_request:
                breaker.abandon()
            else:
                breaker.failure(failure.kind)
            if failure.hint is not None:
                self._log_refusal(failure, model)
                break
            log.warning("Claude attempt %d on %s failed (%s)", attempt + 1, model, failure.kind)
            if attempt == 0 and not sent:
                await asyncio.sleep(min(failure.retry_after, self.settings.upstream_retry_after_cap))
            attempt += 1
            if sent and continue_at is not None and attempt < continue_at:
                attempt = continue_at

        if sent:
            raise UpstreamInterrupted()
        if declined_by is not None:  # declined, and no other model could answer: a refusal, not passages
            meta.model, meta.degraded = declined_by, declined_by != primary
            for piece in pieces(DECLINED[detect_language(request.query)]):
                yield piece
            return
        meta.model, meta.degraded = EXTRACTIVE, True
        async for piece in extractive_stream(request.query, passages, self.extractive_delay):
            yield piece

    @staticmethod
    def _log_refusal(failure: UpstreamFailure, model: str) -> None:
        log.error(
            "Claude refused the request (%s) for model %s: check %s. Answers are extractive (degraded) "
            "until this is fixed",
            failure.kind,
            model,
            failure.hint,
        )


class OverBudgetAnswerer(Answerer):
    """The extractive answer, once the daily token budget is spent (a fallback, so `degraded`)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, None)

    async def answer(
        self, request: ChatRequest, passages: list[Passage], member: Member | None, meta: AnswerMeta
    ) -> AsyncIterator[AnswerPiece]:
        meta.degraded = True
        async for piece in super().answer(request, passages, member, meta):
            yield piece
