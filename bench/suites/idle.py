"""Idle capacity: N streams held open while the upstream has not answered; memory per stream, idle CPU, heartbeats.

A fresh app process for every N (memory freed by an earlier run would be reused and hide the cost). After
a warm-up (a few complete answers, so lazily built state exists), the app's RSS is sampled, N streams are
opened, and once the upstream holds every request (or their number stops growing: a connection cap) the RSS
is sampled again: (after − before) / N. HEARTBEAT_SECONDS=1 shows what holding them costs in CPU and how
late their heartbeats come.
"""

from __future__ import annotations

from typing import Any

from bench import kb
from bench.apps import APPS, AppProcess
from bench.upstream import INSTANT, WAITING, Upstream

HEARTBEAT_S = 1.0
WARMUP = 20


def run(bench: Any) -> dict[str, Any]:
    params = bench.params["idle"]
    apps = list(APPS) if params["apps"] == "all" else params["apps"]
    results: dict[str, Any] = {}
    offset = 0
    with Upstream() as upstream:
        for app in apps:
            for n in params["streams"]:
                with AppProcess(
                    app, kb.path_for(10000) / "chroma", upstream.url, HEARTBEAT_SECONDS=HEARTBEAT_S
                ) as proc:
                    upstream.reset(default=INSTANT)
                    bench.loadgen({"mode": "ttfc", "port": proc.port, "rounds": 1, "requests": WARMUP, "warmup": 0,
                                   "query_offset": offset, "max_seconds": 120})  # fmt: skip
                    upstream.reset(default=WAITING)
                    bench.wait_quiet()
                    bench.log(f"idle: {app} holding {n} streams")
                    raw = bench.loadgen(
                        {
                            "mode": "idle",
                            "port": proc.port,
                            "streams": n,
                            "heartbeat_s": HEARTBEAT_S,
                            "hold_s": params["hold_s"],
                            "max_pending": 64,
                            "query_offset": offset + 1000,
                            "pids": {"server": proc.pid, "upstream": upstream.pid},
                            "upstream_url": upstream.url,
                            "max_seconds": 400,
                        }
                    )
                offset += 100_000
                results[f"{app}@{n}"] = {"app": app, **raw}
    return {"heartbeat_s": HEARTBEAT_S, "cases": results}
