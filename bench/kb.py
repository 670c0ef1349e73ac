"""Knowledge bases of 1k, 10k and 100k chunks for the benchmarks, built once and cached in `bench/.cache/kb/`.

    python -m bench.kb 1000 10000 100000

Each is the real sample knowledge base (`apps/knowledge`, ingested by the real `ingest()`, so questions find
real passages and the prompt is the same at every size) padded with synthetic chunks up to the size.
Embedding 100k texts would take many minutes on 2 cores, so the padding is upserted with precomputed
random unit vectors (seeded): the vector index and the document store hold the real number of entries of
realistic size, but none of the padding is ever near a real question. The build times per batch of upserts
are kept in `build.json`: they show how indexing time grows with the corpus.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "kb"
VERSION = 2  # 2: the sample knowledge base with bilingual front matter (index format 2)
BATCH = 2000
# The padding's vocabulary: words of the knowledge base's own domain, so chunks are of realistic size.
VOCABULARY = (
    "visa permit company tax office report capital investor foreign director shareholder license "
    "regulation ministry deadline application sponsor fee payment residence notary deed bank account "
    "employee contract salary insurance property lease land building villa tourism levy immigration "
    "extension stay return annual monthly statement document registration number code district province "
    "regency approval requirement penalty fine holiday allowance severance termination"
)


def path_for(size: int) -> Path:
    return CACHE / f"{size}-v{VERSION}"


def built(size: int) -> dict[str, Any] | None:
    marker = path_for(size) / "build.json"
    return json.loads(marker.read_text()) if marker.is_file() else None


def _settings(path: Path) -> Any:
    from zantara_rag.settings import Settings

    return Settings(chroma_path=path, auto_ingest=False)


def _base() -> Path:
    """The sample knowledge base, ingested once by the real code path."""
    from zantara_rag.knowledge.ingest import ingest
    from zantara_rag.retrieval.embedder import Embedder
    from zantara_rag.retrieval.store import VectorStore, connect

    base = CACHE / f"base-v{VERSION}"
    if (base / "build.json").is_file():
        return base
    shutil.rmtree(base, ignore_errors=True)
    settings = _settings(base / "chroma")
    store = VectorStore(connect(settings), settings.chroma_collection, settings.embedding_model)
    embedder = Embedder(settings.embedding_model)
    report = ingest(
        [settings.knowledge_path],
        store,
        embedder,
        root=settings.knowledge_path,
        max_chars=1200,
        overlap=150,
        progress=False,
    )
    embedder.close()
    (base / "build.json").write_text(
        json.dumps(
            {"chunks": store.count(), "ingest_s": round(report.seconds, 2), "backend": embedder.backend}
        )
    )
    return base


def build(size: int) -> dict[str, Any]:
    import numpy as np

    from zantara_rag.retrieval.store import VectorStore, connect

    done = built(size)
    if done is not None:
        return done
    base = _base()
    target = path_for(size)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(base / "chroma", target / "chroma")
    settings = _settings(target / "chroma")
    store = VectorStore(connect(settings), settings.chroma_collection, settings.embedding_model)
    real = store.count()
    rng = np.random.default_rng(size)
    batches = []
    started = time.perf_counter()
    n = real
    while n < size:
        count = min(BATCH, size - n)
        vectors = rng.standard_normal((count, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"synthetic-{n + i:07d}" for i in range(count)]
        texts, metas = [], []
        for i in range(count):
            doc = (n + i) // 8
            words = rng.choice(VOCABULARY.split(), size=int(rng.integers(90, 160)))
            texts.append(f"Synthetic document {doc}\n\n" + " ".join(words))
            metas.append(
                {
                    "doc": f"synthetic/doc-{doc:06d}.md",
                    "title": f"Synthetic document {doc}",
                    "path": f"synthetic/doc-{doc:06d}.md",
                    "section": f"Section {(n + i) % 8}",
                    "url": "",
                    "updated": "",
                    "language": "en",
                    "chunk_index": (n + i) % 8,
                    "content_hash": f"{n + i:016x}",
                }
            )
        t = time.perf_counter()
        store.upsert(ids, vectors, texts, metas)  # type: ignore[arg-type]
        batches.append({"corpus_before": n, "chunks": count, "seconds": round(time.perf_counter() - t, 3)})
        n += count
    info = {
        "size": store.count(),
        "real_chunks": real,
        "synthetic_chunks": store.count() - real,
        "build_s": round(time.perf_counter() - started, 2),
        "batches": batches,
        "version": VERSION,
    }
    (target / "build.json").write_text(json.dumps(info))
    return info


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 10000]
    out = {}
    for size in sizes:
        t = time.perf_counter()
        info = build(size)
        print(
            f"kb {size}: {info['size']} chunks ({time.perf_counter() - t:.1f}s)", file=sys.stderr, flush=True
        )
        out[size] = {k: v for k, v in info.items() if k != "batches"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
