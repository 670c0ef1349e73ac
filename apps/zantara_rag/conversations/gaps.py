"""The knowledge-gaps report: the questions the knowledge base fails, i.e. what to write next.

Three kinds of turn point at a gap: answered with **no source** (retrieval found nothing relevant: a topic
nobody wrote up, or an off-topic question), **degraded** (Claude failed over to another model or to the
extractive answer), and **rated -1** by the user. Within each kind, paraphrases of one question count
together: questions are grouped by nearest neighbour with the service's own embedder (a question joins the
group whose centroid it is closest to, at cosine >= `GROUP_SIMILARITY`, else starts one). Each group has its
count, the conversations it came from, when it was last asked, and an example question per language
(English, Indonesian). `zantara-rag report gaps` prints it (`gaps_report`); `GET /admin/gaps` reads the rows
under the keeper's database guard and calls `build_report`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ..language import detect_language
from .storage import ConversationStore, GapRow

# all-MiniLM-L6-v2: paraphrases of one question score 0.72-0.91, different questions on one topic (registering
# a PT PMA / its minimum capital) 0.65 and below (measured; tests/test_gaps.py holds both sides).
GROUP_SIMILARITY = 0.7
KINDS = {"no_source": "Answered with no source", "degraded": "Degraded answers", "rated_down": "Rated -1"}
ANSWERED = frozenset({"done", "degraded"})
_SINCE = re.compile(r"^([0-9]{1,5})([hdw])$")
_UNIT = {"h": 3600, "d": 86400, "w": 7 * 86400}

Embed = Callable[[list[str]], Sequence[Sequence[float]]]


def parse_since(text: str) -> timedelta:
    """`24h`, `7d`, `4w` as a duration; raises ValueError otherwise."""
    match = _SINCE.match(text.strip().lower())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not a duration like 24h, 7d or 4w")
    return timedelta(seconds=int(match[1]) * _UNIT[match[2]])


@dataclass
class Group:
    """Paraphrases of one question."""

    count: int
    conversations: int
    last_asked: datetime
    examples: dict[str, str] = field(default_factory=dict)  # "en" / "id" → the most recent wording


@dataclass
class GapReport:
    since: datetime
    until: datetime
    answers: int  # every turn asked in the window, gap or not
    kinds: dict[str, list[Group]]

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "answers": self.answers,
            **{
                kind: [
                    {
                        "count": g.count,
                        "conversations": g.conversations,
                        "lastAsked": g.last_asked.isoformat(),
                        "examples": g.examples,
                    }
                    for g in groups
                ]
                for kind, groups in self.kinds.items()
            },
        }


def kinds_of(row: GapRow) -> list[str]:
    found = []
    if row.outcome in ANSWERED and not row.sourced:
        found.append("no_source")
    if row.degraded:
        found.append("degraded")
    if row.rating == -1:
        found.append("rated_down")
    return found


def group_questions(
    questions: list[str], vectors: Sequence[Sequence[float]], threshold: float
) -> list[list[int]]:
    """Indices of `questions` in groups of paraphrases, in order of first appearance."""
    matrix = np.asarray(vectors, dtype=np.float64).reshape(len(questions), -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    units = matrix / np.where(norms == 0, 1.0, norms)
    groups: list[list[int]] = []
    sums: list[np.ndarray[Any, Any]] = []
    for i, vector in enumerate(units):
        if sums:
            centroids = np.stack(sums)
            centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
            scores = centroids @ vector
            best = int(np.argmax(scores))
            if scores[best] >= threshold:
                groups[best].append(i)
                sums[best] = sums[best] + vector
                continue
        groups.append([i])
        sums.append(vector.copy())
    return groups


def build_report(
    rows: list[GapRow], embed: Embed, since: datetime, until: datetime, threshold: float = GROUP_SIMILARITY
) -> GapReport:
    """Group each kind's questions (rows newest first); the biggest groups first."""
    kinds: dict[str, list[Group]] = {}
    for kind in KINDS:
        picked = [r for r in rows if kind in kinds_of(r)]
        wordings = sorted({" ".join(r.question.split()) for r in picked})
        vectors = dict(zip(wordings, embed(wordings), strict=True)) if wordings else {}
        questions = [" ".join(r.question.split()) for r in picked]
        groups = group_questions(questions, [vectors[q] for q in questions], threshold) if picked else []
        kinds[kind] = sorted(
            (_group([picked[i] for i in members], [questions[i] for i in members]) for members in groups),
            key=lambda g: (-g.count, -g.last_asked.timestamp()),
        )
    return GapReport(since, until, len(rows), kinds)


def _group(rows: list[GapRow], questions: list[str]) -> Group:
    examples: dict[str, str] = {}
    for question in questions:  # newest first: the first of each language is the most recent wording
        examples.setdefault(detect_language(question), question)
    return Group(
        count=len(rows),
        conversations=len({r.conversation_id for r in rows}),
        last_asked=max(r.asked_at for r in rows),
        examples=dict(sorted(examples.items())),
    )


async def gaps_report(store: ConversationStore, embed: Embed, since: timedelta) -> GapReport:
    """The report over the last `since`; the embedding runs in a thread (it is CPU work)."""
    until = datetime.now(UTC)
    rows = await store.gap_rows(until - since)
    return await asyncio.to_thread(build_report, rows, embed, until - since, until)


def render_json(report: GapReport) -> str:
    return json.dumps(report.as_json(), ensure_ascii=False, indent=2)


def render_table(report: GapReport, width: int = 100) -> str:
    lines = [
        f"Knowledge gaps from {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC "
        f"({report.answers} answers)"
    ]
    for kind, title in KINDS.items():
        groups = report.kinds[kind]
        asked = sum(g.count for g in groups)
        lines += ["", f"{title}: {asked} question(s) in {len(groups)} group(s)"]
        if groups:
            lines.append(f"  {'count':>5}  {'convs':>5}  {'last asked':<16}  example")
        for g in groups:
            first = True
            for language, question in g.examples.items():
                head = (
                    f"  {g.count:>5}  {g.conversations:>5}  {g.last_asked:%Y-%m-%d %H:%M}"
                    if first
                    else " " * 36
                )
                lines.append(_clip(f"{head}  [{language}] {question}", width))
                first = False
    return "\n".join(lines)


def _clip(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"
