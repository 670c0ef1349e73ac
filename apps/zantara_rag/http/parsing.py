"""Parsing and validating a chat request's query string, before anything expensive runs."""

from __future__ import annotations

import json
import re
import unicodedata
from urllib.parse import unquote_to_bytes

from ..domain import ChatRequest, Turn
from ..errors import InvalidEmail, InvalidHistory, InvalidQuery, QueryTooLong, UrlTooLong
from ..events import clean_text
from ..settings import Settings

# Sent by the production client when it has no e-mail; they mean "absent".
_ABSENT = {"", "undefined", "null", "none"}
_EMAIL = re.compile(r"^[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}$")


def sanitize(text: str) -> str:
    """Drop control characters (keeping newlines and tabs) and replace lone surrogates."""
    text = clean_text(text)
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in {"Cc", "Cs"})


def check_request_target(raw_path: bytes, query_string: bytes, max_url_bytes: int) -> None:
    """Refuse what Starlette would silently repair: an over-long URL, and %-escapes that are not UTF-8.

    Starlette decodes the query string with replacement characters, so `query=%FF%FE` would arrive as
    "\ufffd\ufffd"; only the raw bytes tell a broken client from a question.
    """
    if len(raw_path) + 1 + len(query_string) > max_url_bytes:
        raise UrlTooLong()
    for pair in query_string.split(b"&"):
        for part in pair.split(b"=", 1):
            try:
                unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidQuery("The question could not be read: it is not valid UTF-8 text.") from None


def parse_chat(
    query: str | None,
    user_email: str | None,
    conversation_history: str | None,
    settings: Settings,
) -> ChatRequest:
    """Validate everything a chat request carries; raises an `InvalidRequest` subclass with a safe message."""
    text = sanitize(query or "").strip()
    if not text:
        raise InvalidQuery()
    if len(text) > settings.max_query_chars:
        raise QueryTooLong(
            f"Your question is too long ({len(text)} characters). Please keep it under "
            f"{settings.max_query_chars} characters."
        )
    return ChatRequest(
        query=text,
        user_email=_parse_email(user_email),
        history=parse_history(conversation_history, settings),
    )


def _parse_email(raw: str | None) -> str | None:
    value = (raw or "").strip()
    if value.lower() in _ABSENT:
        return None
    if len(value) > 254 or not _EMAIL.match(value):
        raise InvalidEmail()
    return value.lower()


def parse_history(raw: str | None, settings: Settings) -> list[Turn]:
    """The most recent turns that fit the turn and character budgets, oldest first."""
    if raw is None or raw.strip().lower() in _ABSENT:
        return []
    if len(raw.encode("utf-8", "surrogatepass")) > settings.max_history_param_bytes:
        raise InvalidHistory("The conversation history is too large. Please start a new conversation.")
    try:
        items = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidHistory("The conversation history is not valid JSON.") from None
    if not isinstance(items, list):
        raise InvalidHistory("The conversation history must be a list of turns.")
    turns: list[Turn] = []
    for item in items:
        if (
            not isinstance(item, dict)
            or item.get("role") not in ("user", "assistant")
            or not isinstance(item.get("content"), str)
        ):
            raise InvalidHistory(
                'Each conversation turn must look like {"role": "user" or "assistant", "content": "..."}.'
            )
        content = sanitize(item["content"]).strip()
        if content:
            turns.append(Turn(item["role"], content))
    return keep_recent(turns, settings)


def keep_recent(turns: list[Turn], settings: Settings) -> list[Turn]:
    """The most recent turns within MAX_HISTORY_TURNS and MAX_HISTORY_CHARS, oldest first (the history budget
    of both the client's `conversation_history` and a stored conversation)."""
    kept: list[Turn] = []
    budget = settings.max_history_chars
    for turn in reversed(turns[-settings.max_history_turns :] if settings.max_history_turns else []):
        if len(turn.content) > budget:
            break
        budget -= len(turn.content)
        kept.append(turn)
    return list(reversed(kept))
