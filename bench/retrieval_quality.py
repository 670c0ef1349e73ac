"""Retrieval quality on the sample knowledge base: hit@1, hit@3, MRR, empty sources, off-topic rejection.

    python -m bench.retrieval_quality                      # the current defaults, through the real Retriever
    python -m bench.retrieval_quality --chunk-max-chars 900 --overlap 0 --top-k 6 --min-similarity 0.3
    python -m bench.retrieval_quality --sweep              # the grid, then the defaults and the best for real

The knowledge base (`apps/knowledge/`) is ingested with the real `ingest()` into a temporary embedded Chroma,
and every question of `tests/data/questions.json` (plus the off-topic ones of `tests/data/offtopic.json`) is
asked through `Retriever.retrieve`, so the figures are those of the documents the user would see:

- hit@1 / hit@3: the question's `answer_doc` is the first / among the first three SOURCES (documents after
  the Retriever's grouping, `SOURCES_TOP_K` = 3), not among the first chunks.
- MRR: 1/rank of the answer document among the grouped documents of all `RETRIEVAL_TOP_K` chunks
  (0 when absent).
- empty: the fraction of (on-topic) questions that get no source at all (every chunk under MIN_SIMILARITY).
- off-topic rejected: the fraction of off-topic questions that get no source, which is what they should get.
- top sim: the median cosine similarity of the best chunk, before the MIN_SIMILARITY cut.
- ctx chars: the mean size of the passages handed to the model (the chunks of the sources), a cost figure.

`--sweep` ingests once per chunking setting and embeds the questions once; the grid over RETRIEVAL_TOP_K and
MIN_SIMILARITY then queries the store directly and groups the hits with the real `Retriever.group`. The
figures reported for the current defaults and for the best configuration are then re-measured end to end
through `Retriever.retrieve` (and checked against the sweep's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps"))

from zantara_rag.embedder import Embedder  # noqa: E402
from zantara_rag.ingest import IngestReport, ingest  # noqa: E402
from zantara_rag.retrieval import Passage, Retriever  # noqa: E402
from zantara_rag.settings import DEFAULT_KNOWLEDGE_PATH, Settings  # noqa: E402
from zantara_rag.store import Hit, VectorStore, connect  # noqa: E402

QUESTIONS = ROOT / "tests" / "data" / "questions.json"
OFFTOPIC = ROOT / "tests" / "data" / "offtopic.json"
RESULTS = ROOT / "bench" / "results" / "retrieval_quality.json"

GRID_CHUNK_MAX_CHARS = (600, 900, 1200, 1800)
GRID_OVERLAP = (0, 150)
GRID_TOP_K = (4, 6, 10)
GRID_MIN_SIMILARITY = (0.0, 0.2, 0.25, 0.3, 0.35)

# The sweep's pick: the best hit@3 among configurations that turn away at least this share of the off-topic
# questions; within one question of that hit@3, the one that rejects more off-topic questions, then the
# higher MRR, then the higher hit@1, then the smaller context handed to the model.
OFFTOPIC_REJECTION_TARGET = 0.75


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True, order=True)
class Config:
    chunk_max_chars: int
    overlap: int
    top_k: int
    min_similarity: float

    @classmethod
    def defaults(cls) -> Config:
        return cls(
            _default("chunk_max_chars"),
            _default("chunk_overlap_chars"),
            _default("retrieval_top_k"),
            _default("min_similarity"),
        )

    def label(self) -> str:
        return (
            f"CHUNK_MAX_CHARS={self.chunk_max_chars} CHUNK_OVERLAP_CHARS={self.overlap} "
            f"RETRIEVAL_TOP_K={self.top_k} MIN_SIMILARITY={self.min_similarity}"
        )


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    language: str
    answer: str | None  # the answer document's file name; None for an off-topic question


@dataclass
class Outcome:
    """What one question got: the sources' files (≤ SOURCES_TOP_K), all grouped files, the best similarity."""

    sources: list[str]
    ranked: list[str]
    top_similarity: float | None
    context_chars: int


@dataclass
class Index:
    chunk_max_chars: int
    overlap: int
    store: VectorStore
    report: IngestReport
    chunks: int
    tmp: Any = field(repr=False, default=None)


class CachingEmbedder(Embedder):
    """The real Embedder, remembering vectors by text.

    Sections shorter than the smallest CHUNK_MAX_CHARS give the same chunk under every chunking setting, and
    each question is asked several times; each distinct text is embedded once per run.
    """

    def __init__(self, name: str, device: str = "cpu") -> None:
        super().__init__(name, device)
        self._cache: dict[str, list[float]] = {}
        self.embedded = 0

    def embed(self, texts: list[str], batch_size: int = 32) -> list[list[float]]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            self._cache.update(zip(missing, super().embed(missing, batch_size), strict=True))
            self.embedded += len(missing)
        return [self._cache[t] for t in texts]


def load_questions(path: Path = QUESTIONS, offtopic: Path = OFFTOPIC) -> tuple[list[Question], list[Question]]:
    on = [
        Question(q["id"], q["question"], q.get("language", "en"), q["answer_doc"])
        for q in json.loads(path.read_text(encoding="utf-8"))
    ]
    off = [
        Question(q["id"], q["question"], q.get("language", "en"), None)
        for q in json.loads(offtopic.read_text(encoding="utf-8"))
    ]
    return on, off


def file_of(doc: str) -> str:
    return doc.rsplit("/", 1)[-1]


def build_index(
    embedder: Embedder, chunk_max_chars: int, overlap: int, knowledge: Path = DEFAULT_KNOWLEDGE_PATH
) -> Index:
    """The knowledge base ingested by the real `ingest()` into a fresh embedded Chroma in a temporary folder."""
    tmp = tempfile.TemporaryDirectory(prefix="zantara-bench-")
    settings = Settings(chroma_path=Path(tmp.name) / "chroma")
    store = VectorStore.reset(connect(settings), settings.chroma_collection, embedder.name)
    report = ingest([knowledge], store, embedder, max_chars=chunk_max_chars, overlap=overlap, progress=False)
    if report.failed:
        raise RuntimeError(f"ingestion failed for {report.failed}")
    return Index(chunk_max_chars, overlap, store, report, store.count(), tmp)


def outcome(sources: Sequence[Passage], ranked: Sequence[Passage], top_similarity: float | None) -> Outcome:
    return Outcome(
        [file_of(p.doc) for p in sources],
        [file_of(p.doc) for p in ranked],
        top_similarity,
        sum(len(c) for p in sources for c in p.chunks),
    )


def score(on: list[Question], off: list[Question], got: dict[str, Outcome]) -> dict[str, Any]:
    def block(questions: list[Question]) -> dict[str, Any]:
        n = len(questions)
        if not n:
            return {"n": 0}
        hit1 = hit3 = rr = empty = 0.0
        for q in questions:
            o = got[q.id]
            hit1 += o.sources[:1] == [q.answer]
            hit3 += q.answer in o.sources[:3]
            rr += 1.0 / (o.ranked.index(q.answer) + 1) if q.answer in o.ranked else 0.0
            empty += not o.sources
        return {
            "n": n,
            "hit@1": round(hit1 / n, 4),
            "hit@3": round(hit3 / n, 4),
            "mrr": round(rr / n, 4),
            "empty": round(empty / n, 4),
        }

    top = [got[q.id].top_similarity for q in on if got[q.id].top_similarity is not None]
    top_off = [got[q.id].top_similarity for q in off if got[q.id].top_similarity is not None]
    return {
        "overall": block(on),
        "en": block([q for q in on if q.language == "en"]),
        "id": block([q for q in on if q.language == "id"]),
        "offtopic_rejected": round(sum(not got[q.id].sources for q in off) / len(off), 4) if off else None,
        "median_top_similarity": round(statistics.median(top), 4) if top else None,
        "median_top_similarity_offtopic": round(statistics.median(top_off), 4) if top_off else None,
        "context_chars": round(statistics.mean(got[q.id].context_chars for q in on)) if on else 0,
        "misses@3": [q.id for q in on if q.answer not in got[q.id].sources[:3]],
        "offtopic_answered": [q.id for q in off if got[q.id].sources],
    }


async def evaluate_real(
    index: Index, embedder: Embedder, top_k: int, min_similarity: float, on: list[Question], off: list[Question]
) -> dict[str, Any]:
    """Every question through `Retriever.retrieve`, exactly as the service asks it."""
    sources_k = _default("sources_top_k")
    served = Retriever(embedder, index.store, top_k, sources_k, min_similarity)
    # Same query with every grouped document kept (for MRR), and the best chunk before the threshold.
    ranked = Retriever(embedder, index.store, top_k, top_k, min_similarity)
    best = Retriever(embedder, index.store, 1, 1, 0.0)
    got: dict[str, Outcome] = {}
    for q in [*on, *off]:
        sources = (await served.retrieve(q.text)).passages
        all_docs = (await ranked.retrieve(q.text)).passages
        first = (await best.retrieve(q.text)).passages
        got[q.id] = outcome(sources, all_docs, first[0].similarity if first else None)
    return score(on, off, got)


def evaluate_grid(
    index: Index,
    embedder: Embedder,
    vectors: dict[str, list[float]],
    on: list[Question],
    off: list[Question],
    top_ks: Sequence[int] = GRID_TOP_K,
    min_similarities: Sequence[float] = GRID_MIN_SIMILARITY,
    rerank: Callable[[str, list[Hit]], list[Hit]] | None = None,
) -> dict[Config, dict[str, Any]]:
    """The RETRIEVAL_TOP_K × MIN_SIMILARITY grid on one index, from precomputed question vectors.

    The store is queried once per question and top_k; the real `Retriever.group` does the grouping.
    """
    sources_k = _default("sources_top_k")
    text = {q.id: q.text for q in [*on, *off]}
    results: dict[Config, dict[str, Any]] = {}
    for top_k in top_ks:
        hits = {qid: index.store.query(vec, top_k) for qid, vec in vectors.items()}
        if rerank is not None:
            hits = {qid: rerank(text[qid], h) for qid, h in hits.items()}
        for min_similarity in min_similarities:
            served = Retriever(embedder, index.store, top_k, sources_k, min_similarity)
            ranked = Retriever(embedder, index.store, top_k, top_k, min_similarity)
            got = {
                qid: outcome(
                    served.group(h),
                    ranked.group(h),
                    max((x.similarity for x in h), default=None),
                )
                for qid, h in hits.items()
            }
            cfg = Config(index.chunk_max_chars, index.overlap, top_k, min_similarity)
            results[cfg] = score(on, off, got)
    return results


COMPARED = ("overall", "en", "id", "offtopic_rejected", "misses@3", "offtopic_answered")


def select(results: dict[Config, dict[str, Any]], n_questions: int) -> Config:
    eligible = {c: m for c, m in results.items() if (m["offtopic_rejected"] or 0) >= OFFTOPIC_REJECTION_TARGET}
    pool = eligible or results
    best_hit3 = max(m["overall"]["hit@3"] for m in pool.values())
    close = {c: m for c, m in pool.items() if m["overall"]["hit@3"] >= best_hit3 - 1.0 / n_questions - 1e-9}
    return max(
        close,
        key=lambda c: (
            close[c]["offtopic_rejected"] or 0,
            close[c]["overall"]["mrr"],
            close[c]["overall"]["hit@1"],
            -close[c]["context_chars"],
        ),
    )


def machine_info(embedder: Embedder) -> dict[str, Any]:
    import chromadb
    import sentence_transformers
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "chromadb": chromadb.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "embedding_model": embedder.name,
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def table(rows: list[tuple[str, dict[str, Any]]], first: str = "config") -> str:
    head = (
        f"| {first} | hit@1 | hit@3 | MRR | hit@1 en | hit@3 en | MRR en | hit@1 id | hit@3 id | MRR id "
        "| empty | off-topic rejected | top sim (on / off) | ctx chars |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, m in rows:
        o, en, id_ = m["overall"], m["en"], m["id"]
        lines.append(
            f"| {name} | {_pct(o['hit@1'])} | {_pct(o['hit@3'])} | {o['mrr']:.3f} "
            f"| {_pct(en['hit@1'])} | {_pct(en['hit@3'])} | {en['mrr']:.3f} "
            f"| {_pct(id_['hit@1'])} | {_pct(id_['hit@3'])} | {id_['mrr']:.3f} "
            f"| {_pct(o['empty'])} | {_pct(m['offtopic_rejected'])} "
            f"| {m['median_top_similarity']:.3f} / {m['median_top_similarity_offtopic']:.3f} "
            f"| {m['context_chars']} |"
        )
    return "\n".join(lines)


def short(cfg: Config) -> str:
    return f"{cfg.chunk_max_chars} / {cfg.overlap} / {cfg.top_k} / {cfg.min_similarity:g}"


def _write(payload: dict[str, Any], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def run_single(cfg: Config, output: Path) -> dict[str, Any]:
    on, off = load_questions()
    embedder = CachingEmbedder(_default("embedding_model"))
    started = time.perf_counter()
    index = build_index(embedder, cfg.chunk_max_chars, cfg.overlap)
    metrics = asyncio.run(evaluate_real(index, embedder, cfg.top_k, cfg.min_similarity, on, off))
    seconds = time.perf_counter() - started
    print(f"{cfg.label()}: {index.chunks} chunks, ingested in {index.report.seconds:.1f}s\n")
    print(table([(short(cfg), metrics)], "chunk / overlap / top_k / min_sim"))
    print(f"\nmissed at 3: {', '.join(metrics['misses@3']) or 'none'}")
    print(f"off-topic answered: {', '.join(metrics['offtopic_answered']) or 'none'}")
    payload = {
        "mode": "single",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.retrieval_quality " + " ".join(sys.argv[1:]),
        "config": asdict(cfg),
        "questions": len(on),
        "offtopic_questions": len(off),
        "chunks": index.chunks,
        "metrics": metrics,
        "seconds": round(seconds, 1),
        "machine": machine_info(embedder),
    }
    _write(payload, output)
    embedder.close()
    return payload


def run_sweep(output: Path) -> dict[str, Any]:
    started = time.perf_counter()
    on, off = load_questions()
    embedder = CachingEmbedder(_default("embedding_model"))
    questions = [*on, *off]
    vectors = dict(zip([q.id for q in questions], embedder.embed([q.text for q in questions]), strict=True))
    results: dict[Config, dict[str, Any]] = {}
    ingestion: list[dict[str, Any]] = []
    indexes: dict[tuple[int, int], Index] = {}
    for size in GRID_CHUNK_MAX_CHARS:
        for overlap in GRID_OVERLAP:
            index = build_index(embedder, size, overlap)
            indexes[(size, overlap)] = index
            ingestion.append(
                {"chunk_max_chars": size, "overlap": overlap, "chunks": index.chunks, "seconds": round(index.report.seconds, 1)}
            )
            print(f"ingested chunk_max_chars={size} overlap={overlap}: {index.chunks} chunks in {index.report.seconds:.1f}s", file=sys.stderr)
            results.update(evaluate_grid(index, embedder, vectors, on, off))
    sweep_seconds = time.perf_counter() - started

    default = Config.defaults()
    chosen = select(results, len(on))
    real: dict[str, Any] = {}
    for name, cfg in (("defaults", default), ("chosen", chosen)):
        index = indexes.get((cfg.chunk_max_chars, cfg.overlap)) or build_index(embedder, cfg.chunk_max_chars, cfg.overlap)
        metrics = asyncio.run(evaluate_real(index, embedder, cfg.top_k, cfg.min_similarity, on, off))
        agree = cfg not in results or all(metrics[k] == results[cfg][k] for k in COMPARED)
        real[name] = {"config": asdict(cfg), "metrics": metrics, "matches_sweep": agree}
    total_seconds = time.perf_counter() - started

    rows = sorted(results.items(), key=lambda kv: kv[0])
    print("## Sweep (grid through Retriever.group)\n")
    print(table([(short(c), m) for c, m in rows], "chunk / overlap / top_k / min_sim"))
    print("\n## Real pipeline (Retriever.retrieve)\n")
    print(table([(f"{n}: {short(Config(**r['config']))}", r["metrics"]) for n, r in real.items()]))
    for n, r in real.items():
        print(f"\n{n}: missed at 3: {', '.join(r['metrics']['misses@3']) or 'none'}; "
              f"off-topic answered: {', '.join(r['metrics']['offtopic_answered']) or 'none'}; "
              f"matches the sweep: {r['matches_sweep']}")
    print(f"\nsweep {sweep_seconds:.0f}s, total {total_seconds:.0f}s")

    payload = {
        "mode": "sweep",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.retrieval_quality " + " ".join(sys.argv[1:]),
        "grid": {
            "chunk_max_chars": GRID_CHUNK_MAX_CHARS,
            "overlap": GRID_OVERLAP,
            "top_k": GRID_TOP_K,
            "min_similarity": GRID_MIN_SIMILARITY,
            "sources_top_k": _default("sources_top_k"),
            "offtopic_rejection_target": OFFTOPIC_REJECTION_TARGET,
        },
        "questions": len(on),
        "offtopic_questions": len(off),
        "ingestion": ingestion,
        "results": [{"config": asdict(c), "metrics": m} for c, m in rows],
        "real": real,
        "sweep_seconds": round(sweep_seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "machine": machine_info(embedder),
    }
    _write(payload, output)
    embedder.close()
    return payload


def main(argv: list[str] | None = None) -> int:
    d = Config.defaults()
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk-max-chars", type=int, default=d.chunk_max_chars)
    parser.add_argument("--overlap", type=int, default=d.overlap)
    parser.add_argument("--top-k", type=int, default=d.top_k)
    parser.add_argument("--min-similarity", type=float, default=d.min_similarity)
    parser.add_argument("--sweep", action="store_true", help="run the grid (ignores the four options above)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.sweep:
        run_sweep(args.output)
    else:
        run_single(Config(args.chunk_max_chars, args.overlap, args.top_k, args.min_similarity), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
