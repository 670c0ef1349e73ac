"""The fake Claude upstream of the benchmarks: the tests' fake server, plus send-time stamps.

    python -m bench.upstream --port 0

It is `tests/fakes/anthropic_server.py` unchanged (plain asyncio on uvloop, one timer callback per delta,
pre-encoded frames), with one addition: a delta whose text is `STAMP` goes out as `@<ns>@`, where `<ns>` is
`time.monotonic_ns()` at the moment the frame is written. The load generator runs on the same machine and
reads the same CLOCK_MONOTONIC, so for every text event it receives it knows exactly how long the event
spent between the upstream's socket and its own: the latency each app under test adds.

`Upstream` is the tests' `FakeAnthropic` starting this module instead: the same control API.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tests.fakes.control import FakeAnthropic

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


class Upstream(FakeAnthropic):
    """The tests' `FakeAnthropic` (lifecycle and control API), running this module's stamping server."""

    def __init__(self) -> None:
        super().__init__(module="bench.upstream", extra_args=("--max-records", "200"))

    def start(self) -> Upstream:
        super().start()
        return self

    def __enter__(self) -> Upstream:
        return self.start()

    def play(self, default: dict[str, Any], *queue: dict[str, Any]) -> None:
        """Forget earlier requests; `queue` goes to the next requests, `default` to every one after."""
        self.reset()
        self.set_default(**default)
        if queue:
            self.enqueue(*queue)


def main() -> None:
    _patch()
    from tests.fakes import anthropic_server

    # The request log is only used through /_fake/stats here: Upstream keeps it short (--max-records).
    anthropic_server.main(sys.argv[1:])


if __name__ == "__main__":
    main()
