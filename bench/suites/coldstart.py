"""Cold start: process start → `/ready` 200 with the 10k knowledge base ingested, per embedding backend.

Plus a breakdown of where the time goes (`python -m bench.suites.coldstart`, a fresh interpreter each time):
interpreter start, importing the app, opening Chroma, loading the embedding model, the Claude client — the
same steps as the lifespan, timed one by one — and the first start without the ONNX cache (the export).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def phases(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh interpreter: the lifespan's steps, timed in order."""
    marks: dict[str, float] = {}
    t = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        marks[name] = round((now - t) * 1000, 1)
        t = now

    import zantara_rag.app  # noqa: F401  (FastAPI, Starlette, pydantic, the app's modules)

    mark("import_app")
    from zantara_rag.retrieval.store import VectorStore, connect
    from zantara_rag.settings import Settings

    settings = Settings(chroma_path=Path(spec["kb"]), auto_ingest=False, embedding_backend=spec["backend"])
    client = connect(settings)
    mark("import_chromadb_and_connect")
    store = VectorStore(client, settings.chroma_collection, settings.embedding_model)
    store.count()
    mark("open_collection")
    from zantara_rag.retrieval.embedder import Embedder

    embedder = Embedder(settings.embedding_model, backend=settings.embedding_backend)
    mark(f"load_embedder_{embedder.backend}")
    import anthropic  # noqa: F401

    mark("import_anthropic")
    embedder.embed(["warm"])
    mark("first_embedding")
    return marks


def ready_s(kb: Path, upstream_url: str, timeout: float = 180.0, **env: Any) -> float:
    """A fresh service: process start → `/ready` 200, polled every 10 ms (the harness's 0.2 s: too coarse)."""
    import httpx

    from bench.apps import AppProcess

    proc = AppProcess("zantara", kb, upstream_url, **env)
    try:
        started = time.monotonic()
        proc.start(wait=None)
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() - started < timeout:
                if proc.proc is None or proc.proc.poll() is not None:
                    raise RuntimeError(f"the service exited:\n{proc.logs()[-3000:]}")
                try:
                    if client.get(proc.url + "/ready").status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.01)
        raise TimeoutError(f"not ready after {timeout}s:\n{proc.logs()[-3000:]}")
    finally:
        proc.cleanup()


def run(bench: Any) -> dict[str, Any]:
    # Imported here: the phases above run in a fresh interpreter that must import nothing else first.
    from bench import kb
    from bench.stats import across, ratio
    from bench.upstream import Upstream

    runs = int(bench.params["coldstart"]["runs"])
    kb10 = kb.path_for(10000) / "chroma"
    out: dict[str, Any] = {}
    with Upstream() as upstream:
        ready: dict[str, list[dict[str, Any]]] = {"onnx": [], "torch": []}
        for _ in range(runs):
            for backend in ready:  # interleaved, so a burst of load elsewhere hits both alike
                bench.wait_quiet(max_wait=10)
                seconds = ready_s(kb10, upstream.base_url, EMBEDDING_BACKEND=backend)
                ready[backend].append({"ready_s": seconds})
        for backend, samples in ready.items():
            out[f"ready_{backend}"] = across(samples, ["ready_s"])
            bench.log(
                f"coldstart: {backend} ready in {out[f'ready_{backend}']['ready_s']}s (median of {runs})"
            )
        if bench.params["coldstart"].get("first_export"):
            with tempfile.TemporaryDirectory() as cache:
                first = ready_s(kb10, upstream.base_url, EMBEDDING_CACHE_DIR=cache)
            out["ready_onnx_first_export"] = {"ready_s": round(first, 3), "runs": 1}
    for backend in ("onnx", "torch") if bench.params["coldstart"].get("phase_runs") else ():
        samples = []
        for _ in range(int(bench.params["coldstart"]["phase_runs"])):
            t = time.perf_counter()
            samples.append(
                bench.python("bench.suites.coldstart", {"kb": str(kb10), "backend": backend}, timeout=300)
            )
            samples[-1]["process_total"] = round((time.perf_counter() - t) * 1000, 1)
        out[f"phases_ms_{backend}"] = across(samples, sorted({k for s in samples for k in s}), 1)
    interpreter = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "pass"], check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        )
        interpreter.append({"ms": (time.perf_counter() - t) * 1000})
    out["interpreter_start_ms"] = across(interpreter, ["ms"], 1)
    out["speedup_ready_torch_over_onnx"] = ratio(out["ready_torch"]["ready_s"], out["ready_onnx"]["ready_s"])
    return out


if __name__ == "__main__":
    print(json.dumps(phases(json.loads(sys.argv[1]))))
