"""Retrieval quality on the sample knowledge base, per direction: hit@1, hit@3, MRR, off-topic rejection.

    python -m bench.retrieval_quality                    # today's retriever vs the one before issue #12 (dev)
    python -m bench.retrieval_quality --split heldout    # the held-out questions (evaluated once, at the end)
    python -m bench.retrieval_quality --split fresh      # written after the held-out part was spent (once)
    python -m bench.retrieval_quality --split all
    python -m bench.retrieval_quality --sweep            # the fusion grid, ablations and cut-offs (dev)

The knowledge base (`apps/knowledge/`) is ingested by the real `ingest()` into a temporary embedded Chroma,
and every question of `tests/data/questions.json` and `tests/data/offtopic.json` of the chosen split is
asked through the real `Retriever.retrieve`, so the figures are about the documents the user would see.
The baseline, measured in the same run, is the retriever before issue #12 (dense search, MIN_SIMILARITY 0.3
and the word-overlap re-rank, `Baseline` below, a copy of that code) on the knowledge base ingested as it
was then (the bilingual front matter removed, so the chunks are what that version stored).

- direction: the question's language → the answer document's language (en>en, en>id, id>en, id>id).
- hit@1 / hit@3: the question's `answer_doc` is the first / among the sources (at most SOURCES_TOP_K = 3).
- MRR: 1 / rank of the answer document among the documents of the RETRIEVAL_TOP_K chunks handed over
  (0 when absent or when the question was turned away).
- rejected: an on-topic question that got no source (must be 0); off-topic rejected: the share of off-topic
  questions that got none (per language).
- relevance: the signal the off-topic cut-off applies to (retrieval/search.py); per language, the lowest value
  of an on-topic question, the highest of an off-topic one, how many off-topic questions a cut-off just under
  the lowest on-topic value turns away, and the middle of that gap. The sweep prints them for a grid of the
  relevance's weights (QUESTION_WEIGHT, COVERAGE_WEIGHT).

Results: `bench/results/retrieval_quality.json` (`_sweep`, `_heldout`, `_all` for the others; or `--output`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from zantara_rag.language import Language, detect_language, is_term, stem, words  # noqa: E402
from zantara_rag.retrieval import search  # noqa: E402
from zantara_rag.retrieval.embedder import Embedder  # noqa: E402
from zantara_rag.retrieval.glossary import Glossary  # noqa: E402
from zantara_rag.retrieval.lexical import Chunk, LexicalIndex  # noqa: E402
from zantara_rag.retrieval.mirror import LexicalMirror  # noqa: E402
from zantara_rag.retrieval.search import Retriever  # noqa: E402
from zantara_rag.retrieval.store import Hit, VectorStore  # noqa: E402
from zantara_rag.settings import DEFAULT_KNOWLEDGE_PATH, Settings  # noqa: E402

QUESTIONS = ROOT / "tests" / "data" / "questions.json"
OFFTOPIC = ROOT / "tests" / "data" / "offtopic.json"
RESULTS = ROOT / "bench" / "results" / "retrieval_quality.json"
DIRECTIONS = ("en>en", "en>id", "id>en", "id>id")
LANGUAGES = ("en", "id")
# The front-matter keys issue #12 added to the sample knowledge base (removed for the baseline's index).
ENRICHMENT_KEYS = re.compile(r"^(title_[a-z]{2}|keywords_[a-z]{2}):.*\n", re.M)

GRID_RRF_K = (5, 10, 20, 60)
GRID_EXPANSION_WEIGHT = (0.0, 0.3, 0.5, 1.0)
GRID_CANDIDATES = (10, 20, 30)
GRID_QUESTION_WEIGHT = (1.0, 0.75, 0.5, 0.25, 0.0)
GRID_COVERAGE_WEIGHT = (0.0, 0.25, 0.5, 0.75, 1.0)


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    language: str
    answer: str | None  # the answer document's file name; None for an off-topic question
    split: str
    direction: str  # "en>id" etc.; "off" for an off-topic question


@dataclass
class Outcome:
    """What one question got: the sources' files, the files of every chunk handed over, its relevance."""

    sources: list[str]
    ranked: list[str]
    relevance: float | None
    context_chars: int


@dataclass
class Index:
    store: VectorStore
    report: IngestReport
    chunks: int
    mirror: LexicalMirror
    tmp: Any = field(repr=False, default=None)


class CachingEmbedder(Embedder):
    """The real Embedder, remembering vectors by text: each distinct question is embedded once per run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache: dict[tuple[str, str], list[float]] = {}
        self.embedded = 0

    def _cached(
        self, model: str, texts: list[str], compute: Callable[[list[str]], list[list[float]]]
    ) -> list[list[float]]:
        """Each text's vector by `model` ("" for the passages' model), computing only those not seen yet."""
        missing = list(dict.fromkeys(t for t in texts if (model, t) not in self._cache))
        if missing:
            self._cache.update(((model, t), v) for t, v in zip(missing, compute(missing), strict=True))
            self.embedded += len(missing)
        return [self._cache[(model, t)] for t in texts]

    def embed(self, texts: list[str], batch_size: int = 32, split: bool = True) -> list[list[float]]:
        return self._cached("", texts, lambda missing: Embedder.embed(self, missing, batch_size, split))

    def query_vectors(self, texts: list[str], exact: bool = False) -> list[list[float]]:
        if exact:  # the passages' model: `embed`'s cache
            return super().query_vectors(texts, exact)
        return self._cached("questions", texts, lambda missing: Embedder.query_vectors(self, missing))


def make_embedder() -> CachingEmbedder:
    """The embedder as the service builds it (model, device, backend from the environment's settings)."""
    embedder = CachingEmbedder.from_settings(Settings())
    assert isinstance(embedder, CachingEmbedder)
    return embedder


def document_languages(knowledge: Path = DEFAULT_KNOWLEDGE_PATH) -> dict[str, str]:
    """Each sample document's `language` front-matter value, by file name."""
    out = {}
    for path in knowledge.glob("*.md"):
        match = re.search(r"^language:\s*(\w+)", path.read_text(encoding="utf-8"), re.M)
        if match:
            out[path.name] = match.group(1)
    return out


def load_questions(split: str = "dev") -> tuple[list[Question], list[Question]]:
    """The on-topic and off-topic questions of `split` (dev, heldout, fresh or all)."""
    languages = document_languages()

    def keep(q: dict[str, Any]) -> bool:
        return split == "all" or q.get("split", "dev") == split

    on = [
        Question(
            q["id"],
            q["question"],
            q["language"],
            q["answer_doc"],
            q.get("split", "dev"),
            f"{q['language']}>{languages[q['answer_doc']]}",
        )
        for q in json.loads(QUESTIONS.read_text(encoding="utf-8"))
        if keep(q)
    ]
    off = [
        Question(q["id"], q["question"], q["language"], None, q.get("split", "dev"), "off")
        for q in json.loads(OFFTOPIC.read_text(encoding="utf-8"))
        if keep(q)
    ]
    return on, off


def file_of(doc: str) -> str:
    return doc.rsplit("/", 1)[-1]


def build_index(embedder: Embedder, enriched: bool = True, knowledge: Path = DEFAULT_KNOWLEDGE_PATH) -> Index:
    """The knowledge base ingested by the real `ingest()` into a fresh embedded Chroma in a temp folder.

    `enriched=False` ingests a copy without the bilingual front matter: the chunks the baseline stored.
    """
    tmp = tempfile.TemporaryDirectory(prefix="zantara-bench-")
    if not enriched:
        plain = Path(tmp.name) / knowledge.name
        shutil.copytree(knowledge, plain)
        for path in plain.glob("*.md"):
            path.write_text(ENRICHMENT_KEYS.sub("", path.read_text(encoding="utf-8")), encoding="utf-8")
        knowledge = plain
    settings = Settings(chroma_path=Path(tmp.name) / "chroma")
    store = VectorStore.open(settings, reset=True)
    report = ingest(
        [knowledge],
        store,
        embedder,
        root=knowledge,
        max_chars=_default("chunk_max_chars"),
        overlap=_default("chunk_overlap_chars"),
        progress=False,
    )
    if report.failed:
        raise RuntimeError(f"ingestion failed for {report.failed}")
    mirror = LexicalMirror(store)
    mirror.refresh()
    return Index(store, report, store.count(), mirror, tmp)


# --- the retriever before issue #12, kept here as the baseline (its search.py and stop words, verbatim).

_OLD_STOPWORDS = frozenset(
    [
        "a",
        "about",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "get",
        "got",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "just",
        "know",
        "like",
        "many",
        "may",
        "me",
        "might",
        "more",
        "most",
        "much",
        "must",
        "my",
        "need",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "please",
        "should",
        "so",
        "some",
        "still",
        "such",
        "than",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "this",
        "those",
        "to",
        "too",
        "up",
        "very",
        "want",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "ada",
        "adalah",
        "aja",
        "akan",
        "aku",
        "anda",
        "apa",
        "apakah",
        "atau",
        "bagaimana",
        "belum",
        "berapa",
        "bisa",
        "dalam",
        "dan",
        "dari",
        "dengan",
        "di",
        "dimana",
        "dong",
        "ga",
        "gak",
        "gimana",
        "harus",
        "ini",
        "itu",
        "jadi",
        "jika",
        "juga",
        "kalau",
        "kami",
        "kapan",
        "karena",
        "ke",
        "kita",
        "lagi",
        "mana",
        "mau",
        "nggak",
        "nya",
        "oleh",
        "pada",
        "per",
        "pun",
        "saja",
        "saya",
        "se",
        "sih",
        "siapa",
        "sudah",
        "tak",
        "tapi",
        "tidak",
        "untuk",
        "ya",
        "yang",
    ]
)


def _old_content_words(text: str) -> frozenset[str]:
    return frozenset(w for w in words(text) if len(w) >= 2 and w not in _OLD_STOPWORDS)


class Baseline:
    """Dense top-20, MIN_SIMILARITY 0.3, cosine + 0.2 × question-word overlap, grouped into sources."""

    min_similarity = 0.3
    lexical_weight = 0.2
    candidates = 20

    def __init__(self, embedder: Embedder, store: VectorStore, top_k: int, sources_k: int) -> None:
        self.embedder, self.store, self.top_k, self.sources_k = embedder, store, top_k, sources_k

    async def retrieve(self, query: str) -> search.Retrieval:
        # Issue #2's retriever embedded questions with the passages' model (no 8-bit questions' model then).
        vector = await self.embedder.embed_query(query, exact=True)
        hits = await self.store.aquery(vector, max(self.top_k, self.candidates))
        kept = [h for h in hits if h.similarity >= self.min_similarity]
        asked = _old_content_words(query)
        if asked:
            kept.sort(
                key=lambda h: (
                    h.similarity + self.lexical_weight * len(asked & _old_content_words(h.text)) / len(asked)
                ),
                reverse=True,
            )
        ranked = kept[: self.top_k]
        top = hits[0].similarity if hits else 0.0
        return search.Retrieval(_group(ranked, self.sources_k), 0.0, 0.0, relevance=top, ranked=ranked)


def _group(hits: Sequence[Hit], sources_k: int) -> list[Passage]:
    by_doc: dict[str, Passage] = {}
    for hit in hits:
        doc = str(hit.metadata.get("doc"))
        if doc not in by_doc:
            if len(by_doc) >= sources_k:
                continue
            by_doc[doc] = Passage(len(by_doc) + 1, doc, None, None, doc, hit.similarity)
        by_doc[doc].chunks.append(hit.text)
    return list(by_doc.values())


def current(embedder: Embedder, index: Index, glossary: Glossary | None = None, **tuning: Any) -> Retriever:
    """Today's retriever as the service builds it, with the given tuning (module defaults otherwise)."""
    return Retriever(
        embedder,
        index.store,
        index.mirror,
        glossary if glossary is not None else Glossary.load(),
        top_k=_default("retrieval_top_k"),
        sources_k=_default("sources_top_k"),
        candidates=tuning.pop("candidates", _default("fusion_candidates")),
        min_relevance=tuning.pop(
            "min_relevance", {"en": _default("min_relevance_en"), "id": _default("min_relevance_id")}
        ),
        **tuning,
    )


def _plain_words(text: str) -> list[str]:
    return [w for w in words(text) if is_term(w)]


def _one_stem(language: Language) -> Callable[[str], list[str]]:
    return lambda text: [stem(w, language) for w in _plain_words(text)]


def _own_language_stem(text: str) -> list[str]:
    language = detect_language(text)
    return [stem(w, language) for w in _plain_words(text)]


# Other ways to make the lexical terms, against `language.index_terms` (both stems of every word).
ANALYZERS: dict[str, Callable[[str], list[str]]] = {
    "words, no stemming": _plain_words,
    "English stem only": _one_stem("en"),
    "Indonesian stem only": _one_stem("id"),
    "the stem of the text's own language": _own_language_stem,
}


def with_analyzer(index: Index, analyze: Callable[[str], list[str]] | None) -> Index:
    """`index`'s store with a lexical index built by `analyze` (None: an empty lexical index)."""
    mirror = LexicalMirror(index.store)
    chunks = [Chunk(i, t, m) for i, t, m in index.store.all_chunks()]
    mirror.index = LexicalIndex(chunks, "", analyze) if analyze is not None else LexicalIndex([])
    return Index(index.store, index.report, index.chunks, mirror)


async def ask_all(retriever: Any, questions: list[Question]) -> dict[str, Outcome]:
    got = {}
    for q in questions:
        result = await retriever.retrieve(q.text)
        ranked = _group(result.ranked, 99) if result.passages else []
        got[q.id] = Outcome(
            [file_of(p.doc) for p in result.passages],
            [file_of(p.doc) for p in ranked],
            result.relevance,
            sum(len(c) for p in result.passages for c in p.chunks),
        )
    return got


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
            "rejected": int(empty),
        }

    def rejected(questions: list[Question]) -> dict[str, Any]:
        n = len(questions)
        count = sum(not got[q.id].sources for q in questions)
        return {"n": n, "rejected": count, "share": round(count / n, 4) if n else None}

    def relevance(questions: list[Question]) -> list[float]:
        return [r for q in questions if (r := got[q.id].relevance) is not None]

    out: dict[str, Any] = {"overall": block(on)}
    for direction in DIRECTIONS:
        out[direction] = block([q for q in on if q.direction == direction])
    for language in LANGUAGES:
        asked_in = [q for q in off if q.language == language]
        out[f"offtopic_{language}"] = rejected(asked_in)
        on_rel = relevance([q for q in on if q.language == language])
        off_rel = relevance(asked_in)
        lowest = min(on_rel) if on_rel else None
        # A cut-off just under the lowest on-topic relevance: the most off-topic questions any cut-off turns
        # away while every on-topic question keeps its sources; the middle of the gap it leaves.
        under = [r for r in off_rel if lowest is not None and r < lowest]
        out[f"relevance_{language}"] = {
            "on_topic_min": round(lowest, 4) if lowest is not None else None,
            "on_topic_median": round(statistics.median(on_rel), 4) if on_rel else None,
            "off_topic_max": round(max(off_rel), 4) if off_rel else None,
            "off_topic_under_on_topic_min": len(under),
            "gap_middle": round((lowest + max(under)) / 2, 4) if lowest is not None and under else None,
        }
    out["context_chars"] = round(statistics.mean(got[q.id].context_chars for q in on)) if on else 0
    out["misses@3"] = [q.id for q in on if q.answer not in got[q.id].sources[:3]]
    out["offtopic_answered"] = [q.id for q in off if got[q.id].sources]
    out["ranks"] = {
        q.id: (got[q.id].ranked.index(q.answer) + 1 if q.answer in got[q.id].ranked else None) for q in on
    }
    return out


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


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def table(rows: list[tuple[str, dict[str, Any]]], first: str = "retriever") -> str:
    """One row per retriever: hit@1 / hit@3 / MRR per direction and overall, rejections."""
    cols = ["overall", *DIRECTIONS]
    head = (
        f"| {first} | "
        + " | ".join(f"{c} (n={rows[0][1][c]['n']})" for c in cols)
        + " | on-topic rejected | off-topic rejected en | off-topic rejected id |"
    )
    lines = [head, "|" + "---|" * (len(cols) + 4)]
    for name, m in rows:
        cells = []
        for c in cols:
            b = m[c]
            cells.append(f"{_pct(b.get('hit@1'))} / {_pct(b.get('hit@3'))} / {b.get('mrr', 0):.3f}")
        en, id_ = m["offtopic_en"], m["offtopic_id"]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {m['overall']['rejected']} | {en['rejected']}/{en['n']} | {id_['rejected']}/{id_['n']} |"
        )
    return "\n".join(lines)


def _write(payload: dict[str, Any], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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


def _header(split: str, on: list[Question], off: list[Question]) -> dict[str, Any]:
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.retrieval_quality " + " ".join(sys.argv[1:]),
        "split": split,
        "questions": len(on),
        "offtopic_questions": len(off),
        "per_direction": {d: sum(q.direction == d for q in on) for d in DIRECTIONS},
        "defaults": {
            name: _default(name)
            for name in (
                "retrieval_top_k",
                "sources_top_k",
                "fusion_candidates",
                "min_relevance_en",
                "min_relevance_id",
            )
        },
        "tuning": {
            "rrf_k": search.RRF_K,
            "expansion_weight": search.EXPANSION_WEIGHT,
            "question_weight": search.QUESTION_WEIGHT,
            "coverage_weight": search.COVERAGE_WEIGHT,
        },
    }


def _strip(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "ranks"}


def run_compare(split: str, output: Path) -> dict[str, Any]:
    """The baseline and today's retriever on the same questions, end to end."""
    started = time.perf_counter()
    on, off = load_questions(split)
    embedder = make_embedder()
    enriched = build_index(embedder, enriched=True)
    plain = build_index(embedder, enriched=False)
    top_k, sources_k = _default("retrieval_top_k"), _default("sources_top_k")
    runs = {
        "before (issue #2 retriever, plain index)": Baseline(embedder, plain.store, top_k, sources_k),
        "now (hybrid retriever, enriched index)": current(embedder, enriched),
    }
    results = {name: score(on, off, asyncio.run(ask_all(r, [*on, *off]))) for name, r in runs.items()}
    base, now = results.values()
    vs = paired(base, now)
    seconds = time.perf_counter() - started
    print(
        f"split {split}: {len(on)} questions, {len(off)} off-topic; "
        f"{enriched.chunks} chunks; hit@1 / hit@3 / MRR\n"
    )
    print(table(list(results.items())))
    for name, m in results.items():
        print(f"\n{name}: missed at 3: {', '.join(m['misses@3']) or 'none'}")
        print(f"  off-topic answered: {', '.join(m['offtopic_answered']) or 'none'}")
        print(f"  relevance en {m['relevance_en']}, id {m['relevance_id']}")
    print(
        "\nnow vs before: "
        + "; ".join(f"{k} +{len(v['wins'])}/−{len(v['losses'])} (p={v['p']:.3g})" for k, v in vs.items())
    )
    print(f"\n{seconds:.0f}s")
    payload = {
        "mode": "compare",
        **_header(split, on, off),
        "chunks": enriched.chunks,
        "results": {name: _strip(m) for name, m in results.items()},
        "now_vs_before": vs,
        "seconds": round(seconds, 1),
        "machine": machine_info(embedder),
    }
    _write(payload, output)
    embedder.close()
    return payload


def run_sweep(split: str, output: Path) -> dict[str, Any]:
    """The fusion grid, the ablations and the off-topic cut-offs, on `split` (dev)."""
    started = time.perf_counter()
    on, off = load_questions(split)
    questions = [*on, *off]
    embedder = make_embedder()
    enriched = build_index(embedder, enriched=True)
    plain = build_index(embedder, enriched=False)
    empty_glossary = Glossary([])

    def run(retriever: Any) -> dict[str, Any]:
        return score(on, off, asyncio.run(ask_all(retriever, questions)))

    grid: list[dict[str, Any]] = []
    for rrf_k in GRID_RRF_K:
        for weight in GRID_EXPANSION_WEIGHT:
            for candidates in GRID_CANDIDATES:
                tuning = {"rrf_k": rrf_k, "expansion_weight": weight, "candidates": candidates}
                m = run(current(embedder, enriched, **dict(tuning)))
                grid.append({"tuning": tuning, "metrics": _strip(m)})
                print(f"{tuning}: {_line(m)}", file=sys.stderr, flush=True)

    no_lexical = with_analyzer(enriched, None)
    # Ranking only: the off-topic cut-off needs the parts the ablations take away (coverage needs BM25's
    # index, the Indonesian English view needs the glossary), so it is off in these rows.
    no_cutoff = {"en": 0.0, "id": 0.0}
    ablations = {
        "before (issue #2 retriever, plain index)": Baseline(
            embedder, plain.store, _default("retrieval_top_k"), _default("sources_top_k")
        ),
        "now, ranking only": current(embedder, enriched, min_relevance=no_cutoff),
        "on the plain index (no bilingual front matter)": current(embedder, plain, min_relevance=no_cutoff),
        "without the glossary (no gloss vector, no expansion)": current(
            embedder, enriched, empty_glossary, min_relevance=no_cutoff
        ),
        "without BM25 (dense question + gloss)": current(embedder, no_lexical, min_relevance=no_cutoff),
        "dense question only (no glossary, no BM25)": current(
            embedder, no_lexical, empty_glossary, min_relevance=no_cutoff
        ),
    }
    for name, analyze in ANALYZERS.items():
        ablations[f"BM25 terms: {name}"] = current(
            embedder, with_analyzer(enriched, analyze), min_relevance=no_cutoff
        )
    ablation_results = {name: run(r) for name, r in ablations.items()}

    cutoffs = []
    for question_weight in GRID_QUESTION_WEIGHT:
        for coverage_weight in GRID_COVERAGE_WEIGHT:
            weights = {"question_weight": question_weight, "coverage_weight": coverage_weight}
            m = run(
                current(
                    embedder,
                    enriched,
                    question_weight={lang: question_weight for lang in LANGUAGES},
                    coverage_weight={lang: coverage_weight for lang in LANGUAGES},
                    min_relevance={"en": 0.0, "id": 0.0},
                )
            )
            cutoffs.append({**weights, **{f"relevance_{lang}": m[f"relevance_{lang}"] for lang in LANGUAGES}})
    seconds = time.perf_counter() - started

    print("\n## Ablations (hit@1 / hit@3 / MRR)\n")
    print(table(list(ablation_results.items())))
    print(
        "\n## Off-topic cut-off, per language: on-topic lowest / off-topic highest relevance; off-topic"
        " questions under the lowest on-topic one (of all); the middle of that gap\n"
    )
    print("| question weight | coverage weight | " + " | ".join(LANGUAGES) + " |")
    print("|---|---|" + "---|" * len(LANGUAGES))
    for c in cutoffs:
        cells = []
        for lang in LANGUAGES:
            r = c[f"relevance_{lang}"]
            n = sum(q.language == lang for q in off)
            cells.append(
                f"{r['on_topic_min']} / {r['off_topic_max']}; {r['off_topic_under_on_topic_min']}/{n}; "
                f"{r['gap_middle']}"
            )
        print(f"| {c['question_weight']} | {c['coverage_weight']} | " + " | ".join(cells) + " |")
    print(f"\n{seconds:.0f}s ({embedder.embedded} texts embedded)")
    payload = {
        "mode": "sweep",
        **_header(split, on, off),
        "grid": grid,
        "ablations": {name: _strip(m) for name, m in ablation_results.items()},
        "cutoffs": cutoffs,
        "seconds": round(seconds, 1),
        "machine": machine_info(embedder),
    }
    _write(payload, output)
    embedder.close()
    return payload


def _line(m: dict[str, Any]) -> str:
    return (
        " | ".join(f"{c} {_pct(m[c]['hit@3'])}/{m[c]['mrr']:.3f}" for c in ("overall", *DIRECTIONS))
        + f" | h1 {_pct(m['overall']['hit@1'])}"
    )


def default_output(split: str, sweep: bool) -> Path:
    """retrieval_quality.json for the development part; a suffix for the sweep and the other parts."""
    suffix = "_sweep" if sweep else ("" if split == "dev" else f"_{split}")
    if sweep and split != "dev":
        suffix += f"_{split}"
    return RESULTS.with_name(f"{RESULTS.stem}{suffix}.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.retrieval_quality", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--split", choices=("dev", "heldout", "fresh", "all"), default="dev")
    parser.add_argument("--sweep", action="store_true", help="the fusion grid, ablations and cut-offs")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"JSON results (default {RESULTS.relative_to(ROOT)}; a suffix for --sweep and the other parts)",
    )
    args = parser.parse_args(argv)
    output = args.output or default_output(args.split, args.sweep)
    if args.sweep:
        run_sweep(args.split, output)
    else:
        run_compare(args.split, output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
