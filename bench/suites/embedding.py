"""Query embedding latency and batch throughput per backend (`python -m bench.suites.embedding`).

Variants, interleaved round by round so that a burst of load from elsewhere hits them all alike:

- `sentence-transformers`: the service before (SentenceTransformer.encode, torch's default threads).
- `sentence-transformers-1t`: the same on one torch thread (separates threading from framework overhead).
- `torch-direct-1t`: the fast tokenizer and the transformer called directly, `torch.inference_mode`, 1 thread.
- `onnx`: the ONNX backend's full-precision model (`EMBEDDING_BACKEND=onnx`): what passages use, and questions
  with `EMBEDDING_QUERY_PRECISION=fp32`.

Every query of a round is distinct. `onnx-embed_query` is a question as the service embeds it: on the 8-bit
questions' model (`query_precision` in the results), through the worker thread, from an event loop (the thread
hand-off is part of what a request pays).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench import machine
from bench.loadgen import query
from bench.stats import across, ratio, summary


def _chunk_texts(n: int) -> list[str]:
    from zantara_rag.knowledge.chunking import chunk_document
    from zantara_rag.knowledge.documents import load
    from zantara_rag.knowledge.files import discover
    from zantara_rag.settings import DEFAULT_KNOWLEDGE_PATH

    texts: list[str] = []
    for file in discover([DEFAULT_KNOWLEDGE_PATH]).files:
        document = load(file)
        texts.extend(c.embedding_text(document.title) for c in chunk_document(document, 1200, 150))
    return texts[:n]


class TorchDirect:
    """The transformer without sentence-transformers' encode loop: tokenize, forward, pool, normalise."""

    def __init__(self, path: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    def embed(self, texts: list[str]) -> Any:
        torch = self.torch
        with torch.inference_mode():
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
            out = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
            mean = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1).numpy()


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from zantara_rag.retrieval.embedder import Embedder, resolve_model_path
    from zantara_rag.settings import DEFAULT_EMBEDDING_MODEL

    rounds, n = int(spec["rounds"]), int(spec["queries"])
    default_threads = torch.get_num_threads()
    before = Embedder(DEFAULT_EMBEDDING_MODEL, backend="torch")
    after = Embedder(DEFAULT_EMBEDDING_MODEL, backend="onnx")
    direct = TorchDirect(resolve_model_path(DEFAULT_EMBEDDING_MODEL))

    def threads(k: int) -> None:
        torch.set_num_threads(k)

    variants: dict[str, tuple[Any, int]] = {
        "sentence-transformers": (lambda q: before.embed([q]), default_threads),
        "sentence-transformers-1t": (lambda q: before.embed([q]), 1),
        "torch-direct-1t": (lambda q: direct.embed([q]), 1),
        "onnx": (lambda q: after.embed([q]), 1),
    }
    for fn, k in variants.values():  # warm-up: first calls allocate
        threads(k)
        for i in range(10):
            fn(query(10_000_000 + i))

    per_round: dict[str, list[dict[str, Any]]] = {name: [] for name in [*variants, "onnx-embed_query"]}
    loop = asyncio.new_event_loop()
    for r in range(rounds):
        qs = [query(r * n + i) for i in range(n)]
        for name, (fn, k) in variants.items():
            threads(k)
            cpu = machine.CpuWindow({"self": os.getpid()}).start()
            times = []
            for q in qs:
                t = time.perf_counter()
                fn(q)
                times.append((time.perf_counter() - t) * 1000)
            per_round[name].append({**summary(times), **cpu.stop().report()})

        async def via_thread(qs: list[str] = qs) -> list[float]:
            out = []
            for q in qs:
                t = time.perf_counter()
                await after.embed_query(q)
                out.append((time.perf_counter() - t) * 1000)
            return out

        per_round["onnx-embed_query"].append(summary(loop.run_until_complete(via_thread())))
    loop.close()

    keys = ["p50", "p90", "p99", "other_processes_cores"]
    latency = {name: across(runs, keys) for name, runs in per_round.items()}

    texts = _chunk_texts(int(spec["batch_texts"]))
    threads(default_threads)
    batch: dict[str, Any] = {"texts": len(texts), "mean_chars": round(sum(map(len, texts)) / len(texts))}
    for name, fn in {
        "sentence-transformers": lambda: before.embed(texts),
        "onnx": lambda: after.embed(texts),
    }.items():
        runs = []
        for _ in range(2):
            cpu = machine.CpuWindow({"self": os.getpid()}).start()
            t = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t
            runs.append({"chunks_per_s": len(texts) / seconds, **cpu.stop().report()})
        batch[name] = across(runs, ["chunks_per_s", "other_processes_cores"], 1)
    before.close()
    after.close()
    return {
        "query_precision": after.query_precision,
        "latency_ms": latency,
        "batch": batch,
        "torch_default_threads": default_threads,
        "speedup_p50_onnx_vs_before": ratio(latency["sentence-transformers"]["p50"], latency["onnx"]["p50"]),
    }


def run(bench: Any) -> dict[str, Any]:
    bench.wait_quiet()
    bench.log("embedding: query latency per backend")
    result = bench.python("bench.suites.embedding", bench.params["embedding"], timeout=600)
    return result


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
