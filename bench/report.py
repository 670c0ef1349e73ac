"""From `bench/results/*.json` to `bench/results/summary.md`, the PNG plots and docs/performance.md's figures.

    python -m bench.report            # re-render from the last results without measuring anything

docs/performance.md keeps its prose; only the part between the two `bench:results` markers is replaced.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench import variants
from bench.context import RESULTS, ROOT

DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
SUITES = [
    "run",
    "run-partial",
    "embedding",
    "retrieval",
    "ttfc",
    "relay",
    "idle",
    "coldstart",
    "ingestion",
    "profile",
]
APPS = ["zantara", "seed-style", "sse-starlette", "raw-relay"]


def load(results: Path = RESULTS) -> dict[str, Any]:
    out = {}
    for name in SUITES:
        path = results / f"{name}.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


def f(x: Any, digits: int = 1, unit: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}{unit}"
    return f"{x}{unit}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def get(d: Any, *path: Any) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


# --- targets ------------------------------------------------------------------------------------------


def targets(r: dict[str, Any]) -> list[list[Any]]:
    rows = []

    def row(name: str, value: Any, limit: float, unit: str, where: str, lower_is_better: bool = True) -> None:
        if value is None:
            rows.append([name, "not measured", f"≤ {limit:g}{unit}", "–", where])
            return
        ok = value <= limit if lower_is_better else value >= limit
        rows.append([name, f(value, 2, unit), f"≤ {limit:g}{unit}", "met" if ok else "**missed**", where])

    row("Query embedding p50", get(r, "embedding", "latency_ms", "onnx", "p50"), 5, " ms", "embedding")
    row(
        "Retrieval p50, 10k chunks", get(r, "retrieval", "10000", "retrieve_ms", "p50"), 8, " ms", "retrieval"
    )
    row(
        "Retrieval p50, 100k chunks",
        get(r, "retrieval", "100000", "retrieve_ms", "p50"),
        15,
        " ms",
        "retrieval",
    )
    ttfc = get(r, "ttfc", "cases", "zantara@10000") or {}
    row("TTFC p50, 10k, one at a time", ttfc.get("ttfc_p50"), 15, " ms", "ttfc")
    row("TTFC p99, 10k, one at a time", ttfc.get("ttfc_p99"), 40, " ms", "ttfc")
    relay = get(r, "relay", "cases", "zantara@500") or {}
    if relay and relay.get("ttfc_probe_p99") is None:
        rows.append(
            [
                "TTFC p99 while 500 streams relay",
                "no first chunk within 5 s",
                "≤ 100 ms",
                "**missed**",
                "relay",
            ]
        )
    else:
        row("TTFC p99 while 500 streams relay", relay.get("ttfc_probe_p99"), 100, " ms", "relay")
    row("Relay 500×40/s: added latency p99", relay.get("latency_p99"), 50, " ms", "relay")
    late = relay.get("heartbeat_late_over_1s")
    rows.append(
        [
            "Relay 500: heartbeats late > 1 s",
            f(late),
            "0",
            "–" if late is None else ("met" if late == 0 else "**missed**"),
            "relay",
        ]
    )
    seed = get(r, "relay", "cases", "seed-style@500") or {}
    ours_cpu, seed_cpu = relay.get("app_cpu_s_per_1k_events"), seed.get("app_cpu_s_per_1k_events")
    if ours_cpu is not None and seed_cpu is not None:
        rows.append(
            [
                "Relay 500: CPU s per 1,000 events",
                f"{ours_cpu:.3f} (seed-style {seed_cpu:.3f})",
                "≤ seed-style",
                "met" if ours_cpu <= seed_cpu else "**missed**",
                "relay",
            ]
        )
    # The same comparison below saturation, where CPU per event is not inflated by queueing.
    ours100, seed100 = (
        get(r, "relay", "cases", "zantara@100") or {},
        get(r, "relay", "cases", "seed-style@100") or {},
    )
    a, b = ours100.get("app_cpu_s_per_1k_events"), seed100.get("app_cpu_s_per_1k_events")
    if a is not None and b is not None:
        rows.append(
            [
                "Relay 100: CPU s per 1,000 events",
                f"{a:.3f} (seed-style {b:.3f})",
                "≤ seed-style",
                "met" if a <= b else "**missed**",
                "relay",
            ]
        )
    idle = get(r, "idle", "cases") or {}
    biggest = max(
        (v for k, v in idle.items() if k.startswith("zantara@")), key=lambda v: v["streams"], default=None
    )
    if biggest:
        row(
            f"Idle memory per waiting stream at {biggest['streams']}",
            biggest["kb_per_stream"],
            100,
            " KB",
            "idle",
        )
    row("Cold start to /ready", get(r, "coldstart", "ready_onnx", "ready_s"), 5, " s", "coldstart")
    return rows


# --- sections -----------------------------------------------------------------------------------------


def machine_section(r: dict[str, Any]) -> str:
    run = r.get("run", {})
    m = run.get("machine") or next((v["machine"] for v in r.values() if "machine" in v), {})
    lines = [
        f"- **Command**: `{run.get('command', '?')}` ({run.get('mode', '?')} mode, "
        f"{f(run.get('duration_s'), 0)} s)",
        f"- **Machine**: {m.get('cores')} cores, {m.get('cpu_model')}, {m.get('memory_gb')} GB RAM, "
        f"Linux {m.get('kernel')}, Python {m.get('python')}",
        f"- **Source**: revision `{m.get('revision')}`"
        + (" with uncommitted changes" if m.get("uncommitted_changes") else "")
        + f", measured {m.get('at')}",
        f"- **Load average** (1, 5, 15 min) at start {run.get('load_start')}, at end {run.get('load_end')}. "
        "The machine is shared: each suite's JSON records, per measurement, the cores used by the processes "
        "under test and by everything else (`other_processes_cores`).",
    ]
    partial = r.get("run-partial")
    if partial and (partial.get("machine") or {}).get("at", "") > (m.get("at") or ""):
        lines.append(
            f"- **Re-measured since**: {', '.join(partial.get('suites', []))} by `{partial.get('command')}` "
            "at "
            f"{partial['machine'].get('at')}, load average at start {partial.get('load_start')}, "
            f"at end {partial.get('load_end')}."
        )
    return "\n".join(lines)


def before_after_section(r: dict[str, Any]) -> str:
    """Every optimisation kept, measured against what it replaced in the same run."""
    rows: list[list[Any]] = []

    def add(
        change: str,
        metric: str,
        before: Any,
        after: Any,
        unit: str,
        digits: int = 2,
        higher_is_better: bool = False,
    ) -> None:
        if before is None or after is None:
            return
        good, bad = (after, before) if higher_is_better else (before, after)
        change_ratio = f"{good / bad:.1f}× better" if bad and good > bad else f"{bad / good:.2f}× worse"
        rows.append([change, metric, f(before, digits, unit), f(after, digits, unit), change_ratio])

    lat = get(r, "embedding", "latency_ms") or {}
    onnx_embedding = "Embedder: ONNX Runtime, 1 thread (was sentence-transformers)"
    add(
        onnx_embedding,
        "query embedding p50",
        get(lat, "sentence-transformers", "p50"),
        get(lat, "onnx", "p50"),
        " ms",
    )
    add(
        onnx_embedding,
        "query embedding p99",
        get(lat, "sentence-transformers", "p99"),
        get(lat, "onnx", "p99"),
        " ms",
    )
    cases = get(r, "ttfc", "cases") or {}
    add(
        onnx_embedding,
        "TTFC p50 @ 10k",
        get(cases, "zantara-torch@10000", "ttfc_p50"),
        get(cases, "zantara@10000", "ttfc_p50"),
        " ms",
    )
    add(
        onnx_embedding,
        "TTFC p99 @ 10k",
        get(cases, "zantara-torch@10000", "ttfc_p99"),
        get(cases, "zantara@10000", "ttfc_p99"),
        " ms",
    )
    add(
        onnx_embedding,
        "cold start to /ready",
        get(r, "coldstart", "ready_torch", "ready_s"),
        get(r, "coldstart", "ready_onnx", "ready_s"),
        " s",
    )
    ing = get(r, "ingestion", "ingest") or {}
    torch_rate, onnx_rate = get(ing, "torchx1", "chunks_per_s"), get(ing, "onnxx1", "chunks_per_s")
    if torch_rate and onnx_rate:
        add(
            onnx_embedding, "ingestion seconds per 1,000 chunks", 1000 / torch_rate, 1000 / onnx_rate, " s", 1
        )
    rel = get(r, "relay", "cases") or {}
    # Each variant (bench/variants.py) against the version that replaced it, at the same stream count.
    successor = {"fastapi-sse": "zantara", "typed-events": "zantara", "sdk-helper": "zantara-typed-events"}
    for name, after_label in successor.items():
        for before in sorted(rel.values(), key=lambda v: v["streams"]):
            if before["app"] != f"zantara-{name}":
                continue
            n = before["streams"]
            after = rel.get(f"{after_label}@{n}") or {}
            change = f"{variants.DESCRIPTIONS[name]}, {n} streams"
            add(
                change,
                "app CPU s per 1,000 events",
                before["app_cpu_s_per_1k_events"],
                after.get("app_cpu_s_per_1k_events"),
                "",
                3,
            )
            add(change, "added latency p99", before["latency_p99"], after.get("latency_p99"), " ms")
            if n >= 500:
                add(
                    change,
                    "events/s delivered",
                    before["events_per_s"],
                    after.get("events_per_s"),
                    "",
                    0,
                    higher_is_better=True,
                )
    micro = get(r, "profile", "sdk_us_per_event") or {}
    add(
        "SDK alone: `messages.stream()` helper → `messages.create(stream=True)`",
        "CPU per upstream event",
        micro.get("messages.stream() helper"),
        micro.get("messages.create(stream=True)"),
        " µs",
        1,
    )
    add(
        "SDK alone: `messages.create(stream=True)` → `client.post`, JSON events",
        "CPU per upstream event",
        micro.get("messages.create(stream=True)"),
        micro.get("client.post, JSON events (the service)"),
        " µs",
        1,
    )
    if not rows:
        return ""
    return "### Optimisations: before and after, measured in this run\n\n" + table(
        ["change", "metric", "before", "after", "effect"], rows
    )


def embedding_section(r: dict[str, Any]) -> str:
    e = r.get("embedding")
    if not e:
        return ""
    lat = e["latency_ms"]
    base = get(lat, "sentence-transformers", "p50")
    labels = {
        "sentence-transformers": "sentence-transformers `encode` (before)",
        "sentence-transformers-1t": "sentence-transformers, 1 torch thread",
        "torch-direct-1t": "transformer called directly, `inference_mode`, 1 thread",
        "onnx": "**ONNX Runtime, 1 thread (now)**",
        "onnx-embed_query": "ONNX via `embed_query` (worker-thread hand-off)",
    }
    rows = [
        [
            labels.get(k, k),
            f(v["p50"], 2),
            f(v["p99"], 2),
            f(get(v, "other_processes_cores"), 2),
            f(base / v["p50"], 1, "×") if base and v.get("p50") else "–",
        ]
        for k, v in lat.items()
    ]
    b = e["batch"]
    batch = table(
        ["backend", f"chunks/s (batch of {b['texts']} chunks, ~{b['mean_chars']} chars)"],
        [[k, f(v["chunks_per_s"], 1)] for k, v in b.items() if isinstance(v, dict)],
    )
    return (
        "### Query embedding (distinct queries, medians over rounds)\n\n"
        + table(["path", "p50 ms", "p99 ms", "other load (cores)", "speed-up vs before"], rows)
        + "\n\n![embedding](../bench/results/embedding.png)\n\nBatch throughput (ingestion):\n\n"
        + batch
    )


def retrieval_section(r: dict[str, Any]) -> str:
    ret = r.get("retrieval")
    if not ret:
        return ""
    rows = []
    for size, v in ret.items():
        if not isinstance(v, dict) or "search_ms" not in v:
            continue
        rows.append(
            [
                f"{int(size):,}",
                f(v["search_ms"]["p50"], 2),
                f(v["search_ms"]["p99"], 2),
                f(v["retrieve_ms"]["p50"], 2),
                f(v["retrieve_ms"]["p99"], 2),
                f(v["first_query_ms"], 1),
                f(v["open_ms"], 1),
            ]
        )
    return "### Retrieval (embedding + search + grouping)\n\n" + table(
        [
            "chunks",
            "search p50 ms",
            "search p99 ms",
            "retrieve p50 ms",
            "retrieve p99 ms",
            "first query ms",
            "open ms",
        ],
        rows,
    )


STAGE_ORDER = [
    "validate",
    "admit",
    "embed",
    "search",
    "group",
    "queue",
    "prompt",
    "upstream_connect",
    "upstream_first_token",
    "other",
]


def ttfc_section(r: dict[str, Any]) -> str:
    t = r.get("ttfc")
    if not t:
        return ""
    cases = t["cases"]
    ours = get(cases, "zantara@10000", "ttfc_p50")
    rows = []
    for key, v in cases.items():
        rows.append(
            [
                key.replace("@", " @ "),
                f(v.get("ttfc_p50"), 2),
                f(v.get("ttfc_p99"), 2),
                f(v.get("head_p50"), 2),
                f(v["ttfc_p50"] / ours, 2, "×") if ours and v.get("ttfc_p50") else "–",
                v.get("failed", 0),
            ]
        )
    stage_rows = []
    for key, v in cases.items():
        if v.get("app") != "zantara":
            continue
        stage_rows.append([key.replace("@", " @ ")] + [f(v.get(f"stage_{s}_p50"), 2) for s in STAGE_ORDER])
    return (
        "### Time to first chunk (one request at a time, upstream answers at once)\n\n"
        + table(
            ["app @ chunks", "TTFC p50 ms", "TTFC p99 ms", "head p50 ms", "p50 vs zantara @ 10k", "failed"],
            rows,
        )
        + "\n\nWhere the service's TTFC goes (p50 of each stage, ms; `other` = client-measured TTFC minus "
        "the stages):\n\n"
        + table(["case", *STAGE_ORDER], stage_rows)
        + "\n\n![ttfc](../bench/results/ttfc.png)"
    )


def relay_section(r: dict[str, Any]) -> str:
    rel = r.get("relay")
    if not rel:
        return ""
    rows = []
    for v in rel["cases"].values():
        rows.append(
            [
                v["app"],
                v["streams"],
                f(v["events_per_s"], 0),
                f(v["latency_p50"], 2),
                f(v["latency_p99"], 2),
                f(v["app_cpu_s_per_1k_events"], 3),
                f(v["app_cores"], 2),
                f(v["heartbeat_late_ms_max"], 0),
                f(v.get("ttfc_probe_p50"), 1),
                f(v.get("ttfc_probe_p99"), 1),
                f(v["upstream_cores"], 2),
                f(v["loadgen_cores"], 2),
                f(v["loadgen_lag_p99"], 1),
                f(v["other_processes_cores"], 2),
            ]
        )
    ratio_rows = [
        [
            k.replace("@", " @ "),
            f(v["latency_p99_zantara_over_baseline"], 2, "×"),
            f(v["cpu_per_1k_zantara_over_baseline"], 2, "×"),
            f(v["events_per_s_zantara_over_baseline"], 2, "×"),
        ]
        for k, v in rel["ratios"].items()
    ]
    return (
        f"### Relay ({rel['rate_per_stream']:.0f} chunks/s per stream, "
        f"heartbeat {rel['heartbeat_s']:g} s)\n\n"
        + table(
            [
                "app",
                "streams",
                "events/s",
                "added p50 ms",
                "added p99 ms",
                "app CPU s / 1k events",
                "app cores",
                "heartbeat late max ms",
                "TTFC under load p50 ms",
                "TTFC under load p99 ms",
                "upstream cores",
                "loadgen cores",
                "loadgen lag p99 ms",
                "other load (cores)",
            ],
            rows,
        )
        + "\n\nRatios, zantara ÷ baseline at the same number of streams "
        "(below 1 = zantara better for latency and CPU):\n\n"
        + table(["baseline", "added-latency p99", "CPU per 1k events", "events/s"], ratio_rows)
        + "\n\n![relay](../bench/results/relay.png)"
    )


def idle_section(r: dict[str, Any]) -> str:
    idle = r.get("idle")
    if not idle:
        return ""
    rows = []
    for v in idle["cases"].values():
        rows.append(
            [
                v["app"],
                v["streams"],
                v["still_open"],
                v["upstream_requests_open"],
                f(v["kb_per_stream"], 1),
                f(v.get("marginal_kb_per_stream"), 1),
                f(v["rss_before_mb"], 0),
                f(v["rss_open_mb"], 0),
                f(get(v, "cores_used", "server"), 3),
                f(v["open_s"], 1),
                f(v["other_processes_cores"], 2),
            ]
        )
    header = [
        "app",
        "streams",
        "held open",
        "upstream requests open",
        "KB per stream",
        "marginal KB (2nd half)",
        "RSS before MB",
        "RSS open MB",
        "app cores while idle",
        "time to open s",
        "other load (cores)",
    ]
    return (
        f"### Idle streams (upstream has not answered; heartbeat {idle['heartbeat_s']:g} s)\n\n"
        + table(header, rows)
        + "\n\nThe SDK-based apps hold at most 1,000 upstream requests: the anthropic client's pool "
        "(`max_connections=1000`) queues the rest, which therefore cost less memory than a waiting request."
        "\n\n![idle](../bench/results/idle.png)"
    )


def coldstart_section(r: dict[str, Any]) -> str:
    c = r.get("coldstart")
    if not c:
        return ""
    rows = [
        [k.removeprefix("ready_"), f(v["ready_s"], 2), v.get("runs")]
        for k, v in c.items()
        if k.startswith("ready_")
    ]
    phase_rows = []
    for backend in ("onnx", "torch"):
        p = c.get(f"phases_ms_{backend}")
        if p:
            phase_rows.append(
                [backend]
                + [f"{k} {f(v, 0)}" for k, v in p.items() if k != "runs" and not k.endswith("_range")]
            )
    return (
        "### Cold start (process start → /ready 200, 10k chunks ingested)\n\n"
        + table(["embedding backend", "seconds (median)", "runs"], rows)
        + f"\n\nInterpreter start alone: {f(get(c, 'interpreter_start_ms', 'ms'), 0)} ms. "
        "Steps of the lifespan, "
        "timed in a fresh interpreter (ms):\n\n" + table(["backend", "steps"], phase_rows)
    )


def ingestion_section(r: dict[str, Any]) -> str:
    ing = r.get("ingestion")
    if not ing:
        return ""
    rows = [
        [k, v["chunks"], f(v["seconds"], 2), f(v["chunks_per_s"], 1), f(v.get("other_processes_cores"), 2)]
        for k, v in ing["ingest"].items()
    ]
    up_rows = []
    for size, batches in ing.get("upsert_batches", {}).items():
        if batches:
            first, last = batches[0], batches[-1]
            up_rows.append(
                [f"{int(size):,}", f(first["chunks_per_s"], 0), f(last["chunks_per_s"], 0), len(batches)]
            )
    return (
        "### Ingestion\n\n"
        + table(
            ["backend × copies of the sample KB", "chunks", "seconds", "chunks/s", "other load (cores)"], rows
        )
        + "\n\nUpsert only (precomputed vectors), chunks/s of the first and the last batch while building "
        "each store:\n\n"
        + table(["store size", "first batch chunks/s", "last batch chunks/s", "batches"], up_rows)
        + "\n\n![ingestion](../bench/results/ingestion.png)"
    )


def profile_section(r: dict[str, Any]) -> str:
    p = r.get("profile")
    if not p or "samples" not in p:
        return ""
    inc = [[k.replace("  ", "&nbsp;&nbsp;"), f(v, 1, " %")] for k, v in p["inclusive_pct"].items()]
    own = [[k, f(v, 1, " %")] for k, v in p["self_pct_by_package"].items()]
    text = (
        f"### Profile: the service relaying {p['streams']} streams at 40 chunks/s\n\n"
        f"py-spy `--gil` (samples in which the main thread runs Python), {p['samples']} samples "
        f"in {p['seconds']} s:"
        "\n\n"
        + table(["on the stack (inclusive)", "share of samples"], inc)
        + "\n\n"
        + table(["innermost frame in (self)", "share of samples"], own)
    )
    sdk = p.get("sdk_us_per_event")
    if sdk:
        text += "\n\nCPU per upstream event of the SDK's streaming paths (µs; one process, the same fake "
        text += "upstream):\n\n"
        text += table(["path", "µs per event"], [[k, f(v, 1)] for k, v in sdk.items()])
    mem = p.get("memory")
    if mem and mem.get("python_kb_per_stream"):
        text += (
            f"\n\nPython memory per idle stream (tracemalloc, {mem['streams']} streams): "
            f"{f(mem['python_kb_per_stream'], 1)} KB, by package of the innermost non-stdlib frame:\n\n"
        )
        rows = [[k, f(v, 1)] for k, v in mem["kb_per_stream_by_package"].items() if v >= 0.5]
        text += table(["package", "KB per stream"], rows)
        text += "\n\nLargest allocation sites (KB per stream):\n\n"
        sites = list(mem["top_lines_kb_per_stream"].items())[:10]
        text += table(["site", "KB per stream"], [[k, f(v, 2)] for k, v in sites])
    return text


# --- plots --------------------------------------------------------------------------------------------


def plots(r: dict[str, Any], results: Path = RESULTS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "zantara": "#1f77b4",
        "seed-style": "#d62728",
        "sse-starlette": "#ff7f0e",
        "raw-relay": "#7f7f7f",
    }
    e = r.get("embedding")
    if e:
        lat = e["latency_ms"]
        names = list(lat)
        fig, ax = plt.subplots(figsize=(8, 3.2))
        ax.barh(names, [lat[n]["p50"] for n in names], color="#1f77b4", label="p50")
        ax.scatter([lat[n]["p99"] for n in names], names, color="#d62728", zorder=3, label="p99")
        ax.axvline(5, color="green", linestyle="--", label="target p50 ≤ 5 ms")
        ax.set_xscale("log")
        ax.set_xlabel("ms per query (log scale)")
        ax.legend(fontsize=8)
        ax.set_title("Query embedding latency")
        fig.tight_layout()
        fig.savefig(results / "embedding.png", dpi=110)
        plt.close(fig)
    t = r.get("ttfc")
    if t:
        cases = {k: v for k, v in t["cases"].items() if v.get("app") == "zantara"}
        fig, ax = plt.subplots(figsize=(11, 3.6))
        names = list(cases)
        left = [0.0] * len(names)
        cmap = plt.get_cmap("tab10")
        for i, stage in enumerate(STAGE_ORDER):
            values = [max(0.0, cases[n].get(f"stage_{stage}_p50") or 0.0) for n in names]
            ax.barh(names, values, left=left, color=cmap(i), label=stage)
            left = [a + b for a, b in zip(left, values, strict=True)]
        for b in ("seed-style", "sse-starlette", "raw-relay"):
            v = get(t, "cases", f"{b}@10000", "ttfc_p50")
            if v:
                ax.axvline(v, color=colors[b], linestyle=":", label=f"{b} TTFC p50 @10k")
        ax.axvline(15, color="green", linestyle="--", label="target p50 ≤ 15 ms")
        ax.set_xlabel("ms (p50 of each stage)")
        ax.set_title("Time to first chunk, by stage")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(results / "ttfc.png", dpi=110)
        plt.close(fig)
    rel = r.get("relay")
    if rel:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for app in [*APPS, "zantara-sdk-helper"]:
            cases = [v for v in rel["cases"].values() if v["app"] == app]
            if not cases:
                continue
            cases.sort(key=lambda v: v["streams"])
            xs = [v["streams"] for v in cases]
            color = colors.get(app, "#9467bd")
            axes[0].plot(xs, [v["latency_p99"] for v in cases], "o-", color=color, label=app)
            axes[0].plot(xs, [v["latency_p50"] for v in cases], "o:", color=color, alpha=0.6)
            axes[1].plot(xs, [v["app_cpu_s_per_1k_events"] for v in cases], "o-", color=color, label=app)
            axes[2].plot(xs, [v["events_per_s"] for v in cases], "o-", color=color, label=app)
        xs_all = sorted({v["streams"] for v in rel["cases"].values()})
        axes[2].plot(xs_all, [n * rel["rate_per_stream"] for n in xs_all], "k--", alpha=0.4, label="offered")
        axes[0].axhline(50, color="green", linestyle="--", label="target p99 ≤ 50 ms")
        axes[0].set_yscale("log")
        axes[0].set_title("Added latency per chunk (p99 solid, p50 dotted)", fontsize=9)
        axes[0].set_ylabel("ms")
        axes[1].set_title("App CPU seconds per 1,000 events", fontsize=9)
        axes[2].set_title("Events delivered per second", fontsize=9)
        for ax in axes:
            ax.set_xlabel("concurrent streams")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(results / "relay.png", dpi=110)
        plt.close(fig)
    idle = r.get("idle")
    if idle:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        labels = [k.replace("@", "\n") for k in idle["cases"]]
        values = [v["kb_per_stream"] for v in idle["cases"].values()]
        ax.bar(labels, values, color=[colors.get(v["app"], "gray") for v in idle["cases"].values()])
        ax.axhline(100, color="green", linestyle="--", label="target ≤ 100 KB")
        ax.set_ylabel("KB of RSS per waiting stream")
        ax.set_title("Memory per idle stream")
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        fig.savefig(results / "idle.png", dpi=110)
        plt.close(fig)
    ing = r.get("ingestion")
    if ing:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
        pts = sorted((v["chunks"], v["seconds"]) for v in ing["ingest"].values() if v["backend"] == "onnx")
        if pts:
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="onnx")
        torch_pts = [(v["chunks"], v["seconds"]) for v in ing["ingest"].values() if v["backend"] == "torch"]
        if torch_pts:
            axes[0].plot(
                [p[0] for p in torch_pts], [p[1] for p in torch_pts], "s", color="#d62728", label="torch"
            )
        axes[0].set_xlabel("chunks ingested (embed + upsert)")
        axes[0].set_ylabel("seconds")
        axes[0].set_title("Ingestion time vs corpus size", fontsize=9)
        axes[0].legend(fontsize=8)
        for size, batches in ing.get("upsert_batches", {}).items():
            if batches:
                axes[1].plot(
                    [b["corpus_before"] for b in batches],
                    [b["chunks_per_s"] for b in batches],
                    ".-",
                    label=f"{int(size):,} store",
                )
        axes[1].set_xlabel("chunks already in the store")
        axes[1].set_ylabel("chunks/s")
        axes[1].set_title("Upsert throughput (precomputed vectors) as the store grows", fontsize=9)
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(results / "ingestion.png", dpi=110)
        plt.close(fig)


def render(r: dict[str, Any]) -> str:
    sections = [
        "## Latest figures\n",
        machine_section(r),
        "### Targets\n\n" + table(["target", "measured", "limit", "status", "suite"], targets(r)),
        before_after_section(r),
        embedding_section(r),
        retrieval_section(r),
        ttfc_section(r),
        relay_section(r),
        idle_section(r),
        coldstart_section(r),
        ingestion_section(r),
        profile_section(r),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def write(docs: bool, results: Path = RESULTS) -> None:
    r = load(results)
    try:
        plots(r, results)
    except ImportError:
        print("matplotlib is missing: no plots (pip install -e '.[bench]')", file=sys.stderr)
    body = render(r)
    (results / "summary.md").write_text("# Benchmark summary\n\n" + body.replace("../bench/results/", ""))
    if docs and results == RESULTS and DOC.is_file():
        text = DOC.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            DOC.write_text(head + BEGIN + "\n" + body + END + tail)


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    write(docs="--docs" in sys.argv and not quick, results=RESULTS / "quick" if quick else RESULTS)
