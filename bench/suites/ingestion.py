"""Ingestion throughput: the real `ingest()` of the sample knowledge base (embedding + upsert), per backend,
and how its time grows with the corpus (the sample copied 1, 2, 4 times under distinct folders), plus the
upsert-only cost per batch as the synthetic 10k/100k stores were built (`bench/kb.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    from bench import machine
    from zantara_rag.knowledge.ingest import ingest
    from zantara_rag.retrieval.embedder import Embedder
    from zantara_rag.retrieval.store import VectorStore, connect
    from zantara_rag.settings import DEFAULT_KNOWLEDGE_PATH, Settings

    copies = int(spec["copies"])
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        roots = []
        for i in range(copies):
            root = Path(tmp) / f"knowledge-{i}"
            shutil.copytree(DEFAULT_KNOWLEDGE_PATH, root)
            roots.append(root)
        settings = Settings(chroma_path=Path(tmp) / "chroma", auto_ingest=False)
        store = VectorStore(connect(settings), settings.chroma_collection, settings.embedding_model)
        embedder = Embedder(settings.embedding_model, backend=spec["backend"])
        cpu = machine.CpuWindow({"self": os.getpid()}).start()
        t = time.perf_counter()
        report = ingest(roots, store, embedder, root=Path(tmp), max_chars=1200, overlap=150, progress=False)
        seconds = time.perf_counter() - t
        embedder.close()
        return {
            "backend": embedder.backend,
            "copies": copies,
            "chunks": report.added,
            "seconds": round(seconds, 2),
            "chunks_per_s": round(report.added / seconds, 1),
            **cpu.stop().report(),
        }


def run(bench: Any) -> dict[str, Any]:
    from bench import kb
    from bench.stats import across, ratio

    params = bench.params["ingestion"]
    out: dict[str, Any] = {"ingest": {}}
    for backend in params["backends"]:
        for copies in params["copies"]:
            if backend != "onnx" and copies != 1:
                continue
            bench.wait_quiet()
            bench.log(f"ingestion: {backend}, sample knowledge base x{copies}")
            # Repeated for the 1x corpus on ONNX; the larger ones are single points of the growth line, and
            # torch (the before) is a single run too, to keep the full run under 15 minutes.
            repeat = int(params["runs"]) if copies == 1 and backend == "onnx" else 1
            runs = [
                bench.python("bench.suites.ingestion", {"backend": backend, "copies": copies}, timeout=900)
                for _ in range(repeat)
            ]
            out["ingest"][f"{backend}x{copies}"] = {
                "backend": backend,
                "copies": copies,
                "chunks": runs[0]["chunks"],
                **across(runs, ["seconds", "chunks_per_s", "other_processes_cores"]),
            }
    onnx, torch = out["ingest"].get("onnxx1"), out["ingest"].get("torchx1")
    if onnx and torch:
        out["speedup_onnx_over_torch"] = ratio(onnx["chunks_per_s"], torch["chunks_per_s"])
    out["upsert_batches"] = {}
    for size in bench.params["kb_sizes"]:
        info = kb.built(size)
        if info:
            out["upsert_batches"][str(size)] = [
                {**b, "chunks_per_s": round(b["chunks"] / b["seconds"], 1)} for b in info["batches"]
            ]
    return out


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
