"""Sentences of a passage: the unit Claude cites (one text block each) and the extractive answer quotes."""

from __future__ import annotations

import re

# A sentence ends at . ! ? before a capital, digit or quote — but not after "e.g.", "i.e.", "No." or "etc.".
BOUNDARY = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<!\bNo\.)(?<!etc\.)(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+")
# Shorter pieces (a heading, a list marker) join the sentence after them: a block worth citing on its own.
MIN_BLOCK_CHARS = 24


def sentence_blocks(text: str) -> list[str]:
    """`text` cut into sentences, each keeping the whitespace after it, so that they join back into the
    stripped `text` exactly; none is empty or only whitespace (the API refuses such text blocks)."""
    text = text.strip()
    cuts = [m.end() for m in BOUNDARY.finditer(text)]
    blocks: list[str] = []
    for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
        piece = text[start:end]
        if blocks and (not piece.strip() or len(blocks[-1].strip()) < MIN_BLOCK_CHARS):
            blocks[-1] += piece
        elif piece:
            blocks.append(piece)
    if len(blocks) > 1 and len(blocks[-1].strip()) < MIN_BLOCK_CHARS:
        last = blocks.pop()
        blocks[-1] += last
    return blocks
