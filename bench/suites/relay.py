"""Relay capacity: N concurrent streams, each fed 40 stamped chunks/s by the fake upstream, for every app.

Per window (several per configuration, once every stream is flowing): the added latency of each chunk
(p50, p99), events/s delivered, the app's CPU seconds per 1,000 events, heartbeat lateness on extra streams
whose upstream never answers (HEARTBEAT_SECONDS=1), TTFC probes sent while the load runs, and the CPU of
the upstream and of the load generator, and of everything else on the machine. The baselines
(bench/baselines) run under the same load in the same run; `ratios` divides the service's figures by theirs.
"""

from __future__ import annotations

import time
from typing import Any

from bench import kb
from bench.apps import APPS, AppProcess
from bench.stats import across, ratio
from bench.upstream import WAITING, Upstream, stream_at

RATE = 40.0
HEARTBEAT_S = 1.0
KEYS = [
    "events_per_s",
    "latency_p50",
    "latency_p99",
    "app_cpu_s_per_1k_events",
    "app_cores",
    "upstream_cores",
    "loadgen_cores",
    "other_processes_cores",
    "heartbeat_late_ms_max",
    "ttfc_probe_p50",
    "ttfc_probe_p99",
    "loadgen_lag_p99",
]


def flatten(window: dict[str, Any]) -> dict[str, Any]:
    hb = window.get("heartbeat") or {}
    probes = window.get("ttfc_probes") or {}
    cores = window["cores_used"]
    return {
        "events_per_s": window["events_per_s"],
        "latency_p50": window["latency_ms"]["p50"],
        "latency_p99": window["latency_ms"]["p99"],
        "app_cpu_s_per_1k_events": window["app_cpu_s_per_1k_events"],
        "app_cores": cores.get("server"),
        "upstream_cores": cores.get("upstream"),
        "loadgen_cores": cores.get("loadgen"),
        "other_processes_cores": window["other_processes_cores"],
        "heartbeat_late_ms_max": hb.get("late_ms_max"),
        "heartbeat_late_over_1s": hb.get("late_over_1s"),
        "ttfc_probe_p50": probes.get("p50"),
        "ttfc_probe_p99": probes.get("p99"),
        "loadgen_lag_p99": window["loadgen_loop_lag_ms"]["p99"],
    }


def wait_idle(upstream: Upstream, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    active = upstream.stats().get("active_streams", 0)
    while active and time.monotonic() < deadline:
        time.sleep(0.25)
        active = upstream.stats().get("active_streams", 0)
    return int(active)


def run(bench: Any) -> dict[str, Any]:
    params = bench.params["relay"]
    apps = list(APPS) if params["apps"] == "all" else params["apps"]
    windows, window_s = int(params["windows"]), float(params["window_s"])
    hb_streams = int(params["hb_streams"])
    results: dict[str, Any] = {}
    offset = 0

    def counts(app: str) -> list[int]:
        full = app in ("zantara", "raw-relay")  # the service, and the floor, go the whole way
        return list(params["streams"] if full else params.get("baseline_streams", params["streams"]))

    with Upstream() as upstream:
        for app in apps:
            kb10 = kb.path_for(10000) / "chroma"
            with AppProcess(app, kb10, upstream.base_url, HEARTBEAT_SECONDS=HEARTBEAT_S) as proc:
                for n in counts(app):
                    # Long enough for ramp-up, settling and every window; the streams are closed after.
                    upstream.play(stream_at(RATE, 120 + windows * window_s * 3), *[WAITING] * hb_streams)
                    bench.wait_quiet()
                    bench.log(f"relay: {app} with {n} streams at {RATE:.0f} chunks/s")
                    raw = bench.loadgen(
                        {
                            "mode": "relay",
                            "port": proc.port,
                            "streams": n,
                            "hb_streams": hb_streams,
                            "heartbeat_s": HEARTBEAT_S,
                            "windows": windows,
                            "window_s": window_s,
                            "probe_interval_s": 0.25,
                            "max_pending": 64,
                            "settle_s": 1.5,
                            "open_timeout_s": float(params.get("open_timeout_s", 60)),
                            "query_offset": offset,
                            "pids": {"server": proc.pid, "upstream": upstream.pid},
                            "upstream_url": upstream.base_url,
                            "max_seconds": 240,
                        }
                    )
                    offset += 100_000
                    left = wait_idle(upstream)
                    runs = [flatten(w) for w in raw["windows"]]
                    results[f"{app}@{n}"] = {
                        "app": app,
                        "streams": n,
                        **across(runs, KEYS),
                        "heartbeat_late_over_1s": sum(r.get("heartbeat_late_over_1s") or 0 for r in runs),
                        "flowing": raw["flowing"],
                        "open_s": raw["open_s"],
                        "failed_opens": raw["failed_opens"],
                        "errors": raw["errors"],
                        "closed_early": raw["closed_early"],
                        "upstream_left_open": left,
                        "loadgen": raw["loadgen"],
                        "windows": raw["windows"],
                    }
    ratios: dict[str, Any] = {}
    for key, value in results.items():
        ours = results.get(f"zantara@{value['streams']}")
        if value["app"] == "zantara" or ours is None:
            continue
        ratios[key] = {
            "latency_p99_zantara_over_baseline": ratio(ours["latency_p99"], value["latency_p99"]),
            "cpu_per_1k_zantara_over_baseline": ratio(
                ours["app_cpu_s_per_1k_events"], value["app_cpu_s_per_1k_events"]
            ),
            "events_per_s_zantara_over_baseline": ratio(ours["events_per_s"], value["events_per_s"]),
        }
    return {"rate_per_stream": RATE, "heartbeat_s": HEARTBEAT_S, "cases": results, "ratios": ratios}
