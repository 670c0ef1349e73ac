"""Where the service's CPU goes while it relays: py-spy samples the app process under the relay load.

The app relays N streams at 40 chunks/s (as in `relay`); once the upstream holds all of them, py-spy records
for a few seconds (non-blocking sampling). The stacks are reduced to (a) the share of samples in which a
function is on the stack (inclusive), for the functions that make up the relay path, and (b) the share of
samples whose innermost frame lies in each package (self time).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import kb
from bench.apps import AppProcess
from bench.context import ROOT
from bench.upstream import Upstream, stream_at

# (label, pattern matched against one frame "function (path:line)")
# (label, pattern matched against one frame, "Qualified.name (package/module.py:line)")
INCLUSIVE = [
    ("producer: pipeline.produce", r"^produce \(zantara_rag/pipeline\.py"),
    ("  Claude SDK stream iteration", r"^Async(MessageStream|Stream)\.(__aiter__|__stream__) \(anthropic/"),
    ("    SSE decoding (SDK)", r"\(anthropic/_(streaming|decoders)"),
    ("    event models: construct, accumulate, build", r"\(anthropic/(_models|lib/streaming/_messages)\.py"),
    ("    httpx2 / httpcore reads", r"\((httpx2|httpcore2?|httpcore|anyio/streams/tls)/"),
    ("  TextEvent encoding (pydantic)", r"^_Event\.to_json \(zantara_rag/events\.py|TextEvent"),
    ("  Stream.append (buffer, wake readers)", r"^Stream\.append \(zantara_rag/streams\.py"),
    ("  metrics", r"\(zantara_rag/metrics\.py"),
    ("response: FastAPI SSE producer (follow, ServerSentEvent, encode)", r"_sse_producer_cm\.<locals>\._producer \("),
    ("  Stream.follow", r"^Stream\.follow \(zantara_rag/streams\.py"),
    ("  chat_stream generator", r"^chat_stream \(zantara_rag/routes/chat\.py"),
    ("response: FastAPI keep-alive inserter", r"_keepalive_inserter \("),
    ("response: Starlette StreamingResponse", r"StreamingResponse\.stream_response \("),
    ("  middleware send wrappers", r"\((zantara_rag/(middleware|request_log)|starlette/middleware/cors|starlette/_exception)"),
    ("  uvicorn send (httptools)", r"\(uvicorn/protocols/http/"),
    ("anyio memory streams and cancel scopes", r"\(anyio/"),
]
PACKAGES = [
    ("anthropic SDK", r"\(anthropic/"),
    ("httpx2/httpcore", r"\((httpx2|httpcore2?|httpcore|h11)/"),
    ("pydantic", r"\(pydantic(_core)?/"),
    ("fastapi", r"\(fastapi/"),
    ("starlette", r"\(starlette/"),
    ("anyio", r"\(anyio/"),
    ("uvicorn", r"\(uvicorn/"),
    ("zantara_rag", r"\(zantara_rag/"),
    ("prometheus_client", r"\(prometheus_client/"),
    ("asyncio", r"\(asyncio/"),
    ("typing/json/re/other stdlib", r"\((typing|json/|re/|enum|functools|abc|contextlib|copy|threading)"),
]


def reduce(raw: str) -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        for label, pattern in INCLUSIVE:
            if any(re.search(pattern, f) for f in frames):
                inclusive[label] += count
        leaf = frames[-1]
        own[next((label for label, pattern in PACKAGES if re.search(pattern, leaf)), "other")] += count
    pct = lambda c: round(100 * c / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "inclusive_pct": {label: pct(inclusive[label]) for label, _ in INCLUSIVE},
        "self_pct_by_package": {k: pct(v) for k, v in own.most_common()},
    }


def run(bench: Any) -> dict[str, Any]:
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        return {"skipped": "py-spy not installed (pip install -e '.[bench]')"}
    pyspy = (
        str(Path(sys.executable).parent / "py-spy")
        if (Path(sys.executable).parent / "py-spy").exists()
        else "py-spy"
    )
    n = int(bench.params.get("profile_streams", 500))
    seconds = 8
    with Upstream() as upstream, AppProcess("zantara", kb.path_for(10000) / "chroma", upstream.url) as proc:
        upstream.reset(default=stream_at(40, 300))
        spec = {
            "mode": "relay", "port": proc.port, "streams": n, "windows": 1, "window_s": seconds + 6,
            "settle_s": 0.5, "max_pending": 64, "query_offset": 9_000_000, "pids": {"server": proc.pid},
            "max_seconds": 200,
        }  # fmt: skip
        loadgen = subprocess.Popen([sys.executable, "-m", "bench.loadgen", json.dumps(spec)], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while upstream.stats().get("active_streams", 0) < n and time.monotonic() < deadline:
                time.sleep(0.25)
            time.sleep(2)
            bench.log(f"profile: py-spy on the service relaying {n} streams for {seconds}s")
            with tempfile.NamedTemporaryFile(suffix=".txt") as out:
                subprocess.run(
                    [pyspy, "record", "--pid", str(proc.pid), "--duration", str(seconds), "--rate", "200",
                     "--nonblocking", "--format", "raw", "--output", out.name],
                    capture_output=True, timeout=seconds + 60, check=True,
                )  # fmt: skip
                raw = Path(out.name).read_text()
        finally:
            try:
                loadgen.wait(timeout=120)
            except subprocess.TimeoutExpired:
                loadgen.kill()
                loadgen.wait()
    result = reduce(raw)
    result["streams"] = n
    result["seconds"] = seconds
    return result
