"""A local fake of Anthropic's Messages API that speaks the real streaming wire format.

It is the only fake the test suite uses: tests and load benchmarks drive the *real* ``anthropic``
SDK against it through ``base_url`` / ``ANTHROPIC_BASE_URL``.

Run it with::

    python -m tests.fakes.anthropic_server --host 127.0.0.1 --port 0

It prints one line, ``READY http://127.0.0.1:<port>``, once it is listening, and then logs nothing per
request. ``tests/fakes/control.py`` wraps the process and its control API (``/_fake/*``).

Why raw asyncio rather than Starlette/uvicorn: the fake must (a) cut a connection in the middle of a
chunked body without an ASGI server logging a traceback, (b) notice a client disconnect at once, even
while it is sleeping in a delay or a stall (``connection_lost`` fires immediately), and (c) push tens of
thousands of deltas per second: each delta is one synchronous ``transport.write`` of pre-encoded bytes
from a timer callback, with no task, coroutine or ASGI message per chunk.

Control API (JSON):

- ``POST /_fake/reset``: clear the queue, the default scenario and the recorded requests.
- ``POST /_fake/default``: body is a scenario applied when the queue holds nothing for the request.
- ``POST /_fake/enqueue``: ``{"scenarios": [...]}``, one-shot scenarios consumed FIFO, one per request
  to ``/v1/messages``; a scenario with ``match_model`` is only taken by a request for that model.
- ``GET /_fake/requests[?since=N]``: the request records (only those with ``n > N`` if given).
- ``GET /_fake/stats``: ``{"active_streams", "total_requests", "queued", "outcomes"}``.

Scenario fields are listed in ``SCENARIO_FIELDS``; see the docstring of ``FakeAnthropic`` in
``control.py`` for what each one does.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from tests.fakes.answers import (
    CONTINUED,
    NO_ANSWER,
    Segment,
    citation,
    default_answer,
    default_segments,
    request_problem,
)

__all__ = ["CONTINUED", "NO_ANSWER", "default_answer"]  # what tests import from here


SCENARIO_FIELDS = frozenset(
    {
        "label",  # free-form tag, echoed in the record
        "match_model",
        "status",
        "retry_after",
        "retry_after_ms",
        "should_retry",
        "error_type",
        "error_message",
        "headers",
        "text",
        "chunks",
        "chunk_size",
        "repeat",
        "first_token_delay_ms",
        "delay_ms",
        "stall_after_chunks",
        "stall_ms",
        "ping_every_ms",  # as Anthropic does: `event: ping` every so often, while silent or not
        "error_after_chunks",
        "cut_after_chunks",
        "cut_mode",  # "close" (default: FIN mid-body) or "reset" (TCP RST)
        "stop_reason",
        "segments",  # [{"text", "cite": [[search_result_index, start, end] or a citation object]}]: blocks
        "restate",  # a continuation starts this many characters early, repeating the end of the answer so far
        "thinking",  # a (not displayed) thinking block before the text, as adaptive thinking sends it
        "error_code",  # error.details.error_code of an error response (enforced_spend_limit_reached...)
        "input_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "random",
    }
)
RANDOM_FIELDS = frozenset({"seed", "p_error_event", "p_cut", "p_status_529", "p_stall", "stall_ms"})

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_MESSAGES = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024  # the real API's request size limit
BATCH_WITHOUT_DELAY = 64  # deltas written per loop iteration when delay_ms == 0

# ---------------------------------------------------------------------------------------------------
# Wire encoding (pre-encoded wherever possible)
# ---------------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # lone surrogates: fall back to \u escapes
        return json.dumps(obj, separators=(",", ":")).encode()


def _chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _event(name: str, obj: Any) -> bytes:
    """One SSE event, framed as one HTTP chunk."""
    return _chunk(b"event: " + name.encode() + b"\ndata: " + _dumps(obj) + b"\n\n")


LAST_CHUNK = b"0\r\n\r\n"
PING = _event("ping", {"type": "ping"})


def block_start(index: int, block: dict[str, Any] | None = None) -> bytes:
    content_block = block or {"type": "text", "text": ""}
    return _event(
        "content_block_start", {"type": "content_block_start", "index": index, "content_block": content_block}
    )


def block_stop(index: int) -> bytes:
    return _event("content_block_stop", {"type": "content_block_stop", "index": index})


def block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


# A thinking block as the 4.6+ models send one whose thinking is not displayed: it opens at once, and its
# signature (no text) closes it when the thinking is over, `first_token_delay_ms` later.
THINKING_OPENS = block_start(0, {"type": "thinking", "thinking": "", "signature": ""})
THINKING_ENDS = block_delta(
    0, {"type": "signature_delta", "signature": "c2lnbmF0dXJlLW9mLXRoZS1mYWtl"}
) + block_stop(0)
MESSAGE_STOP = _event("message_stop", {"type": "message_stop"})
_DELTA_HEAD = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
)
_DELTA_TAIL = b"}}\n\n"
_delta_cache: dict[str, bytes] = {}


def delta_frame(text: str) -> bytes:
    """The framed ``content_block_delta`` event for one text delta (cached: load tests repeat them)."""
    frame = _delta_cache.get(text)
    if frame is None:
        frame = _chunk(_DELTA_HEAD + _dumps(text) + _DELTA_TAIL)
        if len(_delta_cache) >= 8192:
            _delta_cache.clear()
        _delta_cache[text] = frame
    return frame


def _reason(status: int) -> str:
    if status == 529:
        return "Overloaded"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _head(status: int, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# ---------------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------------


def validate_scenario(scenario: Any) -> dict[str, Any]:
    if not isinstance(scenario, dict):
        raise ValueError(f"a scenario must be a JSON object, got {scenario!r}")
    unknown = set(scenario) - SCENARIO_FIELDS
    if unknown:
        raise ValueError(f"unknown scenario field(s) {sorted(unknown)}; known: {sorted(SCENARIO_FIELDS)}")
    rnd = scenario.get("random")
    if rnd is not None and (not isinstance(rnd, dict) or set(rnd) - RANDOM_FIELDS):
        raise ValueError(f"'random' must be an object with keys from {sorted(RANDOM_FIELDS)}")
    chunk_size = scenario.get("chunk_size", 16)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError("chunk_size must be a positive integer")
    chunks = scenario.get("chunks")
    if chunks is not None and not (isinstance(chunks, list) and all(isinstance(c, str) for c in chunks)):
        raise ValueError("chunks must be a list of strings")
    if scenario.get("cut_mode", "close") not in ("close", "reset"):
        raise ValueError("cut_mode must be 'close' or 'reset'")
    segments = scenario.get("segments")
    if segments is not None and not (
        isinstance(segments, list)
        and all(
            isinstance(g, dict) and isinstance(g.get("text"), str) and set(g) <= {"text", "cite"}
            for g in segments
        )
    ):
        raise ValueError('segments must be a list of {"text": str, "cite": [[index, start, end], ...]}')
    for key in ("text", "match_model", "stop_reason", "error_type", "error_message", "error_code"):
        if key in scenario and not isinstance(scenario[key], str):
            raise ValueError(f"{key} must be a string")
    for key in (
        "status",
        "repeat",
        "stall_after_chunks",
        "error_after_chunks",
        "cut_after_chunks",
        "restate",
        "input_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ):
        if key in scenario and not (isinstance(scenario[key], int) and scenario[key] >= 0):
            raise ValueError(f"{key} must be a non-negative integer")
    for key in ("first_token_delay_ms", "delay_ms", "stall_ms", "retry_after_ms", "ping_every_ms"):
        if key in scenario and not (isinstance(scenario[key], int | float) and scenario[key] >= 0):
            raise ValueError(f"{key} must be a non-negative number")
    headers = scenario.get("headers")
    if headers is not None and not (
        isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())
    ):
        raise ValueError("headers must be an object of strings")
    return scenario


def draw_fault(spec: dict[str, Any], n: int, n_chunks: int) -> tuple[str | None, dict[str, Any]]:
    """One fault (or none) for request ``n``, from ``random.Random(seed + n)``."""
    rng = random.Random(int(spec.get("seed", 0)) + n)
    r = rng.random()
    acc = 0.0
    for fault in ("status_529", "error_event", "cut", "stall"):
        acc += float(spec.get("p_" + fault, 0.0))
        if r < acc:
            break
    else:
        return None, {}
    at = rng.randint(0, max(0, n_chunks - 1))
    if fault == "status_529":
        return fault, {"status": 529}
    if fault == "error_event":
        return fault, {"error_after_chunks": at}
    if fault == "cut":
        return fault, {"cut_after_chunks": at}
    return fault, {"stall_after_chunks": at, "stall_ms": spec.get("stall_ms", 600_000)}


def _cite(body: dict[str, Any], ref: list[int] | dict[str, Any]) -> dict[str, Any]:
    """A scenario's citation: ``[search_result_index, start, end]`` of the request, or an object as is."""
    return ref if isinstance(ref, dict) else citation(body, *ref)


class _Answer:
    """One answer as deltas: its content blocks (text and citations) cut into chunks, and their frames.

    A plain answer (one uncited block, no thinking) is framed lazily from the cached delta frames, as the
    load tests need; anything else (a few hundred characters) is framed up front. Each cited block starts
    a new content block whose ``citations_delta`` events come before its first text, as the API sends them.
    """

    def __init__(self, body: dict[str, Any], plan: dict[str, Any]) -> None:
        if "chunks" in plan:
            blocks = [(list(plan["chunks"]) * int(plan.get("repeat", 1)), [])]
        else:
            size = int(plan.get("chunk_size", 16))
            if "text" in plan:
                segments: list[Segment] = [(plan["text"] * int(plan.get("repeat", 1)), [])]
            elif "segments" in plan:
                segments = [
                    (g["text"], [_cite(body, ref) for ref in g.get("cite") or []]) for g in plan["segments"]
                ]
            else:
                segments = default_segments(body, int(plan.get("restate", 0)))
            blocks = [([t[i : i + size] for i in range(0, len(t), size)], cites) for t, cites in segments]
            blocks = [b for b in blocks if b[0] or b[1]] or [([], [])]
        first = 1 if plan.get("thinking") else 0
        self.blocks = blocks
        self.first = first
        self.chunks = [c for chunks, _ in blocks for c in chunks]
        self.block_of = [first + b for b, (chunks, _) in enumerate(blocks) for _ in chunks]
        # What goes out with the response head, and what when the first text is due (the thinking done).
        self.head = THINKING_OPENS if first else block_start(first) + PING
        self.opening = THINKING_ENDS + block_start(first) + PING if first else b""
        self.plain = first == 0 and len(blocks) == 1 and not blocks[0][1]
        self.frames: list[bytes] = [] if self.plain else self._frames()

    def _frames(self) -> list[bytes]:
        frames = []
        index = self.first
        for b, (chunks, cites) in enumerate(self.blocks):
            opening = b"" if b == 0 else block_stop(index) + block_start(index + 1)
            index += b != 0
            opening += b"".join(block_delta(index, {"type": "citations_delta", "citation": c}) for c in cites)
            for k, chunk in enumerate(chunks):
                frames.append(
                    (opening if k == 0 else b"") + block_delta(index, {"type": "text_delta", "text": chunk})
                )
        return frames

    def frame(self, i: int) -> bytes:
        return delta_frame(self.chunks[i]) if self.plain else self.frames[i]

    def last_index(self, sent: int) -> int:
        return self.block_of[sent - 1] if sent else self.first

    def content_blocks(self, sent: int) -> list[dict[str, Any]]:
        """The non-streamed ``content``: the blocks of the first ``sent`` chunks, with their citations."""
        out: list[dict[str, Any]] = []
        taken = 0
        for chunks, cites in self.blocks:
            text = "".join(chunks[: max(0, sent - taken)])
            taken += len(chunks)
            if text or not out:
                out.append({"type": "text", "text": text, **({"citations": cites} if cites else {})})
        return out


# ---------------------------------------------------------------------------------------------------
# One /v1/messages exchange (streamed or not), driven by timer callbacks
# ---------------------------------------------------------------------------------------------------


class _Exchange:
    """A response in progress on a connection. ``step`` is called from timers; nothing awaits."""

    def __init__(self, state: FakeState, conn: _Conn, rec: dict[str, Any]) -> None:
        self.state = state
        self.conn = conn
        self.rec = rec
        self.handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self.done = False
        self.waiting_write = False
        state.active_streams += 1
        conn.exchange = self

    def _end(self, outcome: str) -> None:
        self.done = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.rec["outcome"] = outcome
        self.rec["ended_at"] = time.time()
        self.state.active_streams -= 1
        self.state.outcomes[outcome] += 1
        self.conn.exchange = None

    def on_disconnect(self) -> None:
        if not self.done:
            self._end("client_disconnected")

    def step(self) -> None:
        raise NotImplementedError

    def cut(self, mode: str) -> None:
        self._end("cut")
        transport = self.conn.transport
        if mode == "reset":
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()  # flushes what was written, then FIN: the chunked body is left incomplete


class _Stream(_Exchange):
    def __init__(
        self,
        state: FakeState,
        conn: _Conn,
        rec: dict[str, Any],
        *,
        get_frame: Callable[[int], bytes],
        opening: bytes,
        last_index: Callable[[int], int],
        n_chunks: int,
        plan: dict[str, Any],
        head: bytes,
        tail_usage: dict[str, Any],
        stop_reason: str,
    ) -> None:
        super().__init__(state, conn, rec)
        self.loop = state.loop
        self.get_frame = get_frame
        self.opening = opening  # written before the first delta (a thinking block's end)
        self.last_index = last_index
        self.n = n_chunks
        self.i = 0
        self.delay = float(plan.get("delay_ms", 0)) / 1000
        self.first_delay = float(plan.get("first_token_delay_ms", 0)) / 1000

        def at(key: str) -> int:
            k = plan.get(key)
            return -1 if k is None else min(int(k), n_chunks)

        self.stall_at = at("stall_after_chunks")
        self.stall_s = float(plan.get("stall_ms", 600_000)) / 1000
        self.error_at = at("error_after_chunks")
        self.cut_at = at("cut_after_chunks")
        self.cut_mode = plan.get("cut_mode", "close")
        self.error_type = plan.get("error_type", "overloaded_error")
        self.error_message = plan.get("error_message", ERROR_MESSAGES.get(self.error_type, "Error"))
        self.tail_usage = tail_usage
        self.stop_reason = stop_reason
        self.stalled = False
        conn.transport.write(head)
        self.ping_every = float(plan.get("ping_every_ms", 0)) / 1000
        self.pinger: asyncio.TimerHandle | None = None
        if self.ping_every > 0:
            self.pinger = self.loop.call_later(self.ping_every, self.ping)
        self.next_at = self.loop.time() + self.first_delay
        if self.first_delay > 0:
            self.handle = self.loop.call_at(self.next_at, self.step)
        else:
            self.step()

    def ping(self) -> None:
        if self.done or self.conn.closed:
            return
        self.conn.transport.write(_event("ping", {"type": "ping"}))
        self.pinger = self.loop.call_later(self.ping_every, self.ping)

    def step(self) -> None:
        self.handle = None
        conn = self.conn
        if self.done or conn.closed:
            return
        write = conn.transport.write
        rec = self.rec
        budget = BATCH_WITHOUT_DELAY
        while True:
            i = self.i
            if i == self.stall_at and not self.stalled:
                self.stalled = True
                self.next_at = self.loop.time() + self.stall_s
                self.handle = self.loop.call_at(self.next_at, self.step)
                return
            if i == self.error_at:
                error = {"type": "error", "error": {"type": self.error_type, "message": self.error_message}}
                write(_event("error", error) + LAST_CHUNK)
                self._finish("error_event")
                return
            if i == self.cut_at:
                self.cut(self.cut_mode)
                return
            if i >= self.n:
                usage = dict(self.tail_usage, output_tokens=i)
                delta = {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                    "usage": usage,
                }
                stop = self.opening + block_stop(self.last_index(i))
                write(stop + _event("message_delta", delta) + MESSAGE_STOP + LAST_CHUNK)
                self._finish("completed")
                return
            if conn.paused:
                self.waiting_write = True
                return
            if self.opening:
                write(self.opening)
                self.opening = b""
            write(self.get_frame(i))
            self.i = i + 1
            rec["chunks_sent"] = i + 1
            if self.delay > 0 and self.i < self.n:
                now = self.loop.time()
                self.next_at = max(self.next_at + self.delay, now)
                self.handle = self.loop.call_at(self.next_at, self.step)
                return
            budget -= 1
            if budget == 0:
                self.handle = self.loop.call_soon(self.step)
                return

    def _finish(self, outcome: str) -> None:
        self._end(outcome)
        self.conn.response_done()


class _Plain(_Exchange):
    """A non-streaming request: wait (first token delay, stall), then one JSON response."""

    def __init__(
        self,
        state: FakeState,
        conn: _Conn,
        rec: dict[str, Any],
        *,
        plan: dict[str, Any],
        message: dict[str, Any],
        n_chunks: int,
    ) -> None:
        super().__init__(state, conn, rec)
        self.plan = plan
        self.message = message
        self.n_chunks = n_chunks
        wait = float(plan.get("first_token_delay_ms", 0)) / 1000
        if plan.get("stall_after_chunks") is not None:
            wait += float(plan.get("stall_ms", 600_000)) / 1000
        if wait > 0:
            self.handle = state.loop.call_later(wait, self.step)
        else:
            self.step()

    def step(self) -> None:
        self.handle = None
        if self.done or self.conn.closed:
            return
        plan = self.plan
        if plan.get("cut_after_chunks") is not None:
            self.cut(plan.get("cut_mode", "close"))
            return
        if plan.get("error_after_chunks") is not None:
            error_type = plan.get("error_type", "overloaded_error")
            self.rec["status"] = 529
            self._end("http_error")
            self.state.send_error(self.conn, 529, error_type, plan.get("error_message"), self.rec)
            return
        self.rec["chunks_sent"] = self.n_chunks
        self._end("completed")
        self.state.send_json(self.conn, 200, self.message, [("request-id", self.rec["request_id"])])


# ---------------------------------------------------------------------------------------------------
# Shared state and request handling
# ---------------------------------------------------------------------------------------------------


class FakeState:
    def __init__(self, loop: asyncio.AbstractEventLoop, max_records: int) -> None:
        self.loop = loop
        self.max_records = max_records
        self.active_streams = 0
        self.conns: set[_Conn] = set()
        self.reset()

    def reset(self) -> None:
        self.queue: list[dict[str, Any]] = []
        self.default: dict[str, Any] = {}
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.max_records)
        self.n = 0
        self.outcomes: collections.Counter[str] = collections.Counter()

    # -- responses ------------------------------------------------------------------------------------

    def send_json(
        self,
        conn: _Conn,
        status: int,
        obj: Any,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        if conn.closed:
            return
        body = _dumps(obj)
        head = [("content-type", "application/json"), ("content-length", str(len(body)))]
        conn.transport.write(_head(status, head + (headers or []), conn.keep_alive) + body)
        conn.response_done()

    def send_error(
        self,
        conn: _Conn,
        status: int,
        error_type: str | None = None,
        message: str | None = None,
        rec: dict[str, Any] | None = None,
        headers: list[tuple[str, str]] | None = None,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        error_type = error_type or ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        request_id = rec["request_id"] if rec else f"req_fake_ctl{time.monotonic_ns()}"
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message or ERROR_MESSAGES.get(error_type, "Error")},
            "request_id": request_id,
        }
        if details is not None:
            body["error"]["details"] = details
        self.send_json(conn, status, body, [("request-id", request_id), *(headers or [])])

    # -- routing --------------------------------------------------------------------------------------

    def handle(self, conn: _Conn, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        path, _, query = target.partition("?")
        try:
            if path == "/v1/messages":
                if method != "POST":
                    self.send_error(conn, 405, "invalid_request_error", f"Method {method} not allowed")
                else:
                    self.messages(conn, headers, body)
            elif path == "/v1/messages/count_tokens" and method == "POST":
                self.send_json(conn, 200, {"input_tokens": max(1, len(body) // 4)})
            elif path.startswith("/_fake/"):
                self.control(conn, method, path, query, body)
            else:
                self.send_error(conn, 404, "not_found_error", f"Not found: {method} {path}")
        except Exception as exc:  # a bug in the fake: make it loud, never silent
            traceback.print_exc(file=sys.stderr)
            if conn.exchange is None and not conn.closed:
                self.send_error(conn, 500, "api_error", f"fake server bug: {exc!r}")

    def control(self, conn: _Conn, method: str, path: str, query: str, body: bytes) -> None:
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            self.send_error(conn, 400, "invalid_request_error", "control body is not JSON")
            return
        try:
            if method == "POST" and path == "/_fake/reset":
                self.reset()
                self.send_json(conn, 200, {"ok": True})
            elif method == "POST" and path == "/_fake/default":
                self.default = validate_scenario(payload)
                self.send_json(conn, 200, {"ok": True})
            elif method == "POST" and path == "/_fake/enqueue":
                scenarios = payload.get("scenarios") if isinstance(payload, dict) else None
                if not isinstance(scenarios, list):
                    raise ValueError('body must be {"scenarios": [...]}')
                self.queue.extend(validate_scenario(s) for s in scenarios)
                self.send_json(conn, 200, {"ok": True, "queued": len(self.queue)})
            elif method == "GET" and path == "/_fake/requests":
                since = 0
                for part in query.split("&"):
                    key, _, value = part.partition("=")
                    if key == "since" and value:
                        since = int(value)
                self.send_json(conn, 200, [r for r in self.records if r["n"] > since])
            elif method == "GET" and path == "/_fake/stats":
                stats = {
                    "active_streams": self.active_streams,
                    "total_requests": self.n,
                    "queued": len(self.queue),
                    "open_connections": len(self.conns),
                    "outcomes": dict(self.outcomes),
                }
                self.send_json(conn, 200, stats)
            elif method == "GET" and path == "/_fake/health":
                self.send_json(conn, 200, {"ok": True})
            else:
                self.send_error(conn, 404, "not_found_error", f"Not found: {method} {path}")
        except ValueError as exc:
            self.send_error(conn, 400, "invalid_request_error", str(exc))

    def take_scenario(self, model: str) -> dict[str, Any]:
        for i, scenario in enumerate(self.queue):
            wanted = scenario.get("match_model")
            if wanted is None or wanted == model:
                del self.queue[i]
                return scenario
        return self.default

    # -- /v1/messages -----------------------------------------------------------------------------------

    def messages(self, conn: _Conn, headers: dict[str, str], raw: bytes) -> None:
        self.n += 1
        n = self.n
        rec: dict[str, Any] = {
            "n": n,
            "model": None,
            "headers": headers,
            "body": None,
            "scenario": {},
            "fault": None,
            "status": 0,
            "stream": False,
            "chunks_sent": 0,
            "outcome": "in_progress",
            "started_at": time.time(),
            "ended_at": None,
            "chunks_sent_after_disconnect": 0,
            "request_id": f"req_fake{n:020d}",
        }
        self.records.append(rec)

        def reject(status: int, message: str) -> None:
            rec["status"] = status
            rec["outcome"] = "http_error"
            rec["ended_at"] = time.time()
            self.outcomes["http_error"] += 1
            self.send_error(conn, status, None, message, rec)

        try:
            body = json.loads(raw)
        except ValueError:
            body = None
            rec["body"] = raw.decode("utf-8", "replace")
        else:
            rec["body"] = body
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            rec["model"] = body["model"]
            rec["stream"] = body.get("stream") is True
        api_key = headers.get("x-api-key", "")
        bearer = headers.get("authorization", "")
        if not api_key and not (bearer[:7].lower() == "bearer " and bearer[7:].strip()):
            reject(401, "Missing API key: send x-api-key or Authorization: Bearer.")
            return
        if body is None:
            reject(400, "The request body is not valid JSON.")
            return
        if "anthropic-version" not in headers:
            reject(400, "anthropic-version: header is required")
            return
        if len(raw) > MAX_BODY_BYTES:
            reject(413, ERROR_MESSAGES["request_too_large"])
            return
        problem = _validate_body(body) or request_problem(body)
        if problem:
            reject(400, problem)
            return

        model: str = body["model"]
        scenario = self.take_scenario(model)
        plan = dict(scenario)

        # The answer: content blocks (each with its citations) cut into deltas.
        answer = _Answer(body, plan)
        n_chunks = len(answer.chunks)
        stop_reason = plan.get("stop_reason", "end_turn")
        max_tokens = body["max_tokens"]
        if n_chunks > max_tokens:
            n_chunks = max_tokens
            stop_reason = "max_tokens"

        if isinstance(plan.get("random"), dict):
            fault, overrides = draw_fault(plan["random"], n, n_chunks)
            rec["fault"] = fault
            plan.update(overrides)
        rec["scenario"] = plan

        status = int(plan.get("status", 200))
        extra = [(k.lower(), v) for k, v in (plan.get("headers") or {}).items()]
        if status != 200:
            if "retry_after" in plan:
                extra.append(("retry-after", str(plan["retry_after"])))
            if "retry_after_ms" in plan:
                extra.append(("retry-after-ms", str(plan["retry_after_ms"])))
            if "should_retry" in plan:
                extra.append(("x-should-retry", "true" if plan["should_retry"] else "false"))
            rec["status"] = status
            rec["outcome"] = "http_error"
            rec["ended_at"] = time.time()
            self.outcomes["http_error"] += 1
            details = {"error_code": plan["error_code"]} if "error_code" in plan else None
            self.send_error(
                conn, status, plan.get("error_type"), plan.get("error_message"), rec, extra, details=details
            )
            return

        rec["status"] = 200
        usage = {
            "input_tokens": int(plan.get("input_tokens", max(1, len(raw) // 4))),
            "cache_creation_input_tokens": int(plan.get("cache_creation_input_tokens", 0)),
            "cache_read_input_tokens": int(plan.get("cache_read_input_tokens", 0)),
        }
        msg_id = f"msg_{n}"
        if not rec["stream"]:
            message = {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": answer.content_blocks(n_chunks),
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": dict(usage, output_tokens=n_chunks),
            }
            _Plain(self, conn, rec, plan=plan, message=message, n_chunks=n_chunks)
            return

        start = {
            "type": "message_start",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": dict(usage, output_tokens=1),
            },
        }
        head_headers = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
            ("request-id", rec["request_id"]),
            *extra,
        ]
        head = _head(200, head_headers, conn.keep_alive) + _event("message_start", start) + answer.head
        _Stream(
            self,
            conn,
            rec,
            get_frame=answer.frame,
            opening=answer.opening,
            last_index=answer.last_index,
            n_chunks=n_chunks,
            plan=plan,
            head=head,
            tail_usage=usage,
            stop_reason=stop_reason,
        )


def _validate_body(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (a positive integer)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or "content" not in m:
            return f"messages.{i}: each message needs a role (user|assistant) and content"
    return None


# ---------------------------------------------------------------------------------------------------
# HTTP/1.1 connection: minimal request parser, responses written by hand
# ---------------------------------------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    def __init__(self, state: FakeState) -> None:
        self.state = state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = bytearray()
        self.closed = False
        self.paused = False
        self.busy = False
        self.keep_alive = True
        self.exchange: _Exchange | None = None
        self._head: tuple[str, str, str, dict[str, str], int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.conns.add(self)
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.conns.discard(self)
        if self.exchange is not None:
            self.exchange.on_disconnect()

    def eof_received(self) -> bool:
        return False  # the client went away: close, which reports a disconnect at once

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        ex = self.exchange
        if ex is not None and ex.waiting_write:
            ex.waiting_write = False
            ex.step()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._parse()

    def response_done(self) -> None:
        self.busy = False
        if not self.keep_alive:
            self.closed = True  # stop parsing/answering: the connection is closing
            self.transport.close()
        elif self.buf:
            self.state.loop.call_soon(self._parse)

    def _bad(self, status: int, message: str) -> None:
        self.keep_alive = False
        self.busy = True
        self.state.send_error(self, status, None, message)

    def _parse(self) -> None:
        buf = self.buf
        while not self.busy and not self.closed:
            if self._head is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEADER_BYTES:
                        self._bad(431, "request header too large")
                    return
                lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
                del buf[: end + 4]
                parts = lines[0].split(" ")
                if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                    self._bad(400, "malformed request line")
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if not sep:
                        self._bad(400, "malformed header line")
                        return
                    name = name.strip().lower()
                    value = value.strip()
                    headers[name] = f"{headers[name]}, {value}" if name in headers else value
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    length = -1
                else:
                    try:
                        length = int(headers.get("content-length") or 0)
                    except ValueError:
                        self._bad(400, "bad content-length")
                        return
                if length > MAX_BODY_BYTES * 2:
                    self._bad(413, ERROR_MESSAGES["request_too_large"])
                    return
                if headers.get("expect", "").lower() == "100-continue":
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self._head = (parts[0], parts[1], parts[2], headers, length)
            method, target, version, headers, length = self._head
            if length >= 0:
                if len(buf) < length:
                    return
                body = bytes(buf[:length])
                del buf[:length]
            else:
                decoded = _dechunk(buf)
                if decoded is None:
                    return
                body = decoded
            self._head = None
            connection = headers.get("connection", "").lower()
            if version == "HTTP/1.0":
                self.keep_alive = "keep-alive" in connection
            else:
                self.keep_alive = "close" not in connection
            self.busy = True
            self.state.handle(self, method, target, headers, body)


def _dechunk(buf: bytearray) -> bytes | None:
    """Decode a complete chunked body at the start of ``buf`` (consuming it), or None if incomplete."""
    pos = 0
    parts = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)
            if end < 0:
                return None
            del buf[: end + 4]
            return b"".join(parts)
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------


def _raise_fd_limit() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 1 << 16
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass


async def serve(host: str, port: int, max_records: int, parent_pid: int | None) -> None:
    loop = asyncio.get_running_loop()
    state = FakeState(loop, max_records)
    server = await loop.create_server(lambda: _Conn(state), host, port, backlog=4096, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    print(f"READY http://{url_host}:{bound}", flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if parent_pid is not None:

        def watch_parent() -> None:
            if os.getppid() != parent_pid:
                stop.set()
            else:
                loop.call_later(0.5, watch_parent)

        watch_parent()
    await stop.wait()
    server.close()
    for conn in list(state.conns):
        conn.transport.abort()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--max-records", type=int, default=20_000, help="request records kept (oldest dropped)"
    )
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="exit when this parent process goes away"
    )
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    _raise_fd_limit()
    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port, args.max_records, args.parent_pid))


if __name__ == "__main__":
    main()
