"""The service under tracemalloc, for attributing its per-stream memory (`bench/suites/profile.py`).

    BENCH_TRACE_OUT=/tmp/x.json python -m bench.traced_server

The first SIGUSR1 takes the baseline snapshot; each later one writes, to BENCH_TRACE_OUT, the Python memory
allocated since then, grouped by the package of the innermost frame that is not the standard library
(so an `asyncio.Event` created by anyio counts for anyio). tracemalloc slows the process down: only the
attribution is meaningful here, not its speed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import tracemalloc
from collections import Counter
from types import FrameType
from typing import Any

_PACKAGE = re.compile(r"site-packages/([A-Za-z0-9_]+)|/(zantara_rag|bench)/")


def package(filename: str) -> str | None:
    match = _PACKAGE.search(filename)
    if match is None:
        return None
    return match.group(1) or match.group(2)


def attribute(stats: list[Any]) -> dict[str, Any]:
    by_package: Counter[str] = Counter()
    by_line: Counter[str] = Counter()
    for stat in stats:
        if stat.size_diff <= 0:
            continue
        owner, line = "python stdlib", None
        for frame in reversed(stat.traceback):  # innermost first
            name = package(frame.filename)
            if name is not None:
                owner, line = name, f"{name}: {frame.filename.split(name + '/', 1)[-1]}:{frame.lineno}"
                break
        by_package[owner] += stat.size_diff
        if line:
            by_line[line] += stat.size_diff
    return {
        "total_bytes": sum(by_package.values()),
        "by_package": dict(by_package.most_common()),
        "top_lines": dict(by_line.most_common(15)),
    }


def main() -> None:
    tracemalloc.start(6)
    from zantara_rag.server import run
    from zantara_rag.settings import Settings

    out = os.environ["BENCH_TRACE_OUT"]
    state: dict[str, Any] = {}

    def dump(signum: int, frame: FrameType | None) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        if "base" not in state:
            state["base"] = snapshot
            result: dict[str, Any] = {"baseline": True}
        else:
            result = attribute(snapshot.compare_to(state["base"], "traceback"))
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f)
        os.replace(tmp, out)

    signal.signal(signal.SIGUSR1, dump)
    run(Settings())


if __name__ == "__main__":
    main()
