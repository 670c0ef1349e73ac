"""Generation: Claude through the async SDK, with a fallback chain that always ends in a grounded answer.

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
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from .chat import ChatRequest
from .errors import UpstreamInterrupted
from .extractive import compose, pieces
from .prompt import build_messages, build_system
from .retrieval import Passage
from .settings import Settings
from .team import Member

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(__name__)

EXTRACTIVE = "extractive"
# Errors a retry cannot fix, and what the operator should look at for each.
_FATAL_STATUSES = {
    400: "the request shape (MAX_OUTPUT_TOKENS, the model's limits)",
    401: "ANTHROPIC_API_KEY (missing, revoked or mistyped)",
    403: "the API key's permissions and the account (workspace, billing)",
    404: "the model names ANTHROPIC_MODEL and ANTHROPIC_FALLBACK_MODEL",
    413: "the request size (MAX_HISTORY_CHARS, SOURCES_TOP_K, CHUNK_MAX_CHARS)",
}


@dataclass
class AnswerMeta:
    """Filled in while the answer streams; read when the done event is built."""

    model: str = EXTRACTIVE
    degraded: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    upstream_attempts: int = 0
    # Milliseconds per stage (prompt, upstream_connect, upstream_first_token), reported with TIMING_HEADERS.
    timing: dict[str, float] = field(default_factory=dict)


class UpstreamFailure(Exception):
    """An SDK or transport failure, classified once so the chain can decide what to try next."""

    def __init__(self, kind: str, retryable: bool, status: int | None = None, retry_after: float = 0.0):
        super().__init__(kind)
        self.kind = kind
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


def classify(exc: BaseException) -> UpstreamFailure:
    import anthropic
    import httpx2

    if isinstance(exc, UpstreamFailure):
        return exc
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        retry_after = _retry_after(exc.response.headers if exc.response is not None else {})
        if status in _FATAL_STATUSES:
            return UpstreamFailure(f"http_{status}", False, status)
        # status 200 is an `event: error` inside a started stream (overloaded_error and friends).
        return UpstreamFailure(f"http_{status}", True, status, retry_after)
    if isinstance(exc, anthropic.APITimeoutError | TimeoutError):
        return UpstreamFailure("timeout", True)
    if isinstance(exc, anthropic.APIConnectionError | httpx2.HTTPError | OSError):
        return UpstreamFailure("connection", True)
    return UpstreamFailure(type(exc).__name__, True)


def _retry_after(headers: Any) -> float:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                return 0.0
    return 0.0


async def extractive_stream(query: str, passages: list[Passage], delay: float) -> AsyncIterator[str]:
    for piece in pieces(compose(query, passages)):
        yield piece
        if delay:
            await asyncio.sleep(delay)


class Answerer:
    """Produces the text of one answer as an async stream of deltas."""

    def __init__(self, settings: Settings, client: Any | None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.client = client  # anthropic.AsyncAnthropic, or None when no API key is configured
        self.extractive_delay = settings.extractive_chunk_delay_ms / 1000
        self.metrics = metrics

    def _in_flight(self) -> AbstractAsyncContextManager[None]:
        return self.metrics.upstream_request() if self.metrics is not None else nullcontext()

    async def answer(
        self, request: ChatRequest, passages: list[Passage], member: Member | None, meta: AnswerMeta
    ) -> AsyncIterator[str]:
        if self.client is None:
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
                async for delta in self._claude(model, system, messages, meta):
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
                    _FATAL_STATUSES.get(failure.status or 0, "ANTHROPIC_API_KEY and the model names"),
                )
                break
            log.warning("Claude attempt %d on %s failed (%s)", attempt + 1, model, failure.kind)
            if attempt == 0:
                await asyncio.sleep(min(failure.retry_after, self.settings.upstream_retry_after_cap))

        if sent:
            async for delta in self._continue("".join(sent), fallback or primary, system, messages, meta):
                yield delta
            return

        meta.model, meta.degraded = EXTRACTIVE, True
        async for piece in extractive_stream(request.query, passages, self.extractive_delay):
            yield piece

    async def _continue(
        self,
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
            async for delta in self._claude(model, system, messages, meta):
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

    async def _claude(
        self, model: str, system: list[dict[str, Any]], messages: list[dict[str, Any]], meta: AnswerMeta
    ) -> AsyncIterator[str]:
        """One streamed request, bounded by first-token, idle and total timeouts."""
        from anthropic import AsyncStream  # imported with the client (make_client), not at start-up

        s = self.settings
        assert self.client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.upstream_total_timeout
        meta.upstream_attempts += 1
        idle_slack = s.upstream_idle_timeout * 1.1
        sent = time.perf_counter()
        first = True
        # The producer task that drives this generator does no other awaiting between items, so the
        # timeout scope cannot fire outside this generator's own awaits.
        async with asyncio.timeout_at(min(loop.time() + s.upstream_first_token_timeout, deadline)) as scope:
            async with self._in_flight():
                # The raw event stream as JSON, through `client.post` (the SDK's own way to call an endpoint
                # with a chosen response type): the same client, headers, timeouts, SSE decoder, `event:
                # error` handling, error classes and closing on exit as `messages.create(stream=True)`, which
                # would also validate every event against the SDK's union of event models (pydantic): half
                # of this process's CPU when it relays hundreds of streams (docs/performance.md). The
                # `messages.stream()` helper costs more again: it rebuilds a snapshot of the whole message
                # and a second event object for every delta.
                stream = await self.client.post(
                    "/v1/messages",
                    body={
                        "model": model,
                        "max_tokens": s.max_output_tokens,
                        "system": system,
                        "messages": messages,
                        "stream": True,
                    },
                    cast_to=object,
                    stream=True,
                    stream_cls=AsyncStream[object],
                )
                async with stream:
                    output_tokens = 0
                    headers = time.perf_counter()
                    meta.timing.setdefault("upstream_connect", (headers - sent) * 1000)
                    try:
                        async for item in stream:
                            event = cast(dict[str, Any], item)
                            kind = event.get("type")
                            if kind == "content_block_delta":
                                delta = event.get("delta") or {}
                                text = delta.get("text") if delta.get("type") == "text_delta" else None
                                if not text or not isinstance(text, str):
                                    continue
                                now = loop.time()
                                # From the first text on, the idle deadline; re-armed lazily, not per delta
                                # (that cost ~6 % of the CPU while relaying): a silence fails between 1× and
                                # 1.1× the idle timeout.
                                if first or (scope.when() or 0.0) - now < s.upstream_idle_timeout:
                                    scope.reschedule(min(now + idle_slack, deadline))
                                if first:
                                    first = False
                                    waited = (time.perf_counter() - headers) * 1000
                                    meta.timing.setdefault("upstream_first_token", waited)
                                output_tokens += 1  # an estimate until message_delta reports the real count
                                yield text
                            elif kind == "message_start":
                                usage = (event.get("message") or {}).get("usage") or {}
                                meta.input_tokens += usage.get("input_tokens") or 0
                                meta.cache_read_tokens += usage.get("cache_read_input_tokens") or 0
                            elif kind == "message_delta":
                                usage = event.get("usage") or {}
                                output_tokens = usage.get("output_tokens") or output_tokens
                    finally:
                        meta.output_tokens += output_tokens


def make_client(settings: Settings) -> Any | None:
    if not settings.has_api_key:
        return None
    import anthropic
    import httpx2

    assert settings.anthropic_api_key is not None
    return anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=str(settings.anthropic_base_url).rstrip("/") if settings.anthropic_base_url else None,
        # We retry ourselves: the SDK would honour any retry-after uncapped and retry after text was sent.
        max_retries=0,
        timeout=httpx2.Timeout(
            settings.upstream_total_timeout,
            connect=settings.upstream_connect_timeout,
            # No per-read timeout: `_claude`'s own scope bounds the wait for the first token and every
            # silence after it, and a per-read deadline is a timer armed and cancelled for every event
            # (anyio's cancel scope), ~10 % of the process's CPU at 500 streams (docs/performance.md).
            read=None,
        ),
    )


class OverBudgetAnswerer(Answerer):
    """The extractive answer, once the daily token budget is spent (a fallback, so `degraded`)."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        super().__init__(settings, None, metrics)

    async def answer(
        self, request: ChatRequest, passages: list[Passage], member: Member | None, meta: AnswerMeta
    ) -> AsyncIterator[str]:
        meta.degraded = True
        async for piece in super().answer(request, passages, member, meta):
            yield piece
