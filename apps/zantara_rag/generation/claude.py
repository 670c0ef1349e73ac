"""Claude: one streamed Messages request through the async SDK, bounded by deadlines, and the translation of
the SDK's and the transport's failures into `UpstreamFailure`, once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import nullcontext
from typing import Any, cast

from ..domain import AnswerMeta
from ..metrics import Metrics
from ..settings import Settings

# Errors a retry cannot fix, and what the operator should look at for each.
FATAL_STATUSES = {
    400: "the request shape (MAX_OUTPUT_TOKENS, the model's limits)",
    401: "ANTHROPIC_API_KEY (missing, revoked or mistyped)",
    403: "the API key's permissions and the account (workspace, billing)",
    404: "the model names ANTHROPIC_MODEL and ANTHROPIC_FALLBACK_MODEL",
    413: "the request size (MAX_HISTORY_CHARS, SOURCES_TOP_K, CHUNK_MAX_CHARS)",
}


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
        if status in FATAL_STATUSES:
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
    ) -> AsyncIterator[str]:
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
