"""The load generator: a process of its own that opens event streams over raw sockets and times them.

    python -m bench.loadgen '<json spec>'        # prints one JSON result on stdout

It is deliberately small and cheap per event, so that it is never what limits a measurement: HTTP/1.1 over
asyncio protocols on uvloop, no HTTP client library, one regular expression over each block of complete
lines. It reports its own CPU use and event-loop lag next to every figure, so the claim can be checked.

What it measures:

- `ttfc`: one request at a time; request sent → response head → first text event, plus the app's own
  `Server-Timing` header and the `timing` object of its done event when present (TIMING_HEADERS=true).
- `relay`: N concurrent streams whose upstream sends stamped deltas at a fixed rate (`bench/upstream.py`);
  per event, receive time − stamp = the latency the app added. Also events/s, CPU per 1,000 events of the
  app's process, heartbeat gaps on extra streams whose upstream never answers, and optional TTFC probes
  while the load runs. Figures are taken over repeated windows once every stream is flowing.
- `idle`: N streams held open while the upstream has not answered; the app's RSS before and after (its
  memory per stream), its CPU while idle, heartbeat gaps.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import re
import resource
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

from bench.machine import CpuWindow, process_rss
from bench.stats import percentile, summary

QUESTIONS = [
    "How much is the visa on arrival in Bali and can I extend it?",
    "What is the fine for overstaying my visa?",
    "Can a foreigner own land in Bali?",
    "What is the minimum capital for a PT PMA?",
    "How do I get a work KITAS for my employee?",
    "Do I need an NPWP as a foreigner living in Indonesia?",
    "What is the second home visa and who can apply?",
    "How does the Bali tourist levy work?",
    "Which KBLI code do I need for a villa rental business?",
    "What are the BPJS obligations for a company with foreign staff?",
    "When do I become a tax resident in Indonesia?",
    "How long does it take to set up a PT PMA?",
    "Can I work remotely from Bali on a tourist visa?",
    "What is the penalty for late annual tax returns?",
    "How do I extend my stay permit?",
    "What is a nominee arrangement and is it legal?",
]
_EVENT = re.compile(rb"@(\d+)@|^: ?ping", re.M)
_TIMING = re.compile(rb'"timing":(\{[^}]*\})')
_DONE = re.compile(rb'"done":\s*true|event: message_stop')
_ERROR = re.compile(rb'"code":\s*"([a-z_]+)"')


def query(i: int) -> str:
    """A distinct question for every request of a run (so no cache can serve it)."""
    return f"{QUESTIONS[i % len(QUESTIONS)]} (case {i})"


class Clock:
    """Which measurement window is open (-1: none); event sinks record only inside one."""

    def __init__(self) -> None:
        self.window = -1


class StreamConn(asyncio.Protocol):
    """One event stream: parses the response head, then times stamped text events and `: ping` comments."""

    def __init__(self, request: bytes, clock: Clock, kind: str, delays: list[array.array[int]]) -> None:
        self.request = request
        self.clock = clock
        self.kind = kind
        self.delays = delays
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.headed = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.tail = b""
        self.sent_ns = 0
        self.head_ns = 0
        self.first_ns = 0
        self.first_delay_ns = 0
        self.events = 0
        self.window_events = [0] * len(delays)
        self.pings: list[int] = []
        self.timing: dict[str, float] | None = None
        self.error: str | None = None
        self.done = False
        self.closed = asyncio.get_running_loop().create_future()
        self.headed_f = asyncio.get_running_loop().create_future()
        self.first_f = asyncio.get_running_loop().create_future()
        self.keep_body = kind == "probe"
        self.body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sent_ns = time.monotonic_ns()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self.headed:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.head[:end]).decode("latin-1").split("\r\n")
            self.status = int(lines[0].split(" ")[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            data = bytes(self.head[end + 4 :])
            self.head = bytearray()
            self.headed = True
            self.head_ns = now
            if not self.headed_f.done():
                self.headed_f.set_result(None)
        block = self.tail + data
        cut = block.rfind(b"\n")
        if cut < 0:
            self.tail = block
            return
        self.tail = block[cut + 1 :]
        block = block[: cut + 1]
        if self.keep_body:
            self.body += block
        window = self.clock.window
        for match in _EVENT.finditer(block):
            stamp = match.group(1)
            if stamp is None:
                self.pings.append(now)
                continue
            self.events += 1
            if not self.first_ns:
                self.first_ns = now
                self.first_delay_ns = now - int(stamp)
                if not self.first_f.done():
                    self.first_f.set_result(None)
            if window >= 0 and self.kind == "relay":
                self.delays[window].append(now - int(stamp))
                self.window_events[window] += 1
        if self.kind == "probe" or b'"code"' in block:
            if _DONE.search(block):
                self.done = True
                timing = _TIMING.search(self.body or block)
                if timing:
                    self.timing = json.loads(timing.group(1))
            error = _ERROR.search(block)
            if error and b'"error"' in block:
                self.error = error.group(1).decode()
            if self.done and self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.closed, self.headed_f, self.first_f):
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class LoadGen:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.host = spec.get("host", "127.0.0.1")
        self.port = int(spec["port"])
        self.path = spec.get("path", "/bali-zero/chat-stream")
        self.clock = Clock()
        self.windows = int(spec.get("windows", 1))
        self.delays: list[array.array[int]] = [array.array("q") for _ in range(self.windows)]
        self.lags: list[list[float]] = [[] for _ in range(self.windows)]
        self.next_query = int(spec.get("query_offset", 0))
        self.conns: list[StreamConn] = []
        self.failed_opens = 0

    def request(self) -> bytes:
        q = urllib.parse.quote(query(self.next_query))
        self.next_query += 1
        return (
            f"GET {self.path}?query={q} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        ).encode()

    async def open(self, kind: str) -> StreamConn:
        loop = asyncio.get_running_loop()
        conn = StreamConn(self.request(), self.clock, kind, self.delays)
        await loop.create_connection(lambda: conn, self.host, self.port)
        self.conns.append(conn)
        return conn

    async def open_many(
        self, n: int, kind: str, until: str, max_pending: int, deadline: float
    ) -> list[StreamConn]:
        """Open n streams, at most `max_pending` of them not yet at `until` ("head" or "first") at a time."""
        gate = asyncio.Semaphore(max_pending)
        opened: list[StreamConn] = []

        async def one() -> None:
            async with gate:
                try:
                    conn = await self.open(kind)
                except OSError:
                    self.failed_opens += 1
                    return
                opened.append(conn)
                waiter = conn.headed_f if until == "head" else conn.first_f
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), max(0.1, deadline - time.monotonic()))

        await asyncio.gather(*(one() for _ in range(n)))
        return opened

    async def lag_monitor(self, stop: asyncio.Event) -> None:
        """How late a 10 ms sleep wakes up: when this grows, the load generator itself is saturated."""
        while not stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.01)
            w = self.clock.window
            if w >= 0:
                self.lags[w].append((time.monotonic() - t - 0.01) * 1000)

    # --- modes -----------------------------------------------------------------------------------------

    async def ttfc(self) -> dict[str, Any]:
        """Sequential requests; every figure per round, several rounds."""
        spec = self.spec
        for _ in range(int(spec.get("warmup", 5))):
            await self.one_probe(10.0)
        rounds = []
        for _ in range(int(spec.get("rounds", 3))):
            samples = []
            for _ in range(int(spec["requests"])):
                samples.append(await self.one_probe(10.0))
                await asyncio.sleep(float(spec.get("gap_s", 0.02)))
            rounds.append(samples)
        return {"rounds": rounds}

    async def one_probe(self, wait_s: float, close_after_first: bool = False) -> dict[str, Any]:
        conn = await self.open("probe")
        waiter = conn.first_f if close_after_first else conn.closed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), wait_s)
        conn.close()
        self.conns.remove(conn)
        return probe_record(conn)

    async def relay(self) -> dict[str, Any]:
        spec = self.spec
        deadline = time.monotonic() + float(spec.get("open_timeout_s", 120))
        hb = await self.open_many(int(spec.get("hb_streams", 0)), "hb", "head", 16, deadline)
        if hb:
            await self.wait_upstream_queue_empty(10.0)
        t_open = time.monotonic()
        relay = await self.open_many(
            int(spec["streams"]), "relay", "first", int(spec.get("max_pending", 64)), deadline
        )
        open_s = time.monotonic() - t_open
        flowing = sum(1 for c in relay if c.first_ns)
        await asyncio.sleep(float(spec.get("settle_s", 1.0)))
        result = await self.measure_windows(relay, hb)
        result.update(
            streams=len(relay),
            flowing=flowing,
            open_s=round(open_s, 2),
            failed_opens=self.failed_opens,
            errors=sorted({c.error for c in relay + hb if c.error}),
            closed_early=sum(1 for c in relay if c.closed.done()),
        )
        for conn in self.conns:
            conn.close()
        await asyncio.sleep(0.5)
        return result

    async def measure_windows(self, relay: list[StreamConn], hb: list[StreamConn]) -> dict[str, Any]:
        spec = self.spec
        import os

        pids = {name: int(pid) for name, pid in spec.get("pids", {}).items()} | {"loadgen": os.getpid()}
        stop = asyncio.Event()
        monitor = asyncio.create_task(self.lag_monitor(stop))
        probe_interval = float(spec.get("probe_interval_s", 0))
        hb_interval = float(spec.get("heartbeat_s", 0))
        windows = []
        for w in range(self.windows):
            cpu = CpuWindow(pids).start()
            ping_from = time.monotonic_ns()
            self.clock.window = w
            probes: list[dict[str, Any]] = []
            t_end = time.monotonic() + float(spec["window_s"])
            if probe_interval > 0:
                while time.monotonic() < t_end:
                    probes.append(await self.one_probe(5.0, close_after_first=True))
                    await asyncio.sleep(max(0.0, min(probe_interval, t_end - time.monotonic())))
            else:
                await asyncio.sleep(float(spec["window_s"]))
            self.clock.window = -1
            cpu.stop()
            ping_to = time.monotonic_ns()
            events = sum(c.window_events[w] for c in relay)
            delays_ms = [d / 1e6 for d in self.delays[w]]
            report = cpu.report()
            app_cpu_s = cpu.cpu.get("server", 0.0)
            windows.append(
                {
                    "events": events,
                    "events_per_s": round(events / cpu.wall, 1),
                    "latency_ms": summary(delays_ms),
                    "app_cpu_s_per_1k_events": round(app_cpu_s / events * 1000, 4) if events else None,
                    "heartbeat": heartbeat_lateness(hb, hb_interval, ping_from, ping_to),
                    "ttfc_probes": probe_summary(probes),
                    "loadgen_loop_lag_ms": summary(self.lags[w]),
                    **report,
                }
            )
        stop.set()
        await monitor
        return {"windows": windows}

    async def idle(self) -> dict[str, Any]:
        spec = self.spec
        import os

        server = int(spec["pids"]["server"])
        n = int(spec["streams"])
        rss_before = await self.rss(server)
        deadline = time.monotonic() + float(spec.get("open_timeout_s", 180))
        t_open = time.monotonic()
        # In two halves: the second half's RSS growth is the marginal cost of a stream, free of one-time
        # growth (allocator arenas, caches warmed by the first questions).
        half = n // 2
        pending = int(spec.get("max_pending", 64))
        conns = await self.open_many(half, "hb", "head", pending, deadline)
        upstream_half = await self.wait_upstream_active(half, float(spec.get("settle_timeout_s", 60)))
        rss_half = await self.rss(server)
        conns += await self.open_many(n - half, "hb", "head", pending, deadline)
        open_s = time.monotonic() - t_open
        upstream = await self.wait_upstream_active(n, float(spec.get("settle_timeout_s", 60)))
        rss_open = await self.rss(server)
        self.clock.window = 0
        pids = {name: int(pid) for name, pid in spec.get("pids", {}).items()} | {"loadgen": os.getpid()}
        cpu = CpuWindow(pids).start()
        ping_from = time.monotonic_ns()
        await asyncio.sleep(float(spec.get("hold_s", 4)))
        ping_to = time.monotonic_ns()
        cpu.stop()
        self.clock.window = -1
        still_open = sum(1 for c in conns if not c.closed.done())
        headed = sum(1 for c in conns if c.status == 200)
        for conn in self.conns:
            conn.close()
        await asyncio.sleep(0.5)
        return {
            "streams": n,
            "opened_200": headed,
            "still_open": still_open,
            "failed_opens": self.failed_opens,
            "open_s": round(open_s, 2),
            "upstream_requests_open": upstream,
            "rss_before_mb": round(rss_before / 2**20, 1),
            "rss_open_mb": round(rss_open / 2**20, 1),
            "kb_per_stream": round((rss_open - rss_before) / 1024 / max(1, still_open), 1),
            "marginal_kb_per_stream": round((rss_open - rss_half) / 1024 / max(1, n - half), 1),
            "upstream_requests_open_at_half": upstream_half,
            "heartbeat": heartbeat_lateness(conns, float(spec.get("heartbeat_s", 0)), ping_from, ping_to),
            "errors": sorted({c.error for c in conns if c.error}),
            **cpu.report(),
        }

    async def rss(self, pid: int) -> int:
        samples = []
        for _ in range(3):
            samples.append(process_rss(pid))
            await asyncio.sleep(0.3)
        return int(sorted(samples)[1])

    async def upstream_stats(self) -> dict[str, Any]:
        url = self.spec["upstream_url"] + "/_fake/stats"

        def get() -> dict[str, Any]:
            with urllib.request.urlopen(url, timeout=10) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result

        return await asyncio.to_thread(get)

    async def wait_upstream_queue_empty(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if (await self.upstream_stats()).get("queued", 0) == 0:
                return
            await asyncio.sleep(0.1)

    async def wait_upstream_active(self, n: int, wait_s: float) -> int:
        """Until the upstream holds n requests, or their number stops growing for 3 s (a connection cap)."""
        deadline = time.monotonic() + wait_s
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            active = int((await self.upstream_stats()).get("active_streams", 0))
            if active >= n:
                return active
            if active != last:
                last, stable_since = active, time.monotonic()
            elif time.monotonic() - stable_since > 3:
                return active
            await asyncio.sleep(0.25)
        return last


def probe_record(conn: StreamConn) -> dict[str, Any]:
    def ms(ns: int) -> float | None:
        return round((ns - conn.sent_ns) / 1e6, 3) if ns else None

    record: dict[str, Any] = {
        "status": conn.status,
        "head_ms": ms(conn.head_ns),
        "ttfc_ms": ms(conn.first_ns),
        "first_chunk_transit_ms": round(conn.first_delay_ns / 1e6, 3) if conn.first_ns else None,
        "error": conn.error,
    }
    server_timing = conn.headers.get("server-timing")
    if server_timing:
        stages = {}
        for part in server_timing.split(","):
            name, _, dur = part.strip().partition(";dur=")
            with contextlib.suppress(ValueError):
                stages[name] = float(dur)
        record["server_timing"] = stages
    if conn.timing:
        record["done_timing"] = conn.timing
    return record


def probe_summary(probes: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not probes:
        return None
    values = [p["ttfc_ms"] for p in probes if p["ttfc_ms"] is not None]
    return {**summary(values), "failed": len(probes) - len(values)}


def heartbeat_lateness(conns: list[StreamConn], interval: float, t0: int, t1: int) -> dict[str, Any] | None:
    """Gaps between consecutive pings inside [t0, t1], minus the interval: how late each heartbeat was."""
    if not conns or interval <= 0:
        return None
    late_ms = []
    for conn in conns:
        pings = [p for p in conn.pings if t0 <= p <= t1]
        late_ms.extend((b - a) / 1e6 - interval * 1000 for a, b in itertools.pairwise(pings))
    if not late_ms:
        return {"pings": 0}
    return {
        "pings": len(late_ms) + len(conns),
        "late_ms_p50": round(percentile(late_ms, 50) or 0, 1),
        "late_ms_p99": round(percentile(late_ms, 99) or 0, 1),
        "late_ms_max": round(max(late_ms), 1),
        "late_over_1s": sum(1 for x in late_ms if x > 1000),
    }


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    gen = LoadGen(spec)
    started = time.monotonic()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    mode = spec["mode"]
    body = await asyncio.wait_for(getattr(gen, mode)(), float(spec.get("max_seconds", 600)))
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - started
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return {
        **body,
        "loadgen": {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cores": round(cpu / wall, 3)},
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    raise_fd_limit()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(run(spec))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
