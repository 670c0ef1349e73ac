"""The default model ids, and the generation each is assumed to be.

Looked up in the API docs of late 2026: Claude Haiku 5.5 (`claude-haiku-5-5`, released 2026-10-07, "Latest":
the fastest and cheapest line, $0.10 / $0.50 per MTok under 100K prompt tokens) and Claude Sonnet 5.5
(`claude-sonnet-5-5`, "Latest", $2 / $10). Both are of the 5.5 generation, so both refuse an assistant prefill
and an interrupted answer is continued without one (tests/test_continuation.py).
"""

from __future__ import annotations

import typing

from anthropic.resources.messages.messages import DEPRECATED_MODELS
from anthropic.types import Model

from tests.fakes.answers import model_generation, refuses_prefill
from zantara_rag.settings import Settings

PRIMARY = Settings.model_fields["anthropic_model"].default
FALLBACK = Settings.model_fields["anthropic_fallback_model"].default


def test_the_primary_is_haiku_of_the_5_5_generation() -> None:
    assert PRIMARY == "claude-haiku-5-5"
    assert model_generation(PRIMARY) == (5, 5)
    assert refuses_prefill(PRIMARY)


def test_the_fallback_is_another_line_of_the_5_5_generation() -> None:
    assert FALLBACK == "claude-sonnet-5-5"
    assert model_generation(FALLBACK) == (5, 5)
    assert FALLBACK.split("-")[1] != PRIMARY.split("-")[1]  # sonnet, not haiku: other capacity
    assert refuses_prefill(FALLBACK)


def test_the_sdk_knows_both_ids_and_deprecates_neither() -> None:
    known = typing.get_args(typing.get_args(Model)[0])  # the Literal of anthropic 2.12's Model union
    assert PRIMARY in known and FALLBACK in known
    assert PRIMARY not in DEPRECATED_MODELS and FALLBACK not in DEPRECATED_MODELS
