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

# (label, pattern matched against one frame, "Qualified.name (package/module.py:line)")
INCLUSIVE = [
    ("producer: streaming.producer.produce", r"^produce \(zantara_rag/streaming/producer\.py"),
    ("  Claude SDK stream iteration", r"^Async(MessageStream|Stream)\.(__aiter__|__stream__) \(anthropic/"),
    ("    SSE decoding (SDK)", r"\(anthropic/_(streaming|decoders)"),
    ("    event models: construct, accumulate, build", r"\(anthropic/(_models|lib/streaming/_messages)\.py"),
    ("    httpx2 / httpcore reads", r"\((httpx2|httpcore2?|httpcore|anyio/streams/tls)/"),
    ("  TextEvent encoding (pydantic)", r"^_Event\.to_json \(zantara_rag/events\.py|TextEvent"),
    ("  Stream.append (buffer, wake readers)", r"^Stream\.append \(zantara_rag/streaming/stream\.py"),
    ("  metrics", r"\(zantara_rag/metrics\.py"),
    (
        "response: StreamRelay (take, send, heartbeat)",
        r"^StreamRelay\.__call__ \(zantara_rag/streaming/relay\.py",
    ),
    ("  Stream.take (join pending events)", r"^Stream\.take \(zantara_rag/streaming/stream\.py"),
    (
        "  middleware send wrappers",
        r"\((zantara_rag/http/(origin|request_log)|starlette/middleware/cors|starlette/_exception)",
    ),
    ("  uvicorn send (h11)", r"\(uvicorn/protocols/http/"),
    ("anyio (all)", r"\(anyio/"),
    ("  anyio socket streams (the upstream connection)", (r"\(anyio/", r"\(httpcore2/|^StreamProtocol\.")),
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
            patterns = pattern if isinstance(pattern, tuple) else (pattern,)
            if all(any(re.search(p, f) for f in frames) for p in patterns):
                inclusive[label] += count
        leaf = frames[-1]
        own[next((label for label, pattern in PACKAGES if re.search(pattern, leaf)), "other")] += count
    pct = lambda c: round(100 * c / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "inclusive_pct": {label: pct(inclusive[label]) for label, _ in INCLUSIVE},
        "self_pct_by_package": {k: pct(v) for k, v in own.most_common()},
    }


def sdk_paths(spec: dict[str, Any]) -> dict[str, Any]:
    """CPU per upstream event of the SDK's streaming helper, its raw event stream, and plain httpx2 lines.

    Runs in its own process against the fake upstream (`python -m bench.suites.profile '{"url": ...}'`).
    """
    import asyncio
    import resource

    import anthropic
    import httpx2

    request = {
        "model": "claude-haiku-4-5",
        "max_tokens": 64000,
        "messages": [{"role": "user", "content": "hi"}],
    }

    def cpu() -> float:
        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_utime + u.ru_stime

    async def helper(client: Any) -> int:
        count = 0
        async with client.messages.stream(**request) as stream:
            async for event in stream:
                count += event.type == "text"
        return count

    async def raw(client: Any) -> int:
        count = 0
        async with await client.messages.create(stream=True, **request) as stream:
            async for event in stream:
                count += event.type == "content_block_delta"
        return count

    async def post(client: Any) -> int:
        count = 0
        async with await client.post(
            "/v1/messages",
            body={**request, "stream": True},
            cast_to=object,
            stream=True,
            stream_cls=anthropic.AsyncStream[object],
        ) as stream:
            async for event in stream:
                count += event.get("type") == "content_block_delta"
        return count

    async def lines(client: Any) -> int:
        count = 0
        headers = {"x-api-key": "x", "anthropic-version": "2023-06-01"}
        async with (
            httpx2.AsyncClient() as http,
            http.stream(
                "POST", spec["url"] + "/v1/messages", json={**request, "stream": True}, headers=headers
            ) as response,
        ):
            async for line in response.aiter_lines():
                count += line.startswith("data:") and "text_delta" in line
        return count

    async def main() -> dict[str, list[float]]:
        client = anthropic.AsyncAnthropic(api_key="x", base_url=spec["url"], max_retries=0)
        out: dict[str, list[float]] = {
            "messages.stream() helper": [],
            "messages.create(stream=True)": [],
            "client.post, JSON events (the service)": [],
            "httpx2 lines only": [],
        }
        for _ in range(int(spec.get("rounds", 3))):
            for name, fn in zip(out, (helper, raw, post, lines), strict=True):
                t = cpu()
                count = await fn(client)
                out[name].append((cpu() - t) / max(1, count) * 1e6)
        await client.close()
        return out

    runs = asyncio.run(main())
    return {name: round(sorted(v)[len(v) // 2], 1) for name, v in runs.items()}


def memory(bench: Any, upstream: Upstream, streams: int) -> dict[str, Any]:
    """Python allocations per idle stream, by package, with the service under tracemalloc."""
    import os
    import signal

    from bench.upstream import INSTANT, WAITING

    out = Path(tempfile.mkdtemp(prefix="bench-trace-")) / "trace.json"

    def dump(proc: AppProcess, timeout: float = 120) -> dict[str, Any]:
        out.unlink(missing_ok=True)
        os.kill(proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        return json.loads(out.read_text()) if out.exists() else {}

    traced = [sys.executable, "-m", "bench.traced_server"]
    kb10 = kb.path_for(10000) / "chroma"
    with AppProcess("zantara", kb10, upstream.base_url, traced, 300.0, BENCH_TRACE_OUT=str(out)) as proc:
        upstream.play(INSTANT)
        bench.loadgen(
            {
                "mode": "ttfc",
                "port": proc.port,
                "rounds": 1,
                "requests": 20,
                "warmup": 0,
                "query_offset": 8_000_000,
                "max_seconds": 300,
            }
        )
        upstream.play(WAITING)
        dump(proc)
        spec = {
            "mode": "idle",
            "port": proc.port,
            "streams": streams,
            "hold_s": 120,
            "max_pending": 32,
            "query_offset": 8_100_000,
            "pids": {"server": proc.pid},
            "upstream_url": upstream.base_url,
            "max_seconds": 400,
        }
        loadgen = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", json.dumps(spec)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 180
            while upstream.stats().get("active_streams", 0) < streams and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2)
            result = dump(proc)
        finally:
            loadgen.kill()
            loadgen.wait()
    total = result.get("total_bytes", 0)
    return {
        "streams": streams,
        "python_kb_per_stream": round(total / 1024 / streams, 1),
        "kb_per_stream_by_package": {
            k: round(v / 1024 / streams, 1) for k, v in result.get("by_package", {}).items()
        },
        "top_lines_kb_per_stream": {
            k: round(v / 1024 / streams, 2) for k, v in result.get("top_lines", {}).items()
        },
    }


def run(bench: Any) -> dict[str, Any]:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        return {"skipped": "py-spy not installed (pip install -e '.[bench]')"}
    n = int(bench.params.get("profile_streams", 100))
    seconds = 8
    result: dict[str, Any] = {"streams": n, "seconds": seconds}
    with Upstream() as upstream:
        with AppProcess(
            "zantara", kb.path_for(10000) / "chroma", upstream.base_url, HEARTBEAT_SECONDS=1
        ) as proc:
            upstream.play(stream_at(40, 300))
            spec = {
                "mode": "relay",
                "port": proc.port,
                "streams": n,
                "windows": 1,
                "window_s": seconds + 8,
                "settle_s": 0.5,
                "max_pending": 64,
                "query_offset": 9_000_000,
                "pids": {"server": proc.pid},
                "max_seconds": 200,
            }
            loadgen = subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen", json.dumps(spec)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                deadline = time.monotonic() + 120
                while upstream.stats().get("active_streams", 0) < n and time.monotonic() < deadline:
                    time.sleep(0.25)
                time.sleep(3)
                bench.log(f"profile: py-spy on the service relaying {n} streams for {seconds}s")
                with tempfile.NamedTemporaryFile(suffix=".txt") as out:
                    subprocess.run(
                        [
                            pyspy,
                            "record",
                            "--pid",
                            str(proc.pid),
                            "--duration",
                            str(seconds),
                            "--rate",
                            "200",
                            "--nonblocking",
                            "--gil",
                            "--format",
                            "raw",
                            "--output",
                            out.name,
                        ],
                        capture_output=True,
                        timeout=seconds + 60,
                        check=True,
                    )
                    raw = Path(out.name).read_text()
                # The collapsed stacks, for a flame graph (speedscope.app, flamegraph.pl); not committed.
                (bench.raw / "profile-stacks.txt").write_text(raw)
            finally:
                try:
                    stdout, _ = loadgen.communicate(timeout=120)
                    window = json.loads(stdout)["windows"][0]
                    result["relay_window"] = {
                        k: window[k] for k in ("events_per_s", "latency_ms", "cores_used")
                    }
                except (subprocess.TimeoutExpired, ValueError, KeyError, IndexError):
                    loadgen.kill()
                    loadgen.wait()
        result.update(reduce(raw))
        upstream.play({"chunks": ["hello world "], "repeat": 3000})
        bench.log("profile: CPU per event of the SDK's streaming paths")
        result["sdk_us_per_event"] = bench.python(
            "bench.suites.profile", {"url": upstream.base_url}, timeout=300
        )
        bench.log("profile: memory per idle stream by package (tracemalloc)")
        result["memory"] = memory(bench, upstream, int(bench.params.get("memory_streams", 300)))
    return result


if __name__ == "__main__":
    print(json.dumps(sdk_paths(json.loads(sys.argv[1]))))
