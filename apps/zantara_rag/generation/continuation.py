"""Continuing an interrupted answer on any model, without an assistant prefill.

Models of the 4.6 generation and later refuse a conversation that ends with an assistant turn (400), so the
text the user already has goes back inside the last user turn, with an instruction to continue exactly
where it stops (`prompts/continue.md`). One mechanism for every model: older ones would accept a prefill,
but nothing measurable here favours a second path. A model may still restate the last words it was given,
or start the answer again: `trim_seam` holds the start of the continuation back until it can tell, and
drops what repeats the end of the answer so far, so the client sees neither a repeated nor a missing span.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from functools import cache
from importlib import resources
from typing import Any

from ..domain import AnswerPiece

# The longest restatement of the answer's end that the seam looks for (a restart from the very beginning is
# recognised at any length). A restatement starts at a word, or anywhere if it is this long: an exact repeat
# of the last 8 characters is never a coincidence, a repeat of "0" after "10" may be.
MAX_RESTATED_CHARS = 200
MIN_MIDWORD_CHARS = 8
_OPENERS = "([{\"'“‘«"  # a word can start right after these as well as after whitespace


@cache
def continue_prompt() -> str:
    return (
        resources.files(__package__ or "").joinpath("prompts/continue.md").read_text(encoding="utf-8").strip()
    )


def continuation_messages(messages: list[dict[str, Any]], partial: str) -> list[dict[str, Any]]:
    """The same request, with the answer so far and the instruction to go on as the last user block."""
    *earlier, last = messages
    content = last["content"]
    blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
    note = continue_prompt().replace("{answer_so_far}", partial)
    return [*earlier, {"role": "user", "content": [*blocks, {"type": "text", "text": note}]}]


class Seam:
    """Decides how much of a continuation's start repeats the end of the answer so far."""

    def __init__(self, partial: str) -> None:
        base = partial.rstrip()
        self.spaced = base != partial  # the client's text ends in whitespace: do not send more of it
        # Where a restatement can start: near the end, or at the very beginning (a restart).
        starts = [
            i
            for i in range(max(0, len(base) - MAX_RESTATED_CHARS), len(base))
            if not base[i].isspace()
            and (
                i == 0
                or base[i - 1].isspace()
                or base[i - 1] in _OPENERS
                or len(base) - i >= MIN_MIDWORD_CHARS
            )
        ]
        self.candidates = sorted({base[i:] for i in starts} | ({base} if base else set()), key=len)

    def cut(self, head: str, final: bool = False) -> int | None:
        """How many leading characters of `head` to drop, or None while more text could change it."""
        text = head.lstrip() if self.spaced else head
        lead = len(head) - len(text)
        undecided = any(len(c) > len(text) and c.startswith(text) for c in self.candidates)
        restated = max((len(c) for c in self.candidates if text.startswith(c)), default=0)
        rest = text[restated:]
        # After a restatement, the client's trailing whitespace must not come twice: wait for what follows.
        if not final and (undecided or not text.strip() or (restated and self.spaced and not rest.strip())):
            return None
        if restated and self.spaced:
            restated += len(rest) - len(rest.lstrip())
        return lead + restated


async def trim_seam(
    pieces: AsyncGenerator[AnswerPiece, None], partial: str
) -> AsyncGenerator[AnswerPiece, None]:
    """`pieces` (a continuation of `partial`) without what repeats the end of `partial`."""
    seam = Seam(partial)
    held: list[AnswerPiece] = []
    head = ""
    decided = False
    async with aclosing(pieces):
        async for piece in pieces:
            if decided:
                yield piece
                continue
            held.append(piece)
            if isinstance(piece, str):
                head += piece
                cut = seam.cut(head)
                if cut is not None:
                    decided = True
                    for kept in _drop(held, cut):
                        yield kept
    if not decided:
        for kept in _drop(held, seam.cut(head, final=True) or 0):
            yield kept


def _drop(pieces: list[AnswerPiece], count: int) -> Iterator[AnswerPiece]:
    """`pieces` without their first `count` characters of text (spans kept where they stand)."""
    for piece in pieces:
        if isinstance(piece, str):
            piece, count = piece[count:], max(0, count - len(piece))
            if not piece:
                continue
        yield piece
