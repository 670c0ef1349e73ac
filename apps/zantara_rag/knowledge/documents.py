"""Loading knowledge files (markdown, plain text, HTML, PDF) into titled documents made of sections."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..events import http_url
from ..settings import INGEST_MAX_FILE_BYTES, INGEST_MAX_PDF_PAGES
from .files import SkippedFile, read_regular

_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


@dataclass
class Section:
    """A run of text under one heading path (e.g. "Requirements > Documents")."""

    heading: str
    text: str


@dataclass
class Document:
    title: str
    sections: list[Section]
    url: str | None = None
    updated: str | None = None
    language: str | None = None
    # Bilingual enrichment from the front matter (`title_en`, `title_id`, `keywords_en`, `keywords_id`):
    # the title and the keywords per language code. Indexed with every chunk (knowledge/ingest.py).
    titles: dict[str, str] = field(default_factory=dict)
    keywords: dict[str, list[str]] = field(default_factory=dict)

    @property
    def other_titles(self) -> list[str]:
        """The document's titles in other languages (different from `title`), in a stable order."""
        return [t for _, t in sorted(self.titles.items()) if t != self.title]


class UnreadableDocument(Exception):
    """A file could not be parsed; ingestion reports it and goes on with the rest."""


# What a file's name says it is; an upload is told by its content instead (`knowledge.sniffing`).
_KIND_BY_SUFFIX = {".pdf": "pdf", ".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}


def load(
    path: Path, *, max_bytes: int = INGEST_MAX_FILE_BYTES, max_pdf_pages: int = INGEST_MAX_PDF_PAGES
) -> Document:
    """The document in a regular file (`files.read_regular`); raises `SkippedFile` or `UnreadableDocument`."""
    data = read_regular(path, max_bytes)
    kind = _KIND_BY_SUFFIX.get(path.suffix.lower(), "text")
    return parse(data, kind, path.name, max_pdf_pages=max_pdf_pages)


def parse(data: bytes, kind: str, name: str, *, max_pdf_pages: int = INGEST_MAX_PDF_PAGES) -> Document:
    """A document from bytes already read and checked: `kind` is pdf, html, markdown or text; `name` stands
    in for a title when the content has none. Raises `SkippedFile` (a PDF over `max_pdf_pages`) or
    `UnreadableDocument`."""
    path = Path(name)
    try:
        if kind == "pdf":
            return _load_pdf(data, path, max_pdf_pages)
        raw = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
        if kind == "html":
            return _load_html(raw, path)
        if kind == "markdown":
            return _load_markdown(raw, path)
        return _load_text(raw, path)
    except (UnreadableDocument, SkippedFile):
        raise
    except Exception as exc:
        raise UnreadableDocument(f"{path.name}: {type(exc).__name__}") from exc


def _fallback_title(path: Path) -> str:
    return path.stem.replace("-", " ").replace("_", " ").strip().capitalize() or path.name


def _load_markdown(raw: str, path: Path) -> Document:
    meta: dict[str, Any] = {}
    match = _FRONT_MATTER.match(raw)
    if match:
        loaded = yaml.safe_load(match.group(1))
        if isinstance(loaded, dict):
            meta = loaded
        raw = raw[match.end() :]
    sections = split_markdown(raw)
    title = str(meta.get("title") or "").strip()
    if not title:
        first = next((s for s in sections if s.heading), None)
        title = first.heading.split(" > ")[0] if first else _fallback_title(path)
    return Document(
        title=title,
        sections=sections,
        url=http_url(meta.get("url")),
        updated=str(meta["updated"]) if meta.get("updated") else None,
        language=str(meta["language"]) if meta.get("language") else None,
        titles=_per_language(meta, "title", _text),
        keywords=_per_language(meta, "keywords", _keywords),
    )


def _text(value: object) -> str:
    return " ".join(str(value).split())


def _keywords(value: object) -> list[str]:
    """A YAML list, or one string of comma-separated keywords."""
    items = value if isinstance(value, list) else str(value).split(",")
    return [k for k in (_text(i) for i in items if i is not None) if k]


def _per_language(meta: dict[str, Any], prefix: str, convert: Any) -> dict[str, Any]:
    """`<prefix>_<language>` front-matter keys (e.g. `title_id`, `keywords_en`) by language code."""
    out = {}
    for key, value in meta.items():
        language = str(key).removeprefix(f"{prefix}_")
        if str(key).startswith(f"{prefix}_") and re.fullmatch(r"[a-z]{2}", language) and value:
            converted = convert(value)
            if converted:
                out[language] = converted
    return out


def split_markdown(text: str) -> list[Section]:
    """Sections by heading; the heading path joins levels (`##` under `#`) so a chunk knows its context."""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []
    in_fence = False

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            sections.append(Section(" > ".join(h for _, h in stack), body))
        buf.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            flush()
            level = len(match.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, match.group(2).strip()))
        else:
            buf.append(line)
    flush()
    return sections


def _load_text(raw: str, path: Path) -> Document:
    lines = [ln for ln in raw.splitlines() if ln.strip()]
    title = lines[0].strip()[:120] if lines else _fallback_title(path)
    return Document(title=title, sections=[Section("", raw.strip())] if raw.strip() else [])


def _load_html(raw: str, path: Path) -> Document:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup(["script", "style", "nav", "footer", "noscript"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    # Re-express the page as markdown-ish text so one splitter handles both formats.
    lines: list[str] = []
    body = soup.body or soup
    for el in body.find_all(["h1", "h2", "h3", "h4", "p", "li", "td", "pre", "blockquote"]):
        text = el.get_text(" ", strip=True)
        if not text:
            continue
        if el.name in {"h1", "h2", "h3", "h4"}:
            lines.append(f"\n{'#' * int(el.name[1])} {text}\n")
        elif el.name == "li":
            lines.append(f"- {text}")
        else:
            lines.append(f"{text}\n")
    sections = split_markdown("\n".join(lines))
    canonical = soup.find("link", rel="canonical")
    url = canonical.get("href") if canonical is not None else None
    lang = body.get("lang") if hasattr(body, "get") else None
    html = soup.find("html")
    if html is not None and html.get("lang"):
        lang = html.get("lang")
    if not title:
        title = next((s.heading for s in sections if s.heading), _fallback_title(path))
    return Document(
        title=title,
        sections=sections,
        url=http_url(url),
        language=str(lang) if lang else None,
    )


def _load_pdf(data: bytes, path: Path, max_pages: int) -> Document:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if len(reader.pages) > max_pages:
        raise SkippedFile(f"more than {max_pages} pages")
    title = ""
    if reader.metadata is not None and reader.metadata.title:
        title = str(reader.metadata.title).strip()
    sections = []
    for number, page in enumerate(reader.pages, start=1):
        text = (page.extract_text() or "").strip()
        if text:
            sections.append(Section(f"Page {number}", text))
    if not sections:
        raise UnreadableDocument(f"{path.name}: no extractable text (scanned PDF?)")
    return Document(title=title or _fallback_title(path), sections=sections)
