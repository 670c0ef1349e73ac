"""docs/api.md's examples: the events are valid events of the wire contract, byte for byte as the server
encodes them; the JSON bodies of the conversation and admin routes are what their response models write and
have exactly the keys the running app answers with."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT
from zantara_rag.events import DoneEvent, ErrorEvent, Source, SourcesEvent, TextEvent, _Event

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


# --- the JSON examples of the conversation and admin routes


def json_example(heading: str) -> Any:
    """The first plain ```json block of the section under `heading` (up to the next heading)."""
    section = DOC.split(f"\n{heading}\n", 1)[1]
    section = re.split(r"\n#{1,4} ", section, maxsplit=1)[0]
    (first, *_) = re.findall(r"```json\n(.*?)\n```", section, flags=re.S)
    return json.loads(first)


CONVERSATION = json_example("### `GET /conversations/{id}`")
CONVERSATIONS = json_example("### `GET /conversations`")
FEEDBACK = json_example("### `POST /feedback`")
UPLOADED = json_example("### `POST /admin/documents`")
LISTED = json_example("### `GET /admin/documents`")
# A turn's sources are the sources event's entries as sent: their optional keys come and go with the document
# (checked against the event model instead).
TURN_SOURCES = ".turns[].sources[]"


def shape(value: Any, path: str = "") -> dict[str, set[str]]:
    """Every key path of a JSON value (list elements as `[]`, all of them merged), with the JSON types seen
    under it (`null` apart)."""
    kind = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    found: dict[str, set[str]] = {path: set() if value is None else {kind[type(value)]}}
    children: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        children = [(f"{path}.{key}", item) for key, item in value.items()]
    elif isinstance(value, list):
        children = [(f"{path}[]", item) for item in value]
    for child_path, item in children:
        for key, kinds in shape(item, child_path).items():
            found.setdefault(key, set()).update(kinds)
    return found


def assert_same_shape(example: Any, real: Any, *, skip: str | None = None) -> None:
    """The example has exactly the keys of the real answer, each of a type the real one has (nulls aside)."""
    documented = {k: v for k, v in shape(example).items() if skip is None or not k.startswith(skip)}
    answered = {k: v for k, v in shape(real).items() if skip is None or not k.startswith(skip)}
    assert set(documented) == set(answered), {
        "only in the doc": sorted(set(documented) - set(answered)),
        "only in the answer": sorted(set(answered) - set(documented)),
    }
    mismatched = {k: (documented[k], answered[k]) for k in documented if documented[k] and answered[k]}
    assert all(doc & got for doc, got in mismatched.values()), mismatched


def test_the_conversation_examples_are_exactly_what_the_response_models_write() -> None:
    from zantara_rag.http.conversations import ConversationList, ConversationPublic

    for model, example in ((ConversationPublic, CONVERSATION), (ConversationList, CONVERSATIONS)):
        assert model.model_validate(example).model_dump(mode="json", by_alias=True) == example
    for source in (s for turn in CONVERSATION["turns"] for s in turn["sources"]):
        compact = json.dumps(source, ensure_ascii=False, separators=(",", ":"))
        assert Source.model_validate(source).to_json() == compact


def test_the_feedback_example_is_a_valid_body_naming_every_field() -> None:
    from zantara_rag.http.conversations import FeedbackIn

    FeedbackIn.model_validate(FEEDBACK)
    assert set(FEEDBACK) == set(FeedbackIn.model_fields)


async def test_the_admin_and_conversation_examples_have_the_keys_the_app_answers_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real app in-process (lifespan, embedded Chroma, the embedder, SQLite for conversations, no Claude):
    an upload, the document list, an answer, its rating, then the conversation routes."""
    import httpx

    from tests.admin import ADMIN_SECRET, QUOKKA, bearer, pdf, token
    from tests.test_app_inprocess import clear_settings_env
    from zantara_rag.app import create_app
    from zantara_rag.settings import Settings

    clear_settings_env(monkeypatch)
    settings = Settings(
        chroma_path=tmp_path / "chroma",
        knowledge_path=tmp_path / "kb",
        auto_ingest=False,
        auth_secret=ADMIN_SECRET,
        extractive_chunk_delay_ms=0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            files = [("file", ("quokka-permit.md", QUOKKA.encode())), ("file", ("scan.pdf", pdf([[]])))]
            uploaded = await client.post("/admin/documents", files=files, headers=bearer())
            assert uploaded.status_code == 200, uploaded.text
            assert [d["status"] for d in uploaded.json()["documents"]] == ["added", "rejected"]
            assert_same_shape(UPLOADED, uploaded.json())

            listed = await client.get("/admin/documents", headers=bearer())
            assert listed.status_code == 200, listed.text
            assert_same_shape(LISTED, listed.json())

            reply = await client.get(
                "/bali-zero/chat-stream",
                params={"query": "How much does the Quokka permit cost per day?"},
                headers={"Accept": "text/event-stream", **bearer(token(scope=None))},
            )
            events = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
            assert events[-1].get("done") is True and "error" not in events[-1], events[-1]
            assert next(e["sources"] for e in events if "sources" in e), "the answer has no source"
            cid = events[-1]["conversationId"]
            rating = {"conversation_id": cid, "turn": 1, "rating": -1, "comment": "The fee changed"}
            assert (await client.post("/feedback", json=rating, headers=bearer())).status_code == 204

            conversation = await client.get(f"/conversations/{cid}", headers=bearer())
            assert conversation.status_code == 200, conversation.text
            assert_same_shape(CONVERSATION, conversation.json(), skip=TURN_SOURCES)
            conversations = await client.get("/conversations", headers=bearer())
            assert conversations.status_code == 200, conversations.text
            assert_same_shape(CONVERSATIONS, conversations.json())
