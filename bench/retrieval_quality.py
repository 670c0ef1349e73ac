"""Retrieval quality on the sample knowledge base: hit@1, hit@3, MRR, empty sources, off-topic rejection.

    python -m bench.retrieval_quality                      # the current defaults, through the real Retriever
    python -m bench.retrieval_quality --chunk-max-chars 900 --overlap 0 --top-k 6 --min-similarity 0.3
    python -m bench.retrieval_quality --lexical-weight 0   # the same without the lexical re-rank
    python -m bench.retrieval_quality --sweep              # the grid, then the chosen rows end to end

The knowledge base (`apps/knowledge/`) is ingested by the real `ingest()` into a temporary embedded Chroma,
and every question of `tests/data/questions.json` (and the off-topic ones of `tests/data/offtopic.json`) is
asked through `Retriever.retrieve`, so the figures are about the documents the user would see:

- hit@1 / hit@3: the question's `answer_doc` is the first / among the SOURCES (the documents after the
  Retriever's grouping; `SOURCES_TOP_K` = 3), not among the first chunks.
- MRR: 1/rank of the answer document among the documents of all `RETRIEVAL_TOP_K` chunks (0 if absent).
- empty: the share of (on-topic) questions that get no source at all (every chunk under MIN_SIMILARITY).
- off-topic rejected: the share of off-topic questions that get no source, which is what they should get.
- top sim: the median cosine similarity of the nearest chunk, before MIN_SIMILARITY (on-topic / off-topic).
- ctx chars: the mean size of the passages handed to the model (the sources' chunks), a cost figure.

`--sweep` ingests once per chunking setting and embeds each distinct text once (`CachingEmbedder`); the
RETRIEVAL_TOP_K × MIN_SIMILARITY × re-rank grid then queries the store directly and runs the real
`Retriever.rerank` and `Retriever.group` on the hits. The old defaults, the current defaults and the top of
the grid are then measured again end to end through `Retriever.retrieve`, checked against the grid's
figures, and compared question by question with the old defaults (wins/losses, exact sign test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps"))

from bench import machine  # noqa: E402
from zantara_rag.domain import Passage  # noqa: E402
from zantara_rag.knowledge.ingest import IngestReport, ingest  # noqa: E402
from zantara_rag.retrieval.embedder import Embedder  # noqa: E402
from zantara_rag.retrieval.search import Retriever  # noqa: E402
from zantara_rag.retrieval.store import VectorStore, connect  # noqa: E402
from zantara_rag.settings import DEFAULT_KNOWLEDGE_PATH, Settings  # noqa: E402

QUESTIONS = ROOT / "tests" / "data" / "questions.json"
OFFTOPIC = ROOT / "tests" / "data" / "offtopic.json"
RESULTS = ROOT / "bench" / "results" / "retrieval_quality.json"  # the sweep, cited by docs/retrieval.md
SINGLE = ROOT / "bench" / "results" / "raw" / "retrieval_quality.json"  # one setting: a look, not committed

GRID_CHUNK_MAX_CHARS = (600, 900, 1200, 1800)
GRID_OVERLAP = (0, 150)
GRID_TOP_K = (4, 6, 10)
GRID_MIN_SIMILARITY = (0.0, 0.2, 0.25, 0.3, 0.35)


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


LEXICAL_WEIGHT = _default("lexical_weight")
RERANK_CANDIDATES = _default("rerank_candidates")
GRID_LEXICAL_WEIGHT = (0.0, LEXICAL_WEIGHT)  # the Retriever's lexical re-rank off / as shipped


@dataclass(frozen=True, order=True)
class Config:
    chunk_max_chars: int
    overlap: int
    top_k: int
    min_similarity: float
    lexical_weight: float = LEXICAL_WEIGHT

    @classmethod
    def defaults(cls) -> Config:
        return cls(
            _default("chunk_max_chars"),
            _default("chunk_overlap_chars"),
            _default("retrieval_top_k"),
            _default("min_similarity"),
            LEXICAL_WEIGHT,
        )

    def label(self) -> str:
        return (
            f"CHUNK_MAX_CHARS={self.chunk_max_chars} CHUNK_OVERLAP_CHARS={self.overlap} "
            f"RETRIEVAL_TOP_K={self.top_k} MIN_SIMILARITY={self.min_similarity} "
            f"lexical_weight={self.lexical_weight}"
        )

    def short(self) -> str:
        return (
            f"{self.chunk_max_chars} / {self.overlap} / {self.top_k} / {self.min_similarity:g} / "
            f"{self.lexical_weight:g}"
        )


SHORT_HEADER = "chunk / overlap / top_k / min_sim / rerank"
# The defaults before issue #2, with the Retriever as it was then (no lexical re-rank): the baseline.
OLD_DEFAULTS = Config(1200, 150, 6, 0.25, 0.0)


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
    each question is asked several times: each distinct text is embedded once per run.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache: dict[str, list[float]] = {}
        self.embedded = 0

    def embed(self, texts: list[str], batch_size: int = 32) -> list[list[float]]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            self._cache.update(zip(missing, super().embed(missing, batch_size), strict=True))
            self.embedded += len(missing)
        return [self._cache[t] for t in texts]


def make_embedder() -> CachingEmbedder:
    """The embedder as the service builds it (model, device, backend from the environment's settings)."""
    s = Settings()
    return CachingEmbedder(
        s.embedding_model, s.embedding_device, backend=s.embedding_backend, cache_dir=s.embedding_cache_dir
    )


def load_questions(
    path: Path = QUESTIONS, offtopic: Path = OFFTOPIC
) -> tuple[list[Question], list[Question]]:
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
    """The knowledge base ingested by the real `ingest()` into a fresh embedded Chroma in a temp folder."""
    tmp = tempfile.TemporaryDirectory(prefix="zantara-bench-")
    settings = Settings(chroma_path=Path(tmp.name) / "chroma")
    store = VectorStore.reset(connect(settings), settings.chroma_collection, embedder.name)
    report = ingest(
        [knowledge],
        store,
        embedder,
        root=knowledge,
        max_chars=chunk_max_chars,
        overlap=overlap,
        progress=False,
    )
    if report.failed:
        raise RuntimeError(f"ingestion failed for {report.failed}")
    return Index(chunk_max_chars, overlap, store, report, store.count(), tmp)


def make_retriever(embedder: Embedder, store: VectorStore, cfg: Config, sources_k: int) -> Retriever:
    return Retriever(
        embedder,
        store,
        top_k=cfg.top_k,
        sources_k=sources_k,
        min_similarity=cfg.min_similarity,
        candidates=RERANK_CANDIDATES,
        lexical_weight=cfg.lexical_weight,
    )


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

    def rejected(questions: list[Question]) -> float | None:
        return round(sum(not got[q.id].sources for q in questions) / len(questions), 4) if questions else None

    top = [got[q.id].top_similarity for q in on if got[q.id].top_similarity is not None]
    top_off = [got[q.id].top_similarity for q in off if got[q.id].top_similarity is not None]
    return {
        "overall": block(on),
        "en": block([q for q in on if q.language == "en"]),
        "id": block([q for q in on if q.language == "id"]),
        "offtopic_rejected": rejected(off),
        "offtopic_rejected_en": rejected([q for q in off if q.language == "en"]),
        "offtopic_rejected_id": rejected([q for q in off if q.language == "id"]),
        "median_top_similarity": round(statistics.median(top), 4) if top else None,
        "median_top_similarity_offtopic": round(statistics.median(top_off), 4) if top_off else None,
        "context_chars": round(statistics.mean(got[q.id].context_chars for q in on)) if on else 0,
        "misses@3": [q.id for q in on if q.answer not in got[q.id].sources[:3]],
        "offtopic_answered": [q.id for q in off if got[q.id].sources],
        # The answer document's rank among the grouped documents (None: absent), for paired comparisons.
        "ranks": {
            q.id: (got[q.id].ranked.index(q.answer) + 1 if q.answer in got[q.id].ranked else None) for q in on
        },
    }


COMPARED = ("overall", "en", "id", "offtopic_rejected", "misses@3", "offtopic_answered", "ranks")


async def evaluate_real(
    index: Index, embedder: Embedder, cfg: Config, on: list[Question], off: list[Question]
) -> dict[str, Any]:
    """Every question through `Retriever.retrieve`, exactly as the service asks it."""
    served = make_retriever(embedder, index.store, cfg, _default("sources_top_k"))
    # The same query with every grouped document kept (for MRR), and the nearest chunk before any threshold.
    ranked = make_retriever(embedder, index.store, cfg, cfg.top_k)
    nearest = make_retriever(embedder, index.store, Config(0, 0, 1, 0.0, 0.0), 1)
    got: dict[str, Outcome] = {}
    for q in [*on, *off]:
        sources = (await served.retrieve(q.text)).passages
        all_docs = (await ranked.retrieve(q.text)).passages
        first = (await nearest.retrieve(q.text)).passages
        got[q.id] = outcome(sources, all_docs, first[0].similarity if first else None)
    return score(on, off, got)


def evaluate_grid(
    index: Index,
    embedder: Embedder,
    vectors: dict[str, list[float]],
    on: list[Question],
    off: list[Question],
) -> dict[Config, dict[str, Any]]:
    """The RETRIEVAL_TOP_K × MIN_SIMILARITY × re-rank grid on one index, from precomputed question vectors.

    The store is asked for `Retriever.fetch_k` chunks (once per distinct k), then the real
    `Retriever.rerank` and `Retriever.group` make the sources, as `Retriever.retrieve` does.
    """
    sources_k = _default("sources_top_k")
    text = {q.id: q.text for q in [*on, *off]}
    fetched: dict[int, dict[str, Any]] = {}
    results: dict[Config, dict[str, Any]] = {}
    for top_k in GRID_TOP_K:
        for weight in GRID_LEXICAL_WEIGHT:
            for min_similarity in GRID_MIN_SIMILARITY:
                cfg = Config(index.chunk_max_chars, index.overlap, top_k, min_similarity, weight)
                served = make_retriever(embedder, index.store, cfg, sources_k)
                ranked = make_retriever(embedder, index.store, cfg, top_k)
                k = served.fetch_k
                if k not in fetched:
                    fetched[k] = {qid: index.store.query(vec, k) for qid, vec in vectors.items()}
                got = {}
                for qid, hits in fetched[k].items():
                    kept = served.rerank(text[qid], hits)
                    got[qid] = outcome(
                        served.group(kept), ranked.group(kept), hits[0].similarity if hits else None
                    )
                results[cfg] = score(on, off, got)
    return results


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test on the questions that changed."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Questions won and lost at hit@1 and hit@3 against `base`, with the sign test's p-value."""
    out: dict[str, Any] = {}
    for name, k in (("hit@1", 1), ("hit@3", 3)):
        was = {q: r is not None and r <= k for q, r in base["ranks"].items()}
        now = {q: r is not None and r <= k for q, r in other["ranks"].items()}
        wins = sorted(q for q in was if now[q] and not was[q])
        losses = sorted(q for q in was if was[q] and not now[q])
        out[name] = {"wins": wins, "losses": losses, "p": round(sign_test(len(wins), len(losses)), 4)}
    return out


def top_of_grid(results: dict[Config, dict[str, Any]]) -> Config:
    """The best hit@3, then MRR, then hit@1, then off-topic rejection, then the smaller context."""
    return max(
        results,
        key=lambda c: (
            results[c]["overall"]["hit@3"],
            results[c]["overall"]["mrr"],
            results[c]["overall"]["hit@1"],
            results[c]["offtopic_rejected"] or 0,
            -results[c]["context_chars"],
        ),
    )


def machine_info(embedder: Embedder) -> dict[str, Any]:
    import chromadb

    info = machine.describe()
    info.update(
        {
            "chromadb": chromadb.__version__,
            "embedding_model": embedder.name,
            "embedding_backend": getattr(embedder, "backend", "torch"),
        }
    )
    return info


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def table(rows: list[tuple[str, dict[str, Any]]], first: str = "config") -> str:
    head = (
        f"| {first} | hit@1 | hit@3 | MRR | hit@1 en | hit@3 en | MRR en | hit@1 id | hit@3 id | MRR id "
        "| empty | off-topic rejected (all / en / id) | top sim (on / off) | ctx chars |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, m in rows:
        o, en, id_ = m["overall"], m["en"], m["id"]
        lines.append(
            f"| {name} | {_pct(o['hit@1'])} | {_pct(o['hit@3'])} | {o['mrr']:.3f} "
            f"| {_pct(en['hit@1'])} | {_pct(en['hit@3'])} | {en['mrr']:.3f} "
            f"| {_pct(id_['hit@1'])} | {_pct(id_['hit@3'])} | {id_['mrr']:.3f} "
            f"| {_pct(o['empty'])} "
            f"| {_pct(m['offtopic_rejected'])} / {_pct(m['offtopic_rejected_en'])} / "
            f"{_pct(m['offtopic_rejected_id'])} "
            f"| {m['median_top_similarity']:.3f} / {m['median_top_similarity_offtopic']:.3f} "
            f"| {m['context_chars']} |"
        )
    return "\n".join(lines)


def _describe_pairs(p: dict[str, Any]) -> str:
    return "; ".join(
        f"{name} +{len(v['wins'])}/−{len(v['losses'])} (sign test p={v['p']:.3f})" for name, v in p.items()
    )


def _write(payload: dict[str, Any], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _header(on: list[Question], off: list[Question]) -> dict[str, Any]:
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.retrieval_quality " + " ".join(sys.argv[1:]),
        "questions": len(on),
        "offtopic_questions": len(off),
        "sources_top_k": _default("sources_top_k"),
        "rerank_candidates": RERANK_CANDIDATES,
    }


def run_single(cfg: Config, output: Path) -> dict[str, Any]:
    started = time.perf_counter()
    on, off = load_questions()
    embedder = make_embedder()
    index = build_index(embedder, cfg.chunk_max_chars, cfg.overlap)
    metrics = asyncio.run(evaluate_real(index, embedder, cfg, on, off))
    seconds = time.perf_counter() - started
    print(f"{cfg.label()}: {index.chunks} chunks, ingested in {index.report.seconds:.1f}s\n")
    print(table([(cfg.short(), metrics)], SHORT_HEADER))
    print(f"\nmissed at 3: {', '.join(metrics['misses@3']) or 'none'}")
    print(f"off-topic answered: {', '.join(metrics['offtopic_answered']) or 'none'}")
    print(f"\n{seconds:.0f}s")
    payload = {
        "mode": "single",
        **_header(on, off),
        "config": asdict(cfg),
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
    embedder = make_embedder()
    questions = [*on, *off]
    vectors = dict(zip([q.id for q in questions], embedder.embed([q.text for q in questions]), strict=True))
    results: dict[Config, dict[str, Any]] = {}
    ingestion: list[dict[str, Any]] = []
    indexes: dict[tuple[int, int], Index] = {}
    for size in GRID_CHUNK_MAX_CHARS:
        for overlap in GRID_OVERLAP:
            index = indexes[(size, overlap)] = build_index(embedder, size, overlap)
            ingestion.append(
                {
                    "chunk_max_chars": size,
                    "overlap": overlap,
                    "chunks": index.chunks,
                    "seconds": round(index.report.seconds, 1),
                }
            )
            print(
                f"ingested chunk_max_chars={size} overlap={overlap}: {index.chunks} chunks "
                f"in {index.report.seconds:.1f}s",
                file=sys.stderr,
            )
            results.update(evaluate_grid(index, embedder, vectors, on, off))
    sweep_seconds = time.perf_counter() - started

    picks = {"old defaults": OLD_DEFAULTS, "defaults": Config.defaults(), "top of grid": top_of_grid(results)}
    real: dict[str, Any] = {}
    done: dict[Config, str] = {}
    for name, cfg in picks.items():
        if cfg in done:
            real[done[cfg]]["also"] = [*real[done[cfg]].get("also", []), name]
            continue
        done[cfg] = name
        index = indexes.get((cfg.chunk_max_chars, cfg.overlap)) or build_index(
            embedder, cfg.chunk_max_chars, cfg.overlap
        )
        metrics = asyncio.run(evaluate_real(index, embedder, cfg, on, off))
        real[name] = {
            "config": asdict(cfg),
            "metrics": metrics,
            "matches_sweep": cfg not in results or all(metrics[k] == results[cfg][k] for k in COMPARED),
        }
    base = real["old defaults"]["metrics"]
    current = next(r for n, r in real.items() if "defaults" in [n, *r.get("also", [])])["metrics"]
    for r in real.values():
        r["vs_old_defaults"] = paired(base, r["metrics"])
        r["vs_defaults"] = paired(current, r["metrics"])
    total_seconds = time.perf_counter() - started

    rows = sorted(results.items(), key=lambda kv: kv[0])
    print("## Sweep (grid through Retriever.rerank and Retriever.group)\n")
    print(table([(c.short(), m) for c, m in rows], SHORT_HEADER))
    print("\n## End to end (Retriever.retrieve)\n")
    named = [(" = ".join([n, *r.get("also", [])]), r) for n, r in real.items()]
    print(table([(f"{n}: {Config(**r['config']).short()}", r["metrics"]) for n, r in named], SHORT_HEADER))
    for n, r in named:
        m = r["metrics"]
        print(
            f"\n{n}: missed at 3: {', '.join(m['misses@3']) or 'none'}; "
            f"off-topic answered: {', '.join(m['offtopic_answered']) or 'none'}; "
            f"matches the sweep: {r['matches_sweep']}; "
            f"vs old defaults: {_describe_pairs(r['vs_old_defaults'])}; "
            f"vs defaults: {_describe_pairs(r['vs_defaults'])}"
        )
    print(f"\nsweep {sweep_seconds:.0f}s, total {total_seconds:.0f}s ({embedder.embedded} texts embedded)")

    payload = {
        "mode": "sweep",
        **_header(on, off),
        "grid": {
            "chunk_max_chars": GRID_CHUNK_MAX_CHARS,
            "overlap": GRID_OVERLAP,
            "top_k": GRID_TOP_K,
            "min_similarity": GRID_MIN_SIMILARITY,
            "lexical_weight": GRID_LEXICAL_WEIGHT,
        },
        "ingestion": ingestion,
        "results": [
            {"config": asdict(c), "metrics": {k: v for k, v in m.items() if k != "ranks"}} for c, m in rows
        ],
        "end_to_end": real,
        "sweep_seconds": round(sweep_seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "texts_embedded": embedder.embedded,
        "machine": machine_info(embedder),
    }
    _write(payload, output)
    embedder.close()
    return payload


def main(argv: list[str] | None = None) -> int:
    d = Config.defaults()
    parser = argparse.ArgumentParser(
        prog="python -m bench.retrieval_quality", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--chunk-max-chars", type=int, default=d.chunk_max_chars)
    parser.add_argument("--overlap", type=int, default=d.overlap)
    parser.add_argument("--top-k", type=int, default=d.top_k)
    parser.add_argument("--min-similarity", type=float, default=d.min_similarity)
    parser.add_argument(
        "--lexical-weight", type=float, default=d.lexical_weight, help="the re-rank's weight; 0 turns it off"
    )
    parser.add_argument("--sweep", action="store_true", help="run the grid (ignores the options above)")
    parser.add_argument(
        "--output",
        type=Path,
        help=f"JSON results (default {SINGLE.relative_to(ROOT)}; with --sweep {RESULTS.relative_to(ROOT)})",
    )
    args = parser.parse_args(argv)
    if args.sweep:
        run_sweep(args.output or RESULTS)
    else:
        cfg = Config(args.chunk_max_chars, args.overlap, args.top_k, args.min_similarity, args.lexical_weight)
        run_single(cfg, args.output or SINGLE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
