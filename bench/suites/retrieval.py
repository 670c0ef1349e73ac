"""Vector search and the whole retrieval step per knowledge-base size (`python -m bench.suites.retrieval`).

- `search`: `VectorStore.query` (Chroma's HNSW top-k plus its documents and metadata) for precomputed vectors.
- `retrieve`: `Retriever.retrieve` as a request runs it: query embedding (worker thread) + search + grouping.

Distinct questions throughout; the first query after opening (index load) is reported on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from bench import kb, machine
from bench.loadgen import query
from bench.stats import across, summary


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    from zantara_rag.retrieval.embedder import Embedder
    from zantara_rag.retrieval.search import Retriever
    from zantara_rag.retrieval.store import VectorStore, connect
    from zantara_rag.settings import Settings

    rounds, n = int(spec["rounds"]), int(spec["queries"])
    embedder = Embedder(Settings().embedding_model, backend=spec.get("backend", "auto"))
    vectors = embedder.embed([query(100_000 + i) for i in range(rounds * n)])
    out: dict[str, Any] = {"backend": embedder.backend}
    loop = asyncio.new_event_loop()
    for size in spec["sizes"]:
        settings = Settings(chroma_path=Path(spec["kb"][str(size)]), auto_ingest=False)
        t = time.perf_counter()
        store = VectorStore(connect(settings), settings.chroma_collection, settings.embedding_model)
        open_ms = (time.perf_counter() - t) * 1000
        retriever = Retriever.from_settings(embedder, store, settings)
        k = retriever.fetch_k  # as many chunks as the service asks for (re-rank candidates)
        t = time.perf_counter()
        store.query(vectors[0], k)
        first_ms = (time.perf_counter() - t) * 1000
        search_runs, retrieve_runs = [], []
        for r in range(rounds):
            cpu = machine.CpuWindow({"self": os.getpid()}).start()
            times = []
            for i in range(n):
                t = time.perf_counter()
                store.query(vectors[r * n + i], k)
                times.append((time.perf_counter() - t) * 1000)
            search_runs.append({**summary(times), **cpu.stop().report()})

            async def whole(
                retriever: Retriever = retriever, first: int = 200_000 + size + r * n
            ) -> list[float]:
                times = []
                for i in range(n):
                    t = time.perf_counter()
                    await retriever.retrieve(query(first + i))
                    times.append((time.perf_counter() - t) * 1000)
                return times

            cpu = machine.CpuWindow({"self": os.getpid()}).start()
            retrieve_runs.append({**summary(loop.run_until_complete(whole())), **cpu.stop().report()})
        keys = ["p50", "p90", "p99", "other_processes_cores"]
        out[str(size)] = {
            "chunks": store.count(),
            "fetch_k": k,
            "open_ms": round(open_ms, 1),
            "first_query_ms": round(first_ms, 1),
            "search_ms": across(search_runs, keys),
            "retrieve_ms": across(retrieve_runs, keys),
        }
    loop.close()
    embedder.close()
    return out


def run(bench: Any) -> dict[str, Any]:
    sizes = bench.params["kb_sizes"]
    spec = {
        **bench.params["retrieval"],
        "sizes": sizes,
        "kb": {str(s): str(kb.path_for(s) / "chroma") for s in sizes},
    }
    bench.wait_quiet()
    bench.log(f"retrieval: search and retrieve at {sizes} chunks")
    result: dict[str, Any] = bench.python("bench.suites.retrieval", spec, timeout=900)
    return result


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
