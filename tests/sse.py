"""Reading the chat stream the way real clients do (httpx-sse), plus contract checks used by many tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import connect_sse

CHAT = "/bali-zero/chat-stream"
SSE = {"Accept": "text/event-stream"}


class EventsView:
    """The answer as read from `events` (the decoded payloads, in order); shared by every reader here."""

    events: list[dict[str, Any]]

    @property
    def spans(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """The answer cut where `citations` start a new span: (text, citations) in order, as a UI keeps it."""
        spans: list[tuple[str, list[dict[str, Any]]]] = []
        for t in self.texts:
            if "citations" in t or not spans:
                spans.append(("", t.get("citations", [])))
            spans[-1] = (spans[-1][0] + t["text"], spans[-1][1])
        return spans

    @property
    def texts(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "text" in e]

    @property
    def answer(self) -> str:
        return "".join(e["text"] for e in self.texts)

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]


@dataclass
class Received(EventsView):
    status: int
    headers: httpx.Headers
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    @property
    def sources(self) -> list[dict[str, Any]]:
        found = [e for e in self.events if "sources" in e]
        assert len(found) == 1, f"expected exactly one sources event, got {len(found)}"
        return list(found[0]["sources"])


def ask(
    base_url: str,
    query: str | None = "How much is the overstay fine in Indonesia?",
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
    stop_after: int | None = None,
    **params: Any,
) -> Received:
    """One chat request read with httpx-sse; `stop_after` closes the connection after N events."""
    query_params = {k: v for k, v in {"query": query, **params}.items() if v is not None}
    with (
        httpx.Client(base_url=base_url, timeout=timeout) as client,
        connect_sse(client, "GET", CHAT, params=query_params, headers={**SSE, **(headers or {})}) as source,
    ):
        got = Received(source.response.status_code, source.response.headers)
        if source.response.status_code != 200 or not source.response.headers.get(
            "content-type", ""
        ).startswith("text/event-stream"):
            source.response.read()
            return got
        for sse in source.iter_sse():
            got.raw.append(sse.data)
            got.ids.append(sse.id)
            got.events.append(json.loads(sse.data))
            if stop_after is not None and len(got.events) >= stop_after:
                break
    return got


def assert_contract(got: Received, *, expect_error: str | None = None) -> None:
    """Every rule of the wire contract that holds for any complete stream."""
    assert got.status == 200
    assert got.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert got.headers["cache-control"] == "no-cache, no-transform"
    assert got.headers["x-accel-buffering"] == "no"
    assert got.headers["content-encoding"] == "none"
    # Streamed: no length announced (a proxy would wait for it), each header exactly once.
    assert "content-length" not in got.headers
    assert all(len(got.headers.get_list(name)) == 1 for name in ("content-type", "cache-control"))
    assert got.events, "no events"
    # Each payload is compact JSON with non-ASCII as raw UTF-8: byte-identical to this re-encoding.
    for raw, event in zip(got.raw, got.events, strict=True):
        assert raw == json.dumps(event, ensure_ascii=False, separators=(",", ":")), raw
    # Ids: `<stream>:<n>`, one stream, n strictly increasing by one.
    streams = {i.rsplit(":", 1)[0] for i in got.ids}
    assert len(streams) == 1, got.ids
    positions = [int(i.rsplit(":", 1)[1]) for i in got.ids]
    assert positions == list(range(positions[0], positions[0] + len(positions)))
    last = got.last
    assert last.get("done") is True
    assert isinstance(last["timestamp"], float)
    texts = got.texts
    assert [t["sequenceNumber"] for t in texts] == list(range(1, len(texts) + 1))
    for t in texts:
        assert set(t) - {"citations"} == {"text", "sequenceNumber", "timestamp"}
        assert isinstance(t["text"], str) and isinstance(t["timestamp"], float)
        for cite in t.get("citations", []):  # optional: a new span of the answer starts here
            assert set(cite) == {"source", "citedText"} and cite["source"] >= 1 and cite["citedText"]
    assert last["sequenceNumber"] == len(texts)
    if expect_error is not None:
        assert last["code"] == expect_error
        assert isinstance(last["error"], str) and last["error"]
        return
    assert "error" not in last, last
    assert isinstance(last["streamDuration"], float) and last["streamDuration"] >= 0
    kinds = ["text" if "text" in e else "sources" if "sources" in e else "done" for e in got.events]
    assert kinds == ["text"] * len(texts) + ["sources", "done"], kinds
    sources = got.sources
    assert len(sources) <= 3
    assert len({s["source"] for s in sources}) == len(sources)
    for s in sources:
        assert isinstance(s["source"], str) and s["source"]
        assert isinstance(s["snippet"], str) and len(s["snippet"]) <= 240
        assert 0.0 <= s["similarity"] <= 1.0
        assert "cited" not in s or (s["cited"] and all(isinstance(c, str) and c for c in s["cited"]))
    # Each citation names a source of the list ([n] numbering), which lists the span it cited.
    for cite in (c for t in texts for c in t.get("citations", [])):
        assert cite["citedText"] in sources[cite["source"] - 1]["cited"], cite
