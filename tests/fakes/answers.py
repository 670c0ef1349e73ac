"""What the fake "Claude" answers, and the request rules of the real Messages API it enforces per model.

Kept apart from the wire (``anthropic_server.py``): this module decides *what* is said (the deterministic
default answer, its content blocks and their citations, the continuation of an interrupted answer) and
*whether* a request is refused; the server decides how it travels.

The default answer, when no scenario sets one, is grounded only in the request's sources::

    According to <first source's title> [1], <first 100 characters of its first block>. See also [2].

When the request's ``search_result`` blocks have ``citations: {"enabled": true}``, it comes as the real API
sends a cited answer: uncited text in one content block, each cited span in a block of its own whose
``citations`` (``search_result_location``) name the source blocks it rests on.
"""

from __future__ import annotations

import re
from typing import Any

NO_ANSWER = "I could not find this in the knowledge base."
CONTINUED = " (continued)."

# The real API's messages, word for word (tests/test_fake_anthropic.py pins them).
PREFILL_REFUSED = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)
TRAILING_WHITESPACE = "messages: final assistant content cannot end with trailing whitespace"
EMPTY_TEXT_BLOCK = "messages: text content blocks must be non-empty"
WHITESPACE_TEXT_BLOCK = "messages: text content blocks must contain non-whitespace text"

# The 4.6 generation is the first that refuses an assistant prefill (Anthropic's migration guide:
# "Prefilling assistant messages returns a 400 error on Claude 4.6 models").
NO_PREFILL_FROM = (4, 6)
_MODEL_ID = re.compile(
    r"^claude-(?:"
    r"(?P<line>[a-z]+)-(?P<major>\d+)(?:-(?P<minor>\d{1,2}))?"  # claude-sonnet-4-6, claude-sonnet-5
    r"|(?P<old_major>\d+)(?:-(?P<old_minor>\d))?-(?P<old_line>[a-z]+)"  # claude-3-5-haiku
    r")(?:-\d{8})?(?:-latest)?$"  # a snapshot date: claude-haiku-4-5-20251001
)

# How the answer chain gives an interrupted answer back (apps/zantara_rag/generation/prompts/continue.md):
# the text the user already has, between these lines, in the last user turn.
SO_FAR_OPEN = "<answer_so_far>\n"
SO_FAR_CLOSE = "\n</answer_so_far>"

Segment = tuple[str, list[dict[str, Any]]]  # one content block: its text and its citations


def model_generation(model: str) -> tuple[int, int] | None:
    """(major, minor) of a Claude model id, or None for an id of no known shape."""
    m = _MODEL_ID.match(model)
    if m is None:
        return None
    major = m.group("major") or m.group("old_major")
    minor = m.group("minor") or m.group("old_minor") or "0"
    return int(major), int(minor)


def refuses_prefill(model: str) -> bool:
    """Models of the 4.6 generation and later (and ids of no known shape: the fake is never kinder)."""
    generation = model_generation(model)
    return generation is None or generation >= NO_PREFILL_FROM


def request_problem(body: dict[str, Any]) -> str | None:
    """The 400 message the real API answers this (otherwise well-formed) request with, if any."""
    messages: list[dict[str, Any]] = body["messages"]
    for message in messages:
        for block in _content_blocks(message.get("content")):
            texts = [block] if block.get("type") == "text" else []
            if block.get("type") == "search_result":
                texts = [b for b in block.get("content") or [] if isinstance(b, dict)]
            for text_block in texts:
                text = text_block.get("text")
                if text == "":
                    return EMPTY_TEXT_BLOCK
                if isinstance(text, str) and not text.strip():
                    return WHITESPACE_TEXT_BLOCK
    last = messages[-1]
    if last.get("role") == "assistant":
        if refuses_prefill(body["model"]):
            return PREFILL_REFUSED
        prefill = "".join(_block_texts(last.get("content")))
        if prefill != prefill.rstrip():
            return TRAILING_WHITESPACE
    return None


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _block_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [b["text"] for b in _content_blocks(content) if isinstance(b.get("text"), str)]


def _source_title_and_texts(block: dict[str, Any]) -> tuple[str, list[str]]:
    """Title and text blocks of a ``search_result`` or ``document`` block."""
    title = block.get("title")
    if block.get("type") == "search_result":
        texts = _block_texts(block.get("content"))
        default_title = block.get("source") or "Search result"
    else:
        source = block.get("source")
        texts = []
        if isinstance(source, dict):
            if source.get("type") == "text" and isinstance(source.get("data"), str):
                texts = [source["data"]]
            elif source.get("type") == "content":
                texts = _block_texts(source.get("content"))
        default_title = "Document"
    return (title if isinstance(title, str) and title else str(default_title)), texts


def search_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``search_result`` block of the request, in the order the API numbers them (across messages)."""
    found = []
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            found += [b for b in _content_blocks(message.get("content")) if b.get("type") == "search_result"]
    return found


def citation(body: dict[str, Any], index: int, start: int = 0, end: int | None = None) -> dict[str, Any]:
    """The ``search_result_location`` the API sends for blocks ``start:end`` of search result ``index``."""
    result = search_results(body)[index]
    blocks = _block_texts(result.get("content"))
    end = start + 1 if end is None else end
    return {
        "type": "search_result_location",
        "cited_text": "".join(blocks[start:end]),
        "search_result_index": index,
        "source": result.get("source", ""),
        "title": result.get("title"),
        "start_block_index": start,
        "end_block_index": end,
    }


def citations_enabled(body: dict[str, Any]) -> bool:
    results = search_results(body)
    return bool(results) and all((r.get("citations") or {}).get("enabled") is True for r in results)


def answer_so_far(body: dict[str, Any]) -> str | None:
    """The interrupted answer given back in the last user turn, if this request continues one."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    for text in reversed(_block_texts(last.get("content"))):
        start, end = text.find(SO_FAR_OPEN), text.rfind(SO_FAR_CLOSE)
        if start >= 0 and end >= start + len(SO_FAR_OPEN):
            return text[start + len(SO_FAR_OPEN) : end]
    return None


def full_segments(body: dict[str, Any]) -> list[Segment]:
    """The whole default answer for this request's sources, as content blocks with their citations."""
    messages = body.get("messages") or []
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    content = _content_blocks(last_user.get("content")) if last_user else []
    sources = [b for b in content if b.get("type") in ("search_result", "document")]
    if not sources:
        return [(NO_ANSWER, [])]
    title, texts = _source_title_and_texts(sources[0])
    claim = (texts[0] if texts else "")[:100].rstrip()
    see_also = " See also [2]." if len(sources) > 1 else ""
    cites = _source_citations(body, sources[:2])
    segments: list[Segment] = [(f"According to {title} [1], ", []), (claim, cites[0]), (".", [])]
    if see_also:
        segments.append((see_also, cites[1]))
    return _merge([(text, c) for text, c in segments if text])


def _source_citations(body: dict[str, Any], sources: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """For each source: a citation of its first block, if it is a search result with citations on."""
    if not citations_enabled(body):
        return [[] for _ in sources]
    numbered = search_results(body)
    return [
        [citation(body, next(i for i, r in enumerate(numbered) if r is s))] if s in numbered else []
        for s in sources
    ]


def _merge(segments: list[Segment]) -> list[Segment]:
    """Adjacent uncited text is one content block, as the API sends it."""
    merged: list[Segment] = []
    for text, cites in segments:
        if merged and not cites and not merged[-1][1]:
            merged[-1] = (merged[-1][0] + text, [])
        else:
            merged.append((text, cites))
    return merged


def default_segments(body: dict[str, Any], restate: int = 0) -> list[Segment]:
    """The default answer, or the rest of it when the request continues an interrupted one.

    A continuation (the answer so far in the last user turn, or, where the model allows it, an assistant
    prefill) gets what follows that text in the full answer; with ``restate``, it starts that many
    characters earlier, as a model that repeats the last words it was given. A text that is not the start
    of the full answer gets ``CONTINUED``.
    """
    segments = full_segments(body)
    so_far = answer_so_far(body)
    messages = body.get("messages") or []
    if so_far is None and messages and messages[-1].get("role") == "assistant":
        so_far = "".join(_block_texts(messages[-1].get("content")))
    if so_far is None:
        return segments
    if not "".join(text for text, _ in segments).startswith(so_far):
        return [(CONTINUED, [])]
    return slice_segments(segments, max(0, len(so_far) - restate))


def slice_segments(segments: list[Segment], start: int) -> list[Segment]:
    """The segments from character ``start`` of their joined text on."""
    out: list[Segment] = []
    position = 0
    for text, cites in segments:
        if position + len(text) > start:
            out.append((text[max(0, start - position) :], cites))
        position += len(text)
    return out


def default_answer(body: dict[str, Any], restate: int = 0) -> str:
    """The text of ``default_segments``: what a test expects the fake to say for this request."""
    return "".join(text for text, _ in default_segments(body, restate))
