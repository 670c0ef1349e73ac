"""Bilingual enrichment written by Claude at ingestion, for documents whose front matter lacks it.

A document is indexed with its title in the other language and keywords in both (knowledge/ingest.py): that
is what lets an English question find an Indonesian document and the other way round (docs/retrieval.md).
The sample knowledge base carries them in its front matter (`title_en`/`title_id`, `keywords_en`/
`keywords_id`). For any other document, when `ANTHROPIC_API_KEY` is set and `INGEST_ENRICHMENT` is `auto`,
`Enricher` asks Claude for what is missing (Anthropic's "contextual retrieval" idea, at the document level),
one request per document, and keeps the answer in `ENRICHMENT_CACHE_DIR` under a hash of the model, the
prompt and the document's content: an unchanged file costs nothing the second time (nor after
`ingest --reset`), a changed one is asked again. Front matter always wins over what Claude wrote.

A failure (no answer, an answer that is not the JSON asked for) is logged and the document is indexed
without enrichment; ingestion never stops for it. Documents are sent to Claude only here and only then.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..language import LANGUAGES, detect_language
from ..retrieval.backends import default_cache_dir as service_cache_dir
from ..settings import Settings
from .documents import Document

log = logging.getLogger(__name__)

PROMPT_VERSION = "1"
MAX_DOCUMENT_CHARS = 12_000
MAX_KEYWORDS = 30
SYSTEM = (
    "You index the documents of Bali Zero's knowledge base (immigration, company, tax, labour and property "
    "matters for foreigners in Indonesia) for a search engine that must answer questions asked in English "
    "and in Indonesian. Reply with one JSON object and nothing else, with these keys: "
    '"title_en" and "title_id" (the document\'s title in English and in Indonesian), '
    '"keywords_en" and "keywords_id" (lists of 10 to 25 keywords or short phrases, in English and in '
    "Indonesian, naming what the document is about and the terms a client would use to ask about it)."
)


def default_cache_dir() -> Path:
    return service_cache_dir() / "enrichment"


def needs_enrichment(document: Document) -> bool:
    """Whether the front matter lacks a title or keywords in one of the languages."""
    languages = set(LANGUAGES) | ({document.language} if document.language else set())
    titled = set(document.titles) | ({document.language} if document.language else set())
    return not languages <= titled or not set(LANGUAGES) <= set(document.keywords)


class Enricher:
    def __init__(self, client: Any, model: str, cache_dir: Path) -> None:
        self.client = client
        self.model = model
        self.cache_dir = cache_dir
        self.requests = 0  # sent to Claude by this enricher (cache misses)

    @classmethod
    def from_settings(cls, settings: Settings) -> Enricher | None:
        """An enricher when an API key is set and `INGEST_ENRICHMENT` is `auto`; None otherwise."""
        if settings.ingest_enrichment == "off" or not settings.has_api_key:
            return None
        import anthropic

        assert settings.anthropic_api_key is not None
        client = anthropic.Anthropic(
            api_key=settings.anthropic_api_key.get_secret_value(),
            base_url=str(settings.anthropic_base_url).rstrip("/") if settings.anthropic_base_url else None,
            max_retries=2,
            timeout=60.0,
        )
        return cls(client, settings.anthropic_model, settings.enrichment_cache_dir or default_cache_dir())

    def close(self) -> None:
        self.client.close()

    def enrich(self, document: Document) -> Document:
        """`document` with the titles and keywords its front matter lacks filled in (module docstring)."""
        if not needs_enrichment(document):
            return document
        text = _as_text(document)
        key = hashlib.sha256(f"{self.model}\x1f{PROMPT_VERSION}\x1f{text}".encode()).hexdigest()
        cached = self.cache_dir / f"{key}.json"
        written = _read(cached)
        if written is None:
            written = self._ask(text, document.title)
            if written is None:
                return document
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(written, ensure_ascii=False), encoding="utf-8")
            except OSError as exc:
                log.warning("enrichment cache not written (%s): the next ingestion asks again", exc)
        language = document.language or detect_language(text)
        titles = {lang: t for lang, t in written["titles"].items() if lang != language}
        return replace(
            document,
            titles={**titles, **document.titles},
            keywords={**written["keywords"], **document.keywords},
        )

    def _ask(self, text: str, title: str) -> dict[str, Any] | None:
        self.requests += 1
        try:
            message = self.client.messages.create(
                model=self.model,
                max_tokens=1024,
                system=SYSTEM,
                messages=[{"role": "user", "content": text}],
            )
            reply = "".join(b.text for b in message.content if getattr(b, "type", "") == "text")
        except Exception as exc:
            log.warning("enrichment of %r failed (%s): indexed without it", title, type(exc).__name__)
            return None
        parsed = parse_reply(reply)
        if parsed is None:
            log.warning("enrichment of %r: the answer was not the JSON asked for; indexed without it", title)
        return parsed


def _as_text(document: Document) -> str:
    parts = [f"# {document.title}"]
    parts += [f"## {s.heading}\n{s.text}" if s.heading else s.text for s in document.sections]
    return "\n\n".join(parts)[:MAX_DOCUMENT_CHARS]


def parse_reply(reply: str) -> dict[str, Any] | None:
    """Titles and keywords per language from Claude's JSON answer (fences tolerated); None if unusable."""
    start, end = reply.find("{"), reply.rfind("}")
    if start == -1 or end < start:
        return None
    try:
        data = json.loads(reply[start : end + 1])
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    titles: dict[str, str] = {}
    keywords: dict[str, list[str]] = {}
    for language in LANGUAGES:
        title = data.get(f"title_{language}")
        if isinstance(title, str) and title.strip():
            titles[language] = " ".join(title.split())[:200]
        listed = data.get(f"keywords_{language}")
        if isinstance(listed, list):
            cleaned = [
                " ".join(str(k).split())[:80] for k in listed if isinstance(k, str | int) and str(k).strip()
            ]
            if cleaned:
                keywords[language] = cleaned[:MAX_KEYWORDS]
    if not titles and not keywords:
        return None
    return {"titles": titles, "keywords": keywords}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        isinstance(data, dict)
        and isinstance(data.get("titles"), dict)
        and isinstance(data.get("keywords"), dict)
    ):
        return data
    return None
