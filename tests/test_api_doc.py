"""docs/api.md's examples are valid events of the wire contract, byte for byte as the server encodes them."""

from __future__ import annotations

import json
import re

import pytest

from tests.harness import ROOT
from zantara_rag.events import DoneEvent, ErrorEvent, SourcesEvent, TextEvent, _Event

DOC = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```json event=(\w+)\n(.*?)\n```", DOC, flags=re.S)
MODELS: dict[str, type[_Event]] = {
    "text": TextEvent,
    "sources": SourcesEvent,
    "done": DoneEvent,
    "error": ErrorEvent,
}


def test_every_event_type_has_an_example() -> None:
    assert {kind for kind, _ in EXAMPLES} == set(MODELS)


@pytest.mark.parametrize(("kind", "raw"), EXAMPLES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(EXAMPLES)])
def test_example_round_trips_through_the_model(kind: str, raw: str) -> None:
    model = MODELS[kind].model_validate(json.loads(raw))
    assert model.to_json() == raw


def test_error_codes_table_covers_every_error_class() -> None:
    from zantara_rag import errors

    codes = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.ZantaraError)
        and cls.code != "invalid_request"
        and not issubclass(cls, errors.CannotStart)  # refusals to start: never on the wire
    }
    security = ROOT / "docs" / "security.md"
    documented = DOC + (security.read_text(encoding="utf-8") if security.exists() else "")
    table = set(re.findall(r"`([a-z_]+)`", documented))
    assert codes <= table, codes - table
