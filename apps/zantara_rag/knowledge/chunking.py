"""Cutting sections into chunks: headings are hard boundaries; long sections split with overlap."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..domain import chunk_text
from .documents import Document

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|\n")


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    section: str
    text: str

    def embedding_text(self, title: str, also: str = "") -> str:
        """What gets embedded and stored (`domain.chunk_text`)."""
        return chunk_text(title, self.section, self.text, also)


def chunk_document(doc: Document, max_chars: int, overlap: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    for section in doc.sections:
        for piece in split_text(section.text, max_chars, overlap):
            chunks.append(Chunk(len(chunks), section.heading, piece))
    return chunks


def split_text(text: str, max_chars: int, overlap: int) -> list[str]:
    """Pack paragraphs (then sentences, then words) into pieces of at most `max_chars`.

    Each piece after the first starts with up to `overlap` characters from the end of the previous one,
    cut at a sentence or word boundary, so a fact split across the cut is still findable in one piece.
    """
    text = text.strip()
    if len(text) <= max_chars:
        return [text] if text else []
    units = _units(text, max_chars - overlap)
    pieces: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current}\n\n{unit}" if current else unit
        if len(candidate) <= max_chars:
            current = candidate
            continue
        pieces.append(current)
        tail = _tail(current, overlap)
        current = f"{tail} {unit}".strip() if tail else unit
        if len(current) > max_chars:
            current = unit
    if current:
        pieces.append(current)
    return pieces


def _units(text: str, cap: int) -> list[str]:
    units: list[str] = []
    for para in _PARAGRAPH.split(text):
        para = para.strip()
        if not para:
            continue
        if len(para) <= cap:
            units.append(para)
            continue
        for sentence in _SENTENCE.split(para):
            sentence = sentence.strip()
            while len(sentence) > cap:
                cut = sentence.rfind(" ", 0, cap)
                cut = cut if cut > cap // 2 else cap
                units.append(sentence[:cut].strip())
                sentence = sentence[cut:].strip()
            if sentence:
                units.append(sentence)
    return units


def _tail(text: str, overlap: int) -> str:
    if overlap <= 0:
        return ""
    tail = text[-overlap:]
    boundary = max(tail.find(". "), tail.find("\n"))
    if boundary != -1 and boundary < len(tail) - 20:
        return tail[boundary + 1 :].strip()
    space = tail.find(" ")
    return tail[space + 1 :].strip() if space != -1 else tail.strip()


def content_hash(*parts: str | None) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update((part or "").encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()[:16]
