"""docs/configuration.md lists every setting with its real default, and nothing that does not exist."""

from __future__ import annotations

import re

from tests.harness import ROOT
from zantara_rag.settings import Settings

DOC = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
ROWS = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]+) \|", DOC, flags=re.M))


def test_every_setting_is_documented_and_nothing_else() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    assert set(ROWS) == fields


def test_documented_defaults_match() -> None:
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = ROWS[name.upper()].strip()
        if default is None:
            assert shown.startswith("unset"), name
        elif isinstance(default, bool):
            assert shown == f"`{str(default).lower()}`", name
        elif isinstance(default, tuple):
            assert shown == f"`{','.join(default)}`", name
        elif name == "knowledge_path":
            assert "apps/knowledge" in shown
        else:
            assert shown == f"`{default}`", (name, shown)
