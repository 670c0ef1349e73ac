"""The optional team directory (`TEAM_DIRECTORY`): known users' names and preferred languages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    language: str | None = None


class TeamDirectory:
    """Looked up by e-mail, case-insensitively. Accepts `{email: {...}}` or `[{"email": ..., ...}]`."""

    def __init__(self, members: dict[str, Member]) -> None:
        self._members = members

    @classmethod
    def load(cls, path: Path | None) -> TeamDirectory:
        if path is None:
            return cls({})
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data.items() if isinstance(data, dict) else ((e.get("email", ""), e) for e in data)
        members = {}
        for email, entry in entries:
            if isinstance(entry, dict) and email and entry.get("name"):
                members[str(email).strip().lower()] = Member(str(entry["name"]), entry.get("language"))
        return cls(members)

    def find(self, email: str | None) -> Member | None:
        return self._members.get(email.lower()) if email else None
