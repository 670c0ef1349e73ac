"""From `bench/results/*.json` to a short `summary.md` (the targets, and the service against the baselines
measured in the same run) and the plots docs/performance.md shows. The JSON files keep every figure.

    python -m bench.report [--quick]      # re-render from the last results without measuring anything
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from bench.apps import APPS, BASELINES
from bench.context import RESULTS

SUITES = ["run", "run-partial", "embedding", "retrieval", "ttfc", "relay", "idle", "coldstart", "ingestion"]
STAGES = ["validate", "admit", "embed", "search", "group", "queue", "prompt", "upstream_connect"]
STAGES += ["upstream_first_token", "other"]
COLORS = {"zantara": "#1f77b4", "seed-style": "#d62728", "sse-starlette": "#ff7f0e", "raw-relay": "#7f7f7f"}


def load(results: Path) -> dict[str, Any]:
    paths = {name: results / f"{name}.json" for name in SUITES}
    return {name: json.loads(path.read_text()) for name, path in paths.items() if path.is_file()}


def get(d: Any, *path: Any) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def fmt(x: Any, digits: int = 2, unit: str = "") -> str:
    if x is None:
        return "not measured"
    if isinstance(x, float):
        return "none within 5 s" if math.isinf(x) else f"{x:,.{digits}f}{unit}"
    return f"{x}{unit}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def header(r: dict[str, Any]) -> str:
    run = r.get("run", {})
    m: dict[str, Any] = run.get("machine") or next((v["machine"] for v in r.values() if "machine" in v), {})
    lines = [
        f"- `{run.get('command', '?')}` ({run.get('mode', '?')} mode, {fmt(run.get('duration_s'), 0)} s), "
        f"revision `{m.get('revision')}`{' with uncommitted changes' if m.get('uncommitted_changes') else ''}"
        f", {m.get('at')}",
        f"- {m.get('cores')} cores, {m.get('cpu_model')}, {m.get('memory_gb')} GB, Python {m.get('python')}; "
        f"load average {run.get('load_start')} at start, {run.get('load_end')} at end (each suite's JSON "
        "records the cores others used during every measurement: `other_processes_cores`)",
    ]
    partial = r.get("run-partial")
    if partial and (get(partial, "machine", "at") or "") > (m.get("at") or ""):
        lines.append(f"- re-measured since: {', '.join(partial['suites'])} (`{partial['command']}`)")
    return "\n".join(lines)


def targets(r: dict[str, Any]) -> list[list[Any]]:
    cases = get(r, "relay", "cases") or {}
    r500 = cases.get("zantara@500") or {}
    idle = [v for v in (get(r, "idle", "cases") or {}).values() if v["app"] == "zantara"]
    biggest: dict[str, Any] = max(idle, key=lambda v: v["streams"], default={})
    probe = (r500.get("ttfc_probe_p99") or math.inf) if r500 else None  # no probe answered: missed
    seed = {n: get(cases, f"seed-style@{n}", "app_cpu_s_per_1k_events") for n in (100, 500)}
    rows: list[tuple[str, Any, Any, str]] = [
        ("query embedding p50", get(r, "embedding", "latency_ms", "onnx", "p50"), 5, " ms"),
        ("retrieval p50 @ 10k chunks", get(r, "retrieval", "10000", "retrieve_ms", "p50"), 8, " ms"),
        (
            "retrieval p50 @ 10k, spaced 20 ms",
            get(r, "retrieval", "10000", "retrieve_spaced_ms", "p50"),
            10,
            " ms",
        ),
        ("retrieval p50 @ 100k chunks", get(r, "retrieval", "100000", "retrieve_ms", "p50"), 15, " ms"),
        ("TTFC p50 @ 10k, one at a time", get(r, "ttfc", "cases", "zantara@10000", "ttfc_p50"), 15, " ms"),
        ("TTFC p99 @ 10k, one at a time", get(r, "ttfc", "cases", "zantara@10000", "ttfc_p99"), 40, " ms"),
        ("TTFC p99 while 500 streams relay", probe, 100, " ms"),
        ("relay 500 × 40/s: added latency p99", r500.get("latency_p99"), 50, " ms"),
        ("relay 500: heartbeats late > 1 s", r500.get("heartbeat_late_over_1s"), 0, ""),
        (
            "relay 100: CPU s per 1,000 events",
            get(cases, "zantara@100", "app_cpu_s_per_1k_events"),
            seed[100],
            "",
        ),
        ("relay 500: CPU s per 1,000 events", r500.get("app_cpu_s_per_1k_events"), seed[500], ""),
        (
            f"idle memory per waiting stream @ {biggest.get('streams')}",
            biggest.get("kb_per_stream"),
            100,
            " KB",
        ),
        ("cold start to /ready", get(r, "coldstart", "ready_onnx", "ready_s"), 5, " s"),
    ]
    out = []
    for name, value, limit, unit in rows:
        cpu = "CPU" in name  # the limit is seed-style's figure, measured in the same run
        limit_text = f"≤ seed-style ({fmt(limit, 3)})" if cpu else f"≤ {limit:g}{unit}"
        status = "–" if value is None or limit is None else "met" if value <= limit else "**missed**"
        out.append([name, fmt(value, 3 if cpu else 2, unit), limit_text, status])
    return out


def against_baselines(r: dict[str, Any]) -> list[list[Any]]:
    """Each figure of the service next to the same figure of an alternative measured in the same run."""
    rows: list[list[Any]] = []

    def add(figure: str, ours: float | None, baseline: str, theirs: float | None, digits: int = 2) -> None:
        if ours is not None and theirs is not None:
            ratio = f"{ours / theirs:.2f}×" if theirs else "–"
            rows.append([figure, fmt(ours, digits), baseline, fmt(theirs, digits), ratio])

    lat = get(r, "embedding", "latency_ms") or {}
    add(
        "query embedding p50 ms",
        get(lat, "onnx", "p50"),
        "sentence-transformers",
        get(lat, "sentence-transformers", "p50"),
    )
    ttfc = get(r, "ttfc", "cases") or {}
    for other in ["zantara-torch", *BASELINES]:
        name = "torch embedder" if other == "zantara-torch" else other
        add(
            "TTFC p50 ms @ 10k",
            get(ttfc, "zantara@10000", "ttfc_p50"),
            name,
            get(ttfc, f"{other}@10000", "ttfc_p50"),
        )
    relay = get(r, "relay", "cases") or {}
    for theirs in relay.values():
        ours = relay.get(f"zantara@{theirs['streams']}")
        if theirs["app"] not in BASELINES or ours is None:
            continue
        at = f"relay {theirs['streams']}"
        add(f"{at}: added latency p99 ms", ours["latency_p99"], theirs["app"], theirs["latency_p99"])
        cpu = "app_cpu_s_per_1k_events"
        add(f"{at}: CPU s per 1,000 events", ours[cpu], theirs["app"], theirs[cpu], 3)
        add(f"{at}: events/s", ours["events_per_s"], theirs["app"], theirs["events_per_s"], 0)
    idle = get(r, "idle", "cases") or {}
    for theirs in idle.values():
        ours = idle.get(f"zantara@{theirs['streams']}")
        if theirs["app"] in BASELINES and ours:
            add(
                f"idle {theirs['streams']}: KB per stream",
                ours["kb_per_stream"],
                theirs["app"],
                theirs["kb_per_stream"],
                1,
            )
    cold = get(r, "coldstart") or {}
    add(
        "cold start s",
        get(cold, "ready_onnx", "ready_s"),
        "torch embedder",
        get(cold, "ready_torch", "ready_s"),
    )
    ing = get(r, "ingestion", "ingest") or {}
    add(
        "ingestion chunks/s",
        get(ing, "onnxx1", "chunks_per_s"),
        "torch embedder",
        get(ing, "torchx1", "chunks_per_s"),
        1,
    )
    return rows


def summary(r: dict[str, Any]) -> str:
    return (
        "# Benchmark summary\n\n"
        + header(r)
        + "\n\n## Targets\n\n"
        + table(["target", "measured", "limit", "status"], targets(r))
        + "\n\n## Against the alternatives measured in this run\n\n"
        + table(
            ["figure (median)", "zantara", "alternative", "its figure", "zantara ÷ it"], against_baselines(r)
        )
        + "\n\nEvery figure, with its spread, per window and per round: the suites' JSON files here.\n"
    )


def plots(r: dict[str, Any], results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(results / f"{name}.png", dpi=110)
        plt.close(fig)

    if lat := get(r, "embedding", "latency_ms"):
        fig, ax = plt.subplots(figsize=(8, 3.2))
        ax.barh(list(lat), [v["p50"] for v in lat.values()], color=COLORS["zantara"], label="p50")
        ax.scatter([v["p99"] for v in lat.values()], list(lat), color="#d62728", zorder=3, label="p99")
        ax.axvline(5, color="green", linestyle="--", label="target p50 ≤ 5 ms")
        ax.set(xscale="log", xlabel="ms per query (log scale)", title="Query embedding latency")
        ax.legend(fontsize=8)
        save(fig, "embedding")
    if ttfc := get(r, "ttfc", "cases"):
        ours = {k: v for k, v in ttfc.items() if v.get("app") == "zantara"}
        fig, ax = plt.subplots(figsize=(11, 3.6))
        left = [0.0] * len(ours)
        for i, stage in enumerate(STAGES):
            values = [max(0.0, v.get(f"stage_{stage}_p50") or 0.0) for v in ours.values()]
            ax.barh(list(ours), values, left=left, color=plt.get_cmap("tab10")(i), label=stage)
            left = [a + b for a, b in zip(left, values, strict=True)]
        for b in BASELINES:
            if v := get(ttfc, f"{b}@10000", "ttfc_p50"):
                ax.axvline(v, color=COLORS[b], linestyle=":", label=f"{b} TTFC p50 @10k")
        ax.axvline(15, color="green", linestyle="--", label="target p50 ≤ 15 ms")
        ax.set(xlabel="ms (p50 of each stage)", title="Time to first chunk, by stage")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        save(fig, "ttfc")
    if rel := r.get("relay"):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for app in APPS:
            cases = sorted((v for v in rel["cases"].values() if v["app"] == app), key=lambda v: v["streams"])
            xs = [v["streams"] for v in cases]
            axes[0].plot(xs, [v["latency_p99"] for v in cases], "o-", color=COLORS[app], label=app)
            axes[0].plot(xs, [v["latency_p50"] for v in cases], "o:", color=COLORS[app], alpha=0.6)
            axes[1].plot(
                xs, [v["app_cpu_s_per_1k_events"] for v in cases], "o-", color=COLORS[app], label=app
            )
            axes[2].plot(xs, [v["events_per_s"] for v in cases], "o-", color=COLORS[app], label=app)
        xs = sorted({v["streams"] for v in rel["cases"].values()})
        axes[2].plot(xs, [n * rel["rate_per_stream"] for n in xs], "k--", alpha=0.4, label="offered")
        axes[0].axhline(50, color="green", linestyle="--", label="target p99 ≤ 50 ms")
        axes[0].set(yscale="log", ylabel="ms")
        axes[0].set_title("Added latency per chunk (p99 solid, p50 dotted)", fontsize=9)
        axes[1].set_title("App CPU seconds per 1,000 events", fontsize=9)
        axes[2].set_title("Events delivered per second", fontsize=9)
        for ax in axes:
            ax.set_xlabel("concurrent streams")
            ax.legend(fontsize=7)
        save(fig, "relay")
    if idle := get(r, "idle", "cases"):
        fig, ax = plt.subplots(figsize=(8, 3.2))
        colors = [COLORS.get(v["app"], "gray") for v in idle.values()]
        ax.bar(
            [k.replace("@", "\n") for k in idle], [v["kb_per_stream"] for v in idle.values()], color=colors
        )
        ax.axhline(100, color="green", linestyle="--", label="target ≤ 100 KB")
        ax.set(ylabel="KB of RSS per waiting stream", title="Memory per idle stream")
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        save(fig, "idle")
    if ing := r.get("ingestion"):
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
        for backend, style in (("onnx", "o-"), ("torch", "s")):
            pts = sorted(
                (v["chunks"], v["seconds"]) for v in ing["ingest"].values() if v["backend"] == backend
            )
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], style, label=backend)
        axes[0].set(xlabel="chunks ingested (embed + upsert)", ylabel="seconds")
        axes[0].set_title("Ingestion time vs corpus size", fontsize=9)
        for size, batches in ing.get("upsert_batches", {}).items():
            xs, ys = [b["corpus_before"] for b in batches], [b["chunks_per_s"] for b in batches]
            axes[1].plot(xs, ys, ".-", label=f"{int(size):,} store")
        axes[1].set(xlabel="chunks already in the store", ylabel="chunks/s")
        axes[1].set_title("Upsert throughput (precomputed vectors) as the store grows", fontsize=9)
        for ax in axes:
            ax.legend(fontsize=8)
        save(fig, "ingestion")


def write(results: Path = RESULTS) -> str:
    """Render `summary.md` and the plots in `results`; returns the summary."""
    r = load(results)
    try:
        plots(r, results)
    except ImportError:
        print("matplotlib is missing: no plots (pip install -e '.[bench]')", file=sys.stderr)
    text = summary(r)
    (results / "summary.md").write_text(text)
    return text


if __name__ == "__main__":
    print(write(RESULTS / "quick" if "--quick" in sys.argv else RESULTS))
