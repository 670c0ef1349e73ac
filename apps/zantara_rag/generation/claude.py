"""Claude: one streamed Messages request through the async SDK, bounded by deadlines, and the translation of
the SDK's and the transport's failures into `UpstreamFailure`, once.

The stream yields the answer's text deltas and, where Claude opens a content block whose citations differ
from the text before it, a `Span` carrying them (citations arrive as `citations_delta` events before the
cited text of their block; each is validated with the SDK's own citation types, which costs nothing on the
hot path: citations are a few events per answer).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator
from contextlib import nullcontext
from typing import Any, cast

from ..domain import AnswerMeta, AnswerPiece, Citation, Span
from ..metrics import Metrics
from ..settings import Settings

# Errors a retry cannot fix: they need an operator. What to look at for each.
OPERATOR_HINTS = {
    400: "the request shape (MAX_OUTPUT_TOKENS, the model's limits)",
    401: "ANTHROPIC_API_KEY (missing, revoked or mistyped)",
    402: "billing: the account is out of credit (Claude Console, Billing)",
    403: "the API key's permissions and the account (workspace, billing)",
    404: "the model names ANTHROPIC_MODEL and ANTHROPIC_FALLBACK_MODEL",
    413: "the request size (MAX_HISTORY_CHARS, SOURCES_TOP_K, CHUNK_MAX_CHARS)",
}
SPEND_LIMIT_HINT = "billing: a spend limit set for the organisation or workspace (Claude Console, Limits)"
SPEND_CAP_HINT = "billing: the organisation's monthly spend cap (usage tier) is reached until the month ends"
# A spend limit answers 400 with this message; a monthly cap answers 429 without retry-after (and says so).
SPEND_LIMIT_MESSAGE = re.compile(r"^You have reached your specified (workspace )?API usage limits")
SPEND_CAP_CODE = "enforced_spend_limit_reached"
THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})


class Declined(Exception):
    """The model's safety classifiers declined the request (`stop_reason: "refusal"`) before any text: not a
    failure of the model, and retrying the same model with the same request gets the same answer."""


class UpstreamFailure(Exception):
    """An SDK or transport failure, classified once so the chain can decide what to try next.

    `hint` is set for a failure that needs an operator (what to check); `retryable` for a passing one;
    `per_request` for a malformed or oversized request, which says nothing about the model's health (it does
    not count against its circuit breaker: the next question may be fine).
    """

    def __init__(
        self,
        kind: str,
        retryable: bool,
        status: int | None = None,
        retry_after: float = 0.0,
        hint: str | None = None,
        per_request: bool = False,
    ):
        super().__init__(kind)
        self.kind = kind
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.hint = hint
        self.per_request = per_request


def classify(exc: BaseException) -> UpstreamFailure:
    import anthropic
    import httpx2

    if isinstance(exc, UpstreamFailure):
        return exc
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        headers = exc.response.headers if exc.response is not None else {}
        error = _field(exc.body, "error")
        details = _field(error, "details")
        kind = f"http_{status}"
        if status == 400 and SPEND_LIMIT_MESSAGE.match(str(error.get("message") or "")):
            return UpstreamFailure(kind, False, status, hint=SPEND_LIMIT_HINT)
        if status == 429 and (details.get("error_code") == SPEND_CAP_CODE or not _has_retry_after(headers)):
            return UpstreamFailure(kind, False, status, hint=SPEND_CAP_HINT)
        if status in OPERATOR_HINTS:
            return UpstreamFailure(
                kind, False, status, hint=OPERATOR_HINTS[status], per_request=status in (400, 413)
            )
        # status 200 is an `event: error` inside a started stream (overloaded_error and friends).
        return UpstreamFailure(kind, True, status, _retry_after(headers))
    if isinstance(exc, anthropic.APITimeoutError | TimeoutError):
        return UpstreamFailure("timeout", True)
    if isinstance(exc, anthropic.APIConnectionError | httpx2.HTTPError | OSError):
        return UpstreamFailure("connection", True)
    return UpstreamFailure(type(exc).__name__, True)


def _field(obj: object, key: str) -> dict[str, Any]:
    """`obj[key]` when both are JSON objects, else {} (an error body's shape is not promised)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def _has_retry_after(headers: Any) -> bool:
    return bool(headers.get("retry-after") or headers.get("retry-after-ms"))


def _retry_after(headers: Any) -> float:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                return 0.0
    return 0.0


class Claude:
    """Streams the text of one request at a time; the client is the SDK's, built by `make_client`."""

    def __init__(self, settings: Settings, client: Any, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.client = client  # anthropic.AsyncAnthropic
        self.metrics = metrics

    async def aclose(self) -> None:
        await self.client.close()

    async def stream(
        self, model: str, system: list[dict[str, Any]], messages: list[dict[str, Any]], meta: AnswerMeta
    ) -> AsyncGenerator[AnswerPiece, None]:
        """One streamed request, bounded by first-token, idle and total timeouts."""
        from anthropic import AsyncStream  # imported with the client (make_client), not at start-up

        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.upstream_total_timeout
        meta.upstream_attempts += 1
        idle_slack = s.upstream_idle_timeout * 1.1
        sent = time.perf_counter()
        first = True
        # The producer task that drives this generator does no other awaiting between items, so the
        # timeout scope cannot fire outside this generator's own awaits.
        async with asyncio.timeout_at(min(loop.time() + s.upstream_first_token_timeout, deadline)) as scope:
            async with self.metrics.upstream_request() if self.metrics is not None else nullcontext():
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
                    stop_reason: str | None = None
                    thinking = False  # a thinking block is open (before the first text)
                    cites: list[Citation] = []  # those of the content block being read
                    announced: tuple[Citation, ...] = ()  # those of the span the text sent so far is in
                    fresh = False  # a block started or a citation came: compare at the next text
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
                                    if delta.get("type") == "citations_delta" and (cite := _citation(delta)):
                                        cites.append(cite)
                                        fresh = True
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
                                if fresh:
                                    fresh = False
                                    if tuple(cites) != announced:
                                        announced = tuple(cites)
                                        yield Span(announced)
                                yield text
                            elif kind == "content_block_start":
                                cites = []
                                fresh = True
                                block = (event.get("content_block") or {}).get("type")
                                if first and block in THINKING_BLOCKS:
                                    # Current models think before they answer (adaptive thinking, its
                                    # text not displayed): a thinking block is not a stall, and only
                                    # the total timeout bounds it; the wait for the first token
                                    # starts again when it ends.
                                    thinking = True
                                    scope.reschedule(deadline)
                            elif kind == "content_block_stop" and thinking:
                                thinking = False
                                scope.reschedule(min(loop.time() + s.upstream_first_token_timeout, deadline))
                            elif kind == "message_start":
                                usage = (event.get("message") or {}).get("usage") or {}
                                meta.input_tokens += usage.get("input_tokens") or 0
                                meta.cache_read_tokens += usage.get("cache_read_input_tokens") or 0
                            elif kind == "message_delta":
                                usage = event.get("usage") or {}
                                output_tokens = usage.get("output_tokens") or output_tokens
                                stop_reason = (event.get("delta") or {}).get("stop_reason")
                    finally:
                        meta.output_tokens += output_tokens
                    # Current models run safety classifiers that can decline a request, with no server-side
                    # fallback: after some text, the text stands (the answer ends there); before any, the
                    # chain decides (answerer.py).
                    if stop_reason == "refusal" and first:
                        raise Declined()


def _citation(delta: dict[str, Any]) -> Citation | None:
    """A `citations_delta` validated by the SDK's types; the passages are the request's search results in
    number order (`prompt.passage_blocks`), so `search_result_index` 0 is passage [1]."""
    from anthropic.types import CitationsDelta, CitationsSearchResultLocation
    from pydantic import ValidationError

    try:
        location = CitationsDelta.model_validate(delta).citation
    except ValidationError:
        return None
    if not isinstance(location, CitationsSearchResultLocation):
        return None
    return Citation(location.search_result_index + 1, location.cited_text)


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
