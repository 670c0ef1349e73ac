"""Idle capacity: N streams held open while the upstream has not answered; memory per stream and idle CPU.

A fresh app process for every N (memory freed by an earlier run would be reused and hide the cost). After
a warm-up (a few complete answers, so lazily built state exists), the app's RSS is sampled, N streams are
opened, and once the upstream holds every request (or their number stops growing: a connection cap) the RSS
is sampled again: (after − before) / N. The heartbeat is the production default (15 s), so the CPU figure is
what holding them costs; heartbeat lateness is measured under load, in `relay`.
"""

from __future__ import annotations

from typing import Any

from bench import kb
from bench.apps import APPS, AppProcess
from bench.upstream import INSTANT, WAITING, Upstream

HEARTBEAT_S = 15.0  # the production default: what holding idle streams really costs (heartbeats: see relay)
WARMUP = 20


def run(bench: Any) -> dict[str, Any]:
    params = bench.params["idle"]
    results: dict[str, Any] = {}
    offset = 0
    with Upstream() as upstream:
        for n_text, which in params["streams"].items():
            n = int(n_text)
            for app in list(APPS) if which == "all" else which:
                kb10 = kb.path_for(10000) / "chroma"
                with AppProcess(app, kb10, upstream.base_url, HEARTBEAT_SECONDS=HEARTBEAT_S) as proc:
                    upstream.play(INSTANT)
                    bench.loadgen(
                        {
                            "mode": "ttfc",
                            "port": proc.port,
                            "rounds": 1,
                            "requests": WARMUP,
                            "warmup": 0,
                            "query_offset": offset,
                            "max_seconds": 120,
                        }
                    )
                    upstream.play(WAITING)
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
                            "upstream_url": upstream.base_url,
                            "max_seconds": 400,
                        }
                    )
                offset += 100_000
                results[f"{app}@{n}"] = {"app": app, **raw}
    return {"heartbeat_s": HEARTBEAT_S, "cases": results}
