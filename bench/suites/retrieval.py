"""Vector search and the whole retrieval step per knowledge-base size (`python -m bench.suites.retrieval`).

- `search`: `VectorStore.query` (Chroma's HNSW top-k plus its documents and metadata) for precomputed vectors.
- `retrieve`: `Retriever.retrieve` as a request runs it: language, glossary, the question and its gloss
  embedded on the questions' model (worker thread), one Chroma request for both (on the same thread), BM25
  over the lexical index meanwhile, fusion, the off-topic cut-off, grouping.
- `retrieve_spaced`, `retrieve_before_spaced`: the same, each question after an idle gap (`spaced_gap_s`,
  20 ms as in `ttfc`): what a service sees between two people's questions. Back to back, both cores stay
  awake and the model's weights stay in the cache; after a gap neither holds, and a retrieval costs 2-4 ms
  more. The two measures ranked designs differently (docs/retrieval.md, "Latency"): both are reported.
- `retrieve_before`: the retriever before issue #12 (one vector, Chroma, the word-overlap re-rank;
  `bench.retrieval_quality.Baseline`), measured in the same run on the same store: the baseline of the ratio.
- `lexical_build_ms`: building the lexical index from the collection (what a start or a refresh costs).

The questions are the labelled ones of tests/data (English and Indonesian, both directions), each made
distinct with a suffix; the first query after opening (index load) is reported on its own.
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
from bench.stats import across, ratio, summary

QUESTIONS = Path(__file__).resolve().parents[2] / "tests" / "data" / "questions.json"


def questions() -> list[str]:
    return [q["question"] for q in json.loads(QUESTIONS.read_text(encoding="utf-8"))]


def query(i: int, pool: list[str]) -> str:
    """A distinct question for every call of a run (so no cache can serve it)."""
    return f"{pool[i % len(pool)]} (case {i})"


# The spaced runs: an idle gap before each question, as the `ttfc` suite leaves between requests.
SPACED_GAP_S = 0.02
SPACED = ("retrieve_spaced", "retrieve_before_spaced")


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.retrieval_quality import Baseline
    from zantara_rag.language import load_language_model
    from zantara_rag.retrieval.embedder import Embedder
    from zantara_rag.retrieval.glossary import Glossary
    from zantara_rag.retrieval.mirror import LexicalMirror
    from zantara_rag.retrieval.search import Retriever
    from zantara_rag.retrieval.store import VectorStore
    from zantara_rag.settings import Settings

    rounds, n = int(spec["rounds"]), int(spec["queries"])
    spaced = float(spec.get("spaced_gap_s", SPACED_GAP_S))
    pool = questions()
    embedder = Embedder(Settings().embedding_model, backend=spec.get("backend", "auto"))
    vectors = embedder.embed([query(100_000 + i, pool) for i in range(rounds * n)])
    load_language_model()
    glossary = Glossary.load()
    out: dict[str, Any] = {"backend": embedder.backend}
    loop = asyncio.new_event_loop()
    for size in spec["sizes"]:
        settings = Settings(chroma_path=Path(spec["kb"][str(size)]), auto_ingest=False)
        t = time.perf_counter()
        store = VectorStore.open(settings)
        open_ms = (time.perf_counter() - t) * 1000
        mirror = LexicalMirror(store)
        t = time.perf_counter()
        mirror.refresh()
        lexical_build_ms = (time.perf_counter() - t) * 1000
        retriever = Retriever.from_settings(embedder, store, settings, mirror=mirror, glossary=glossary)
        before = Baseline(embedder, store, settings.retrieval_top_k, settings.sources_top_k)
        k = retriever.candidates
        t = time.perf_counter()
        store.query(vectors[0], k)
        first_ms = (time.perf_counter() - t) * 1000
        runs: dict[str, list[dict[str, Any]]] = {
            name: [] for name in ("search", "retrieve", "retrieve_before", *SPACED)
        }
        for r in range(rounds):
            cpu = machine.CpuWindow({"self": os.getpid()}).start()
            times = []
            for i in range(n):
                t = time.perf_counter()
                store.query(vectors[r * n + i], k)
                times.append((time.perf_counter() - t) * 1000)
            runs["search"].append({**summary(times), **cpu.stop().report()})

            for name, subject, first, gap in (
                ("retrieve", retriever, 200_000 + size + r * n, 0.0),
                ("retrieve_before", before, 300_000 + size + r * n, 0.0),
                ("retrieve_spaced", retriever, 400_000 + size + r * n, spaced),
                ("retrieve_before_spaced", before, 500_000 + size + r * n, spaced),
            ):

                async def whole(subject: Any = subject, first: int = first, gap: float = gap) -> list[float]:
                    times = []
                    for i in range(n):
                        if gap:
                            await asyncio.sleep(gap)  # idle, as between two people's questions
                        t = time.perf_counter()
                        await subject.retrieve(query(first + i, pool))
                        times.append((time.perf_counter() - t) * 1000)
                    return times

                cpu = machine.CpuWindow({"self": os.getpid()}).start()
                runs[name].append({**summary(loop.run_until_complete(whole())), **cpu.stop().report()})
        keys = ["p50", "p90", "p99", "other_processes_cores"]
        result = {
            "chunks": store.count(),
            "fusion_candidates": k,
            "open_ms": round(open_ms, 1),
            "lexical_build_ms": round(lexical_build_ms, 1),
            "first_query_ms": round(first_ms, 1),
            **{f"{name}_ms": across(found, keys) for name, found in runs.items()},
        }
        result["retrieve_vs_before_p50"] = ratio(
            result["retrieve_ms"]["p50"], result["retrieve_before_ms"]["p50"]
        )
        result["retrieve_spaced_vs_before_p50"] = ratio(
            result["retrieve_spaced_ms"]["p50"], result["retrieve_before_spaced_ms"]["p50"]
        )
        out[str(size)] = result
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
