"""Start, stop and steer the fake Anthropic server (``tests/fakes/anthropic_server.py``) from tests.

Usage::

    with FakeAnthropic() as fake:
        fake.enqueue({"chunks": ["Hel", "lo"]}, {"status": 529})
        client = anthropic.AsyncAnthropic(api_key="test-key", base_url=fake.base_url, max_retries=0)
        ...
        fake.wait_for(lambda reqs: reqs[-1]["outcome"] == "client_disconnected", timeout=1.0)

Scenario fields (all optional; unknown fields are rejected with an error):

- ``status``: non-200 returns Anthropic's JSON error body (error type from the status, or ``error_type``),
  with ``retry_after`` (-> ``retry-after``), ``retry_after_ms`` (-> ``retry-after-ms``) and ``should_retry``
  (-> ``x-should-retry: true|false``) headers if given.
- ``text`` replaces the default answer; ``chunks`` gives the exact deltas; else the text is split every
  ``chunk_size`` characters (16). ``repeat`` repeats the text (or the chunk list) N times.
- ``first_token_delay_ms`` (before the first delta), ``delay_ms`` (between deltas).
- ``stall_after_chunks`` + ``stall_ms`` (600000): pause after that many deltas, then carry on.
- ``error_after_chunks``: ``event: error`` (overloaded_error, or ``error_type``/``error_message``) and end.
- ``cut_after_chunks``: close the connection mid-body (``cut_mode`` "close" = FIN, "reset" = TCP RST).
- ``stop_reason`` (default end_turn; max_tokens when the request's max_tokens truncates, 1 chunk = 1 token).
- ``input_tokens``, ``cache_read_input_tokens``, ``cache_creation_input_tokens``: usage overrides.
- ``headers``: extra response headers. ``label``: a tag echoed in the request record.
- ``match_model`` (queued scenarios only): only a request for that model takes it.
- ``random``: ``{"seed", "p_error_event", "p_cut", "p_status_529", "p_stall", "stall_ms"}``; each request
  draws one fault (or none) from ``random.Random(seed + n)``; the record's ``fault`` says which.

Request records (``requests()``) carry ``n, model, headers (lower-case), body, scenario (effective),
fault, status, stream, chunks_sent, outcome, started_at, ended_at, chunks_sent_after_disconnect,
request_id``; ``outcome`` is one of completed, client_disconnected, error_event, cut, http_error,
in_progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as _json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
Records = list[dict[str, Any]]


class FakeAnthropic:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        startup_timeout: float = 15.0,
        extra_args: tuple[str, ...] = (),
        module: str = "tests.fakes.anthropic_server",
    ) -> None:
        self.module = module  # the server to run: this fake, or a variant of it (bench/upstream.py)
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args
        self._proc: subprocess.Popen[str] | None = None
        self._base_url: str | None = None
        self._http: httpx.Client | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        if self._proc is not None:
            raise RuntimeError("FakeAnthropic already started")
        cmd = [
            sys.executable,
            "-m",
            self.module,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--parent-pid",
            str(os.getpid()),
            *self.extra_args,
        ]
        self._proc = proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, bufsize=1
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:  # hand over lines up to READY, then keep the pipe drained (forwarded)
            assert proc.stdout is not None
            ready = False
            for line in proc.stdout:
                if ready:
                    sys.stdout.write(line)
                else:
                    ready = line.startswith("READY ")
                    lines.put(line)
            if not ready:
                lines.put(None)

        threading.Thread(target=pump, name="fake-anthropic-stdout", daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(
                    f"fake Anthropic server not READY within {self.startup_timeout}s"
                ) from None
            if line is None:
                code = proc.wait()
                self._proc = None
                raise RuntimeError(f"fake Anthropic server exited with code {code} before READY")
            if line.startswith("READY "):
                self._base_url = line.split(" ", 1)[1].strip()
                break
            sys.stdout.write(line)
        self._http = httpx.Client(base_url=self._base_url, timeout=10.0, trust_env=False)
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stdout is not None:
            with contextlib.suppress(OSError):
                proc.stdout.close()

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("FakeAnthropic is not running; call start() first")
        return self._proc.pid

    @property
    def base_url(self) -> str:
        if self._base_url is None or self._proc is None:
            raise RuntimeError("FakeAnthropic is not running; call start() first")
        return self._base_url

    # -- control API ----------------------------------------------------------------------------------

    def _call(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        if self._http is None:
            raise RuntimeError("FakeAnthropic is not running; call start() first")
        # Encoded here with \u escapes (httpx would UTF-8 encode and choke on lone surrogates in chunks).
        content = None if json is None else _json.dumps(json).encode()
        headers = None if json is None else {"content-type": "application/json"}
        response = self._http.request(method, path, content=content, headers=headers, params=params)
        if response.status_code != 200:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text}")
        return response.json()

    def reset(self) -> None:
        """Clear the queue, the default scenario and the recorded requests (and restart ``n`` at 1)."""
        self._call("POST", "/_fake/reset")

    def set_default(self, **scenario: Any) -> None:
        """The scenario for requests that find nothing for them in the queue."""
        self._call("POST", "/_fake/default", json=scenario)

    def enqueue(self, *scenarios: dict[str, Any]) -> None:
        """One-shot scenarios, consumed FIFO (respecting ``match_model``), one per request."""
        self._call("POST", "/_fake/enqueue", json={"scenarios": list(scenarios)})

    def requests(self, since: int | None = None) -> Records:
        params = {"since": since} if since is not None else None
        return self._call("GET", "/_fake/requests", params=params)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_fake/stats")

    def wait_for(
        self, predicate: Callable[[Records], bool], timeout: float = 2.0, interval: float = 0.01
    ) -> Records:
        """Poll ``requests()`` until ``predicate(requests)``; return them, or raise ``TimeoutError``.

        This blocks: from a test whose code under test runs in the same event loop (an in-process ASGI
        app), use ``await wait_for_async(...)`` so that loop can close its upstream stream meanwhile.
        """
        deadline = time.monotonic() + timeout
        while True:
            records = self.requests()
            if predicate(records):
                return records
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s; requests: {_summary(records)}")
            time.sleep(interval)

    async def wait_for_async(
        self,
        predicate: Callable[[Records], bool],
        timeout: float = 2.0,  # noqa: ASYNC109 (same signature as wait_for)
        interval: float = 0.01,
    ) -> Records:
        """``wait_for`` that yields to the running event loop between polls."""
        deadline = time.monotonic() + timeout
        while True:
            records = await asyncio.to_thread(self.requests)
            if predicate(records):
                return records
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s; requests: {_summary(records)}")
            await asyncio.sleep(interval)


def _summary(records: Records) -> list[dict[str, Any]]:
    keys = ("n", "model", "status", "outcome", "chunks_sent", "fault")
    return [{k: r.get(k) for k in keys} for r in records[-10:]]
