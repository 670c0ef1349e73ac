"""The fake Claude upstream of the benchmarks: the tests' fake server, plus send-time stamps.

    python -m bench.upstream --port 0

It is `tests/fakes/anthropic_server.py` unchanged (plain asyncio on uvloop, one timer callback per delta,
pre-encoded frames), with one addition: a delta whose text is `STAMP` goes out as `@<ns>@`, where `<ns>` is
`time.monotonic_ns()` at the moment the frame is written. The load generator runs on the same machine and
reads the same CLOCK_MONOTONIC, so for every text event it receives it knows exactly how long the event
spent between the upstream's socket and its own: the latency each app under test adds.

`Upstream` starts it as a subprocess and drives its control API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
STAMP = "@T"

# Scenarios (see the field list in tests/fakes/control.py).
INSTANT = {"chunks": [STAMP, " is the first chunk;", " the answer", " ends here."], "label": "instant"}


def stream_at(rate_per_s: float, seconds: float) -> dict[str, Any]:
    """Stamped deltas at a fixed rate, for long enough to outlast the measurement."""
    return {
        "chunks": [STAMP],
        "repeat": max(1, int(rate_per_s * seconds)),
        "delay_ms": 1000 / rate_per_s,
        "label": "relay",
    }


WAITING = {"chunks": ["never"], "first_token_delay_ms": 3_600_000, "label": "waiting"}


def _patch() -> None:
    from tests.fakes import anthropic_server as fake

    original = fake.delta_frame
    head, tail, chunk = fake._DELTA_HEAD, fake._DELTA_TAIL, fake._chunk

    def delta_frame(text: str) -> bytes:
        if text == STAMP:
            return chunk(head + b'"@%d@"' % time.monotonic_ns() + tail)
        return original(text)

    fake.delta_frame = delta_frame


class Upstream:
    """The fake as a subprocess on loopback."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self._http: httpx.Client | None = None

    def start(self) -> Upstream:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.upstream", "--port", "0", "--parent-pid", str(os.getpid())],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the fake upstream did not start: {line!r}")
        self.url = line.split(" ", 1)[1].strip()
        self._http = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        assert self._http is not None
        response = self._http.request(method, path, json=json)
        response.raise_for_status()
        return response.json()

    def reset(self, default: dict[str, Any] | None = None, queue: list[dict[str, Any]] | None = None) -> None:
        self._call("POST", "/_fake/reset")
        if default is not None:
            self._call("POST", "/_fake/default", json=default)
        if queue:
            self._call("POST", "/_fake/enqueue", json={"scenarios": queue})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_fake/stats")
        return result

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    _patch()
    from tests.fakes import anthropic_server

    # The request log is only used through /_fake/stats here; keep it short (bodies are a few KB each).
    anthropic_server.main([*sys.argv[1:], "--max-records", "200"])


if __name__ == "__main__":
    main()
