"""The extractive answer: the most relevant sentences of the retrieved passages, cited, no model involved.

Used when no `ANTHROPIC_API_KEY` is set, and as the last resort when Claude is unavailable. It is labelled
as such in its first sentence and in the done event (`"model": "extractive"`). Each quoted line is a span
citing the sentence it quotes, the same structure as Claude's cited answer (`compose_spans`).

It speaks the question's language as far as the passages allow: the label (and the "nothing found" answer)
is in the question's language (`language.detect_language`), and when some passages are in that language
their sentences are preferred; quotes from passages in the other language are said to be so in the label.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from ..domain import Citation, Passage, chunk_body
from ..language import Language, detect_language, index_terms
from .sentences import BOUNDARY

MAX_SENTENCES = 4
# A sentence in the question's language outranks one in the other language with up to this many more
# question words.
SAME_LANGUAGE_BONUS = 1.0
LABEL_EN = (
    "Here is what the Bali Zero knowledge base says (an extractive summary of the sources; "
    "no AI model wrote this answer):"
)
LABEL_ID = (
    "Berikut yang tertulis di basis pengetahuan Bali Zero (ringkasan kutipan dari sumber; "
    "jawaban ini tidak ditulis oleh model AI):"
)
# The label when every quoted sentence is in the other language.
LABEL_EN_QUOTING_ID = (
    "Here is what the Bali Zero knowledge base says (an extractive summary of the sources, quoted in "
    "Indonesian; no AI model wrote this answer):"
)
LABEL_ID_QUOTING_EN = (
    "Berikut yang tertulis di basis pengetahuan Bali Zero (ringkasan kutipan dari sumber berbahasa Inggris; "
    "jawaban ini tidak ditulis oleh model AI):"
)
LABEL = {"en": LABEL_EN, "id": LABEL_ID}
LABEL_QUOTING_OTHER = {"en": LABEL_EN_QUOTING_ID, "id": LABEL_ID_QUOTING_EN}
NOTHING_EN = (
    "I couldn't find this in the Bali Zero knowledge base. Please rephrase the question or contact the "
    "Bali Zero team for a personal consultation."
)
NOTHING_ID = (
    "Saya tidak menemukan jawabannya di basis pengetahuan Bali Zero. Silakan ubah pertanyaan Anda atau "
    "hubungi tim Bali Zero untuk konsultasi pribadi."
)
NOTHING = {"en": NOTHING_EN, "id": NOTHING_ID}
# When Claude's safety classifiers decline a question (generation/answerer.py).
DECLINED = {
    "en": (
        "I can't help with this request. For questions about visas, companies, tax or property in "
        "Indonesia, please rephrase it or contact the Bali Zero team."
    ),
    "id": (
        "Maaf, saya tidak dapat membantu permintaan ini. Untuk pertanyaan tentang visa, perusahaan, pajak "
        "atau properti di Indonesia, silakan ubah pertanyaan Anda atau hubungi tim Bali Zero."
    ),
}


def _terms(text: str) -> frozenset[str]:
    return frozenset(index_terms(text))


def _sentences(passage: Passage) -> Iterator[str]:
    for chunk in passage.chunks:
        for raw in BOUNDARY.split(chunk_body(chunk)):
            sentence = raw.strip().lstrip("-*•0123456789. ").strip()
            if 30 <= len(sentence) <= 400 and not sentence.startswith(("#", "|")):
                yield sentence


def _language_of(passage: Passage, sentence: str) -> Language:
    if passage.language in ("en", "id"):
        return "id" if passage.language == "id" else "en"
    return detect_language(sentence)


def compose(query: str, passages: list[Passage]) -> str:
    return "".join(text for text, _ in compose_spans(query, passages))


def compose_spans(query: str, passages: list[Passage]) -> list[tuple[str, tuple[Citation, ...]]]:
    """The answer's text in spans, each with the passage sentences it cites (the label cites nothing)."""
    language = detect_language(query)
    if not passages:
        return [(NOTHING[language], ())]
    wanted = _terms(query)
    scored: list[tuple[float, int, int, str, Language]] = []
    for passage in passages:
        for position, sentence in enumerate(_sentences(passage)):
            said_in = _language_of(passage, sentence)
            overlap = len(wanted & _terms(sentence)) + (SAME_LANGUAGE_BONUS if said_in == language else 0.0)
            # Overlap dominates; passage rank and early position break ties, length is damped.
            score = overlap / math.sqrt(1 + len(sentence) / 80) + passage.similarity - position * 0.01
            scored.append((score, passage.number, position, sentence, said_in))
    best = sorted(scored, key=lambda s: -s[0])[:MAX_SENTENCES]
    seen: set[str] = set()
    lines: list[tuple[str, tuple[Citation, ...]]] = []
    for _, number, _, sentence, _ in sorted(best, key=lambda s: (s[1], s[2])):
        if sentence not in seen:
            seen.add(sentence)
            end = "" if sentence.endswith((".", "!", "?", ":")) else "."
            newline = "\n" if lines else ""
            lines.append((f"{newline}- {sentence}{end} [{number}]", (Citation(number, sentence),)))
    other = bool(best) and all(s[4] != language for s in best)
    label = LABEL_QUOTING_OTHER[language] if other else LABEL[language]
    return [(f"{label}\n\n", ()), *lines]


def pieces(text: str, words: int = 3) -> Iterator[str]:
    """Split into small chunks of a few words, keeping the whitespace so the pieces join back exactly."""
    tokens = re.findall(r"\s*\S+|\s+$", text)
    for i in range(0, len(tokens), words):
        yield "".join(tokens[i : i + words])
