"""What an uploaded file is, by its content: markdown, plain text, HTML or PDF; anything else is refused.

The file name's ending is not trusted (a `.md` may be a PNG, a brochure may arrive as `scan.dat`). Text is
tried first, strictly: UTF-8 (a BOM allowed) with no NUL and hardly any control characters. Only then is a
binary signature looked up, with the `filetype` library: its matchers are a few bytes long (a BMP is
`BM`...), so asking it first would take a text that starts "BMW" for an image. A PDF is `%PDF-` at the
start; pypdf then has to open it and count its pages before anything is indexed.
"""

from __future__ import annotations

import io
import re
from typing import Literal

import filetype

Kind = Literal["markdown", "text", "html", "pdf"]

_HTML = re.compile(rb"\A\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S)
_MARKDOWN_HINT = re.compile(r"\A---\s*\n|^#{1,6}\s+\S|^\s*[-*]\s+\S|\[[^\]]+\]\([^)]+\)", re.M)
_MARKDOWN_NAMES = (".md", ".markdown")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BOM = b"\xef\xbb\xbf"


class UnsupportedContent(Exception):
    """Not markdown, text, HTML or PDF; `detected` names what it looks like, when known."""

    def __init__(self, detected: str | None) -> None:
        super().__init__(detected or "binary data")
        self.detected = detected


def sniff(data: bytes, name: str = "") -> Kind:
    """The kind of `data`; `name` only tells markdown from plain text once the content is known to be text."""
    head = data[:8192]
    if head.lstrip(_BOM).startswith(b"%PDF-"):
        return "pdf"
    text = _as_text(data)
    if text is not None:
        if _HTML.match(head.lstrip(_BOM)):
            return "html"
        if name.lower().endswith(_MARKDOWN_NAMES) or _MARKDOWN_HINT.search(text[:8192]):
            return "markdown"
        return "text"
    guess = filetype.guess(head)
    raise UnsupportedContent(guess.mime if guess is not None else None)


def _as_text(data: bytes) -> str | None:
    try:
        text = data.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    # A few stray control characters happen in real text (form feeds from a PDF export); many do not.
    if len(_CONTROL.findall(text[:65536])) > max(8, len(text[:65536]) // 1000):
        return None
    return text


def pdf_pages(data: bytes) -> int:
    """The page count of a PDF (its page tree, no text extracted); raises when pypdf cannot open it."""
    from pypdf import PdfReader

    return len(PdfReader(io.BytesIO(data)).pages)
