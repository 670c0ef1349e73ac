"""The hot path of reading Claude: CPU per text delta in `Claude.stream`, and per text event built.

    python -m bench.claude_read             # this checkout
    PYTHONPATH=<other checkout>/apps python -m bench.claude_read   # another revision, to compare

CPU time of this process only (the fake Claude server is another process), so a busy machine blurs it less
than wall time: 20,000 deltas of 4 characters read through the real SDK, median of 7 runs.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import timeit

from tests.fakes.control import FakeAnthropic

from zantara_rag.domain import AnswerMeta
from zantara_rag.events import TextEvent, now
from zantara_rag.generation.claude import Claude, make_client
from zantara_rag.settings import Settings

DELTAS = 20_000
MESSAGES = [{"role": "user", "content": "Hello"}]
SYSTEM = [{"type": "text", "text": "You are Zantara."}]


async def read_once(claude: Claude) -> tuple[float, int]:
    pieces = 0
    started = time.process_time()
    async for _ in claude.stream("claude-haiku-4-5", SYSTEM, MESSAGES, AnswerMeta()):
        pieces += 1
    return time.process_time() - started, pieces


async def main() -> None:
    with FakeAnthropic() as fake:
        fake.set_default(text="x" * (DELTAS * 4), chunk_size=4)
        s = Settings(
            anthropic_api_key="sk-ant-bench", anthropic_base_url=fake.base_url, max_output_tokens=64000
        )
        claude = Claude(s, make_client(s))
        await read_once(claude)  # warm-up
        runs = [await read_once(claude) for _ in range(7)]
        await claude.aclose()
    per_delta = statistics.median(cpu / pieces * 1e6 for cpu, pieces in runs)
    print(f"Claude.stream: {per_delta:.2f} µs of CPU per delta (median of 7 × {runs[0][1]} deltas)")

    def event() -> str:
        return TextEvent(text="Under Indonesian law", sequence_number=12, timestamp=now()).to_json()

    per_event = min(timeit.repeat(event, number=20_000, repeat=7, timer=time.process_time)) / 20_000 * 1e6
    print(f"TextEvent(...).to_json(): {per_event:.2f} µs per event")


if __name__ == "__main__":
    asyncio.run(main())
