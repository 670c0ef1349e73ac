"""Time to first chunk, one request at a time, against an upstream that answers at once.

The service runs with TIMING_HEADERS=true: its `Server-Timing` header splits the time before the first byte
(validate, admit, embed, search, retrieve) and its done event's `timing` the producer's part (queue, prompt,
upstream_connect = SDK request until the upstream's response head, upstream_first_token). What is left of
the client-measured TTFC is `other`: HTTP parsing, routing, the SSE machinery, sockets.

Measured at each knowledge-base size, with the torch embedder (before) at 10k, and for the baselines at 10k.
"""

from __future__ import annotations

from typing import Any

from bench import kb
from bench.apps import BASELINES, AppProcess
from bench.stats import across, percentile, ratio, summary
from bench.upstream import INSTANT, Upstream

STAGES_HEAD = ["validate", "admit", "embed", "search", "retrieve"]
STAGES_DONE = ["queue", "prompt", "upstream_connect", "upstream_first_token"]


def digest(rounds: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Per round: p50/p99 of TTFC and head time, p50 of every stage; then the median over rounds."""
    per_round = []
    for samples in rounds:
        ok = [s for s in samples if s["ttfc_ms"] is not None]
        row: dict[str, Any] = {
            "failed": len(samples) - len(ok),
            "ttfc_p50": percentile([s["ttfc_ms"] for s in ok], 50),
            "ttfc_p99": percentile([s["ttfc_ms"] for s in ok], 99),
            "head_p50": percentile([s["head_ms"] for s in ok if s["head_ms"] is not None], 50),
        }
        stage_values: dict[str, list[float]] = {}
        for s in ok:
            stages = {**s.get("server_timing", {}), **s.get("done_timing", {})}
            if not stages:
                continue
            # `retrieve` contains embed and search; the rest of it is grouping the hits.
            stages["group"] = max(
                0.0, stages.get("retrieve", 0) - stages.get("embed", 0) - stages.get("search", 0)
            )
            known = ["validate", "admit", "embed", "search", "group", *STAGES_DONE]
            stages["other"] = s["ttfc_ms"] - sum(stages.get(k, 0) for k in known)
            for name, value in stages.items():
                stage_values.setdefault(name, []).append(value)
        for name, values in stage_values.items():
            row[f"stage_{name}_p50"] = percentile(values, 50)
        per_round.append(row)
    keys = sorted({k for row in per_round for k in row if k != "failed"})
    out = across(per_round, keys)
    out["failed"] = sum(r["failed"] for r in per_round)
    out["all_requests"] = summary([s["ttfc_ms"] for r in rounds for s in r if s["ttfc_ms"] is not None])
    return out


def run(bench: Any) -> dict[str, Any]:
    params = bench.params["ttfc"]
    spec = {"mode": "ttfc", **{k: params[k] for k in ("rounds", "requests", "warmup")}}
    sizes = bench.params["kb_sizes"]
    cases: list[tuple[str, str, int, dict[str, Any]]] = [("zantara", "zantara", s, {}) for s in sizes]
    cases.append(("zantara-torch", "zantara", 10000, {"EMBEDDING_BACKEND": "torch"}))
    if params.get("baselines"):
        cases += [(b, b, 10000, {}) for b in BASELINES]
    results: dict[str, Any] = {}
    offset = 0
    with Upstream() as upstream:
        for label, app, size, env in cases:
            upstream.play(INSTANT)
            with AppProcess(
                app, kb.path_for(size) / "chroma", upstream.base_url, TIMING_HEADERS="true", **env
            ) as proc:
                bench.wait_quiet()
                bench.log(f"ttfc: {label} at {size} chunks")
                raw = bench.loadgen({**spec, "port": proc.port, "query_offset": offset, "max_seconds": 300})
            offset += 100_000
            results[f"{label}@{size}"] = {
                "app": app,
                "kb": size,
                "env": env,
                **digest(raw["rounds"]),
                "loadgen": raw["loadgen"],
            }
    ours = results.get("zantara@10000", {})
    ratios = {
        key: {
            "ttfc_p50": ratio(value.get("ttfc_p50"), ours.get("ttfc_p50")),
            "ttfc_p99": ratio(value.get("ttfc_p99"), ours.get("ttfc_p99")),
        }
        for key, value in results.items()
        if key.endswith("@10000") and key != "zantara@10000"
    }
    return {"cases": results, "ratios_vs_zantara_at_10k": ratios}
