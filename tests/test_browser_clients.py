"""Every real client of the chat stream, run in headless Chromium (and Node) against the real server.

The server runs without an API key (extractive answers), with a small per-chunk delay so that streaming,
Stop and reconnects happen mid-answer as they do in production. Pages are served from a loopback origin
that is in `CORS_ALLOWED_ORIGINS`, and once from one that is not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.browser import (
    REPO,
    StaticServer,
    TcpProxy,
    open_page,
    require_node_modules,
)
from tests.harness import ServerProcess, wait_until
from tests.sse import ask
from tests.streaming import metrics

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EXAMPLES = REPO / "docs" / "examples"
SCREENSHOT = REPO / "docs" / "sse-test.png"
QUESTION = "What do I need to set up a PT PMA company in Bali?"
FOLLOW_UP = "Berapa modal minimum untuk PT PMA?"
TOO_LONG = "x" * 5000  # refused (query_too_long): no turn of the conversation
# Keeps every EventSource the page opens in `window.__eventSources`, to read their readyState.
TRACK_EVENT_SOURCES = """
window.__eventSources = [];
const Native = window.EventSource;
window.EventSource = class extends Native {
  constructor(...args) { super(...args); window.__eventSources.push(this); }
};
"""
DONE = "window.__zantara && ['done', 'error'].includes(window.__zantara.state)"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the page origins serve: the test page, the vanilla example and fresh React and Vue builds."""
    for name in ("react", "vue"):
        require_node_modules(EXAMPLES / name)
    root = tmp_path_factory.mktemp("site")
    shutil.copy(REPO / "SSE_TEST.html", root / "SSE_TEST.html")
    shutil.copytree(EXAMPLES / "vanilla", root / "vanilla")
    for name in ("react", "vue"):
        # Build into the temporary site, never into the working tree; `npm run build` type-checks first.
        subprocess.run(
            ["npm", "run", "build", "--", "--outDir", str(root / name), "--emptyOutDir"],
            cwd=EXAMPLES / name,
            check=True,
            capture_output=True,
            timeout=180,
        )
    return root


@pytest.fixture(scope="module")
def page_origin(site: Path) -> Iterator[StaticServer]:
    with StaticServer(site) as server:
        yield server


@pytest.fixture(scope="module")
def unlisted_origin(site: Path) -> Iterator[StaticServer]:
    with StaticServer(site) as server:
        yield server


@pytest.fixture(scope="module")
def server(kb_template: Path, page_origin: StaticServer) -> Iterator[ServerProcess]:
    with ServerProcess(
        kb_template, CORS_ALLOWED_ORIGINS=page_origin.origin, EXTRACTIVE_CHUNK_DELAY_MS="30"
    ) as server:
        yield server


@pytest.fixture
def problems() -> list[str]:
    """Page errors and console errors seen by `page`; most tests assert there are none."""
    return []


@pytest.fixture
def page(browser: Any, problems: list[str]) -> Iterator[Any]:
    with open_page(browser, problems=problems, viewport={"width": 1200, "height": 900}) as page:
        page.set_default_timeout(TIMEOUT_MS)
        yield page


def snapshot(page: Any) -> dict[str, Any]:
    page.wait_for_function(DONE)
    result: dict[str, Any] = page.evaluate("window.__zantara")
    return result


def demo_url(origin: StaticServer, path: str, backend: str, question: str = QUESTION) -> str:
    return origin.url(path) + "?" + urlencode({"backend": backend, "q": question})


def ask_on_test_page(page: Any, question: str = QUESTION) -> dict[str, Any]:
    page.fill("#query", question)
    page.click("#ask")
    return snapshot(page)


def ask_in_demo(page: Any, question: str) -> dict[str, Any]:
    """A question typed into a React or Vue demo; its state once that answer has ended."""
    page.fill("#query", question)
    page.click("#ask")
    page.wait_for_function(
        "([q, done]) => window.__zantara.question === q && done.includes(window.__zantara.state)",
        arg=[question, ["done", "error"]],
    )
    result: dict[str, Any] = page.evaluate("window.__zantara")
    return result


def stored_turns(server: ServerProcess, conversation_id: str) -> list[dict[str, Any]]:
    """A conversation's turns as the server stored them in its database (`GET /conversations/{id}`)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        reply = client.get(f"/conversations/{conversation_id}")
    assert reply.status_code == 200, reply.text
    turns: list[dict[str, Any]] = reply.json()["turns"]
    return turns


def chat_params(urls: list[str]) -> dict[str, list[str]]:
    """The query parameters of the last chat request among `urls`."""
    return parse_qs(urlsplit([u for u in urls if "/chat-stream" in u][-1]).query)


def assert_complete(state: dict[str, Any]) -> None:
    assert state["state"] == "done", state.get("error")
    assert state["error"] is None
    assert state["answer"].strip()
    assert len(state["sources"]) >= 1
    assert state["done"]["done"] is True
    assert state["done"]["sequenceNumber"] == state["chunks"]


def test_test_page_served_by_the_app_shows_a_complete_answer(
    page: Any, server: ServerProcess, problems: list[str]
) -> None:
    page.goto(server.url + "/sse-test")
    assert page.input_value("#backend-url") == server.url

    state = ask_on_test_page(page)

    assert_complete(state)
    assert state["gaps"] == 0 and state["reconnects"] == 0
    assert state["answer"] == ask(server.url, QUESTION).answer
    assert page.inner_text("#state") == "done"
    assert page.inner_text("#answer").strip()
    assert page.locator("#sources li").count() == len(state["sources"]) >= 1
    assert page.inner_text("#metric-gaps") == "0"
    assert int(page.inner_text("#metric-chunks")) == state["chunks"] > 1
    for metric in ("#metric-ttfc", "#metric-duration", "#metric-cps"):
        assert page.inner_text(metric) != "–", metric
    assert page.inner_text("#error-code") == ""
    # Citation markers [n] link to the n-th source.
    cites = page.locator("#answer a.cite")
    assert cites.count() >= 1
    href = cites.first.get_attribute("href")
    assert href and page.locator(href).count() == 1
    # The raw log starts hidden and lists every event.
    assert page.locator("#raw-log").is_hidden()
    page.click("#toggle-log")
    assert page.locator("#raw-log").is_visible()
    assert page.inner_text("#raw-log").count('"sequenceNumber"') >= state["chunks"]
    assert problems == []

    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        page.click("#toggle-log")
        page.click("#claims summary >> nth=0")  # one claim expanded to the passage behind it
        page.screenshot(path=str(SCREENSHOT), full_page=True)


def cited_segments(state: dict[str, Any]) -> tuple[list[dict[str, Any]], str, int]:
    """The answer's cited spans as the page kept them, checked against the sources they name; with the first
    claim's first cited passage and its source number."""
    segments = state["segments"]
    assert "".join(s["text"] for s in segments) == state["answer"]
    cited = [s for s in segments if s["citations"]]
    assert cited, "the answer cites nothing"
    for segment in cited:
        for citation in segment["citations"]:
            assert citation["citedText"] in state["sources"][citation["source"] - 1]["cited"]
    first = cited[0]["citations"][0]
    return cited, first["citedText"].strip(), first["source"]


def test_test_page_shows_the_passage_behind_each_claim(page: Any, server: ServerProcess) -> None:
    page.goto(server.url + "/sse-test")
    cited, passage, n = cited_segments(ask_on_test_page(page))

    claims = page.locator("#claims details.claim")
    assert claims.count() == len(cited)
    assert claims.first.locator(".claim-cited").is_hidden()
    claims.first.locator("summary").click()  # expand
    assert claims.first.locator(".claim-cited").first.is_visible()
    assert passage in claims.first.locator(".claim-cited").first.inner_text()
    assert page.inner_text("#claims summary >> nth=0") in cited[0]["text"].replace("**", "")
    # Hovering [n] in the answer shows what of source n was cited; the source lists it too.
    assert passage in (page.locator(f"#answer a.cite[data-source='{n}']").first.get_attribute("title") or "")
    assert passage in page.inner_text(f"#source-{n} .src-cited")


@pytest.mark.parametrize("framework", ["react", "vue"])
def test_framework_demo_shows_the_passage_behind_a_claim(
    page: Any, server: ServerProcess, page_origin: StaticServer, problems: list[str], framework: str
) -> None:
    page.goto(demo_url(page_origin, f"{framework}/index.html", server.url))
    cited, passage, n = cited_segments(snapshot(page))

    marks = page.locator("#answer mark.claim")
    assert marks.count() == len(cited)
    assert marks.first.inner_text() == cited[0]["text"]
    assert passage in (marks.first.get_attribute("title") or "")  # on hover
    assert page.locator(".claim-cited").count() == 0
    marks.first.click()  # expand
    note = page.locator(".claim-cited").first
    assert note.is_visible() and passage in note.inner_text()
    assert f"[{n}]" in note.inner_text()
    marks.first.click()
    assert page.locator(".claim-cited").count() == 0
    assert problems == []


def test_test_page_follow_up_continues_the_conversation_by_its_id(page: Any, server: ServerProcess) -> None:
    page.goto(server.url + "/sse-test")
    first = ask_on_test_page(page)
    assert_complete(first)
    cid = first["done"]["conversationId"]
    assert (first["conversationId"], first["turn"]) == (cid, 1)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    second = ask_on_test_page(page, FOLLOW_UP)

    assert_complete(second)
    params = chat_params(requests)
    assert params["query"] == [FOLLOW_UP] and params["conversation_id"] == [cid]
    assert "conversation_history" not in params  # the server supplies the earlier turns
    assert (second["conversationId"], second["turn"]) == (cid, 2)
    turns = stored_turns(server, cid)
    assert [(t["question"], t["answer"]) for t in turns] == [
        (QUESTION, first["answer"]),
        (FOLLOW_UP, second["answer"]),
    ]
    assert page.locator("#history .turn").count() == 2  # the conversation so far, above the question


def test_test_page_thumbs_under_each_answer_are_stored(
    page: Any, server: ServerProcess, problems: list[str]
) -> None:
    page.goto(server.url + "/sse-test")
    first = ask_on_test_page(page)
    assert page.locator("#rating").is_visible()
    refused = ask_on_test_page(page, TOO_LONG)
    assert refused["error"]["code"] == "query_too_long" and refused["turn"] is None
    assert page.locator("#rating").is_hidden()  # a refusal is no answer to rate
    second = ask_on_test_page(page, FOLLOW_UP)
    assert (second["conversationId"], second["turn"]) == (first["conversationId"], 2)

    page.click("#rate-down")  # under the answer
    page.wait_for_function("window.__zantara.rating === -1")
    assert page.get_attribute("#rate-down", "aria-pressed") == "true"
    page.click('#history .turn[data-turn="1"] .rate-up')  # under the first answer, in the conversation above
    page.wait_for_function("window.__zantara.history.some((t) => t.turn === 1 && t.rating === 1)")

    turns = stored_turns(server, first["conversationId"])
    assert [(t["question"], t["rating"]) for t in turns] == [(QUESTION, 1), (FOLLOW_UP, -1)]
    assert "Thanks: rating -1 stored for turn 2." in page.inner_text("#rating-note")
    assert problems == []


def test_test_page_stop_closes_the_stream(page: Any, server: ServerProcess) -> None:
    page.goto(server.url + "/sse-test")
    page.fill("#query", QUESTION)
    page.click("#ask")
    page.wait_for_function("window.__zantara.chunks >= 1")

    page.click("#stop")
    stopped = page.evaluate("window.__zantara")
    # Once the server has seen the reader leave, nothing more can reach the page.
    wait_until(lambda: metrics(server).get("zantara_stream_readers") == 0, timeout=10)
    later = page.evaluate("window.__zantara")

    assert stopped["state"] == "idle" and stopped["done"] is None
    assert later["chunks"] == stopped["chunks"], "events kept arriving after Stop"
    assert page.locator("#stop").is_disabled() and page.locator("#ask").is_enabled()


def test_test_page_markdown_is_escaped(page: Any, server: ServerProcess) -> None:
    page.goto(server.url + "/sse-test")
    markdown = (
        '# Title\n<img src=x onerror="alert(1)"> **bold** *it* `<b>` [1] [2]\n\n'
        "- one\n- [two](javascript:alert(1))\n\n[site](https://balizero.com/?a=1&b=2)"
    )
    html = page.evaluate("([md, n]) => window.__zantaraMarkdown(md, n)", [markdown, 1])

    assert "<img" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "<strong>bold</strong>" in html and "<em>it</em>" in html and "<code>&lt;b&gt;</code>" in html
    assert '<a class="cite" href="#source-1"' in html and '<span class="cite">[2]</span>' in html
    assert "<ul" in html and "<li>two" in html
    assert 'href="javascript' not in html
    assert 'href="https://balizero.com/?a=1&amp;b=2"' in html
    assert "<h3" in html


def test_test_page_lays_out_arabic_right_to_left(page: Any, server: ServerProcess) -> None:
    page.goto(server.url + "/sse-test")
    page.fill("#query", "كيف أؤسس شركة في بالي؟")
    assert page.evaluate("document.querySelector('#query').matches(':dir(rtl)')")
    page.fill("#query", "Bagaimana cara mendirikan PT PMA?")
    assert page.evaluate("document.querySelector('#query').matches(':dir(ltr)')")


def test_test_page_opened_from_disk_remembers_the_backend_url(page: Any, tmp_path: Path) -> None:
    copy = tmp_path / "SSE_TEST.html"
    shutil.copy(REPO / "SSE_TEST.html", copy)
    page.goto(copy.as_uri())
    assert page.input_value("#backend-url") == "http://127.0.0.1:8000"

    page.fill("#backend-url", "http://127.0.0.1:9999")
    page.dispatch_event("#backend-url", "change")
    page.reload()

    assert page.input_value("#backend-url") == "http://127.0.0.1:9999"


def test_test_page_opened_from_disk_explains_the_null_origin(
    page: Any, server: ServerProcess, tmp_path: Path
) -> None:
    # A file:// page sends `Origin: null`, which no exact-origin allowlist contains.
    copy = tmp_path / "SSE_TEST.html"
    shutil.copy(REPO / "SSE_TEST.html", copy)
    page.goto(copy.as_uri())
    page.fill("#backend-url", server.url)

    state = ask_on_test_page(page)

    assert state["state"] == "error" and state["chunks"] == 0
    assert state["error"]["code"] == "connection_failed"
    assert f"{server.url}/sse-test" in page.inner_text("#error-box")


def test_test_page_opened_from_disk_streams_when_file_origins_are_allowed(
    page: Any, kb_template: Path, tmp_path: Path, problems: list[str]
) -> None:
    copy = tmp_path / "SSE_TEST.html"
    shutil.copy(REPO / "SSE_TEST.html", copy)
    with ServerProcess(kb_template, CORS_ALLOW_FILE_ORIGIN="true", EXTRACTIVE_CHUNK_DELAY_MS="5") as dev:
        page.goto(copy.as_uri())
        page.fill("#backend-url", dev.url)
        page.dispatch_event("#backend-url", "change")
        state = ask_on_test_page(page)
    assert_complete(state)
    assert not problems


def test_plain_event_source_on_an_allowed_origin(
    page: Any, server: ServerProcess, page_origin: StaticServer, problems: list[str]
) -> None:
    page.goto(demo_url(page_origin, "vanilla/index.html", server.url))

    state = snapshot(page)

    assert state["state"] == "done", state.get("error")
    assert state["answer"] == ask(server.url, QUESTION).answer
    assert len(state["sources"]) >= 1 and state["done"]["done"] is True
    assert page.locator("#sources li").count() == len(state["sources"])
    assert problems == []


def test_unlisted_origin_is_blocked(page: Any, server: ServerProcess, unlisted_origin: StaticServer) -> None:
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if "/chat-stream" in r.url else None)

    page.goto(demo_url(unlisted_origin, "vanilla/index.html", server.url))
    state = snapshot(page)

    assert state["state"] == "error"
    assert state["error"]["code"] == "connection_failed"
    assert state["answer"] == "" and state["sources"] == [] and state["chunks"] == 0
    assert statuses in ([], [403])


@pytest.mark.parametrize("framework", ["react", "vue"])
def test_framework_demo_streams_a_complete_answer(
    page: Any, server: ServerProcess, page_origin: StaticServer, problems: list[str], framework: str
) -> None:
    page.goto(demo_url(page_origin, f"{framework}/index.html", server.url))

    state = snapshot(page)

    assert_complete(state)
    assert state["gaps"] == 0
    assert state["answer"] == ask(server.url, QUESTION).answer
    assert page.inner_text("#state") == "done"
    assert page.locator("#sources li").count() == len(state["sources"])
    assert state["history"] == [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": state["answer"],
            "conversationId": state["done"]["conversationId"],
            "turn": 1,
            "rating": None,
        },
    ]
    assert problems == []


@pytest.mark.parametrize("framework", ["react", "vue"])
def test_framework_demo_thumbs_under_each_answer_are_stored(
    page: Any, server: ServerProcess, page_origin: StaticServer, problems: list[str], framework: str
) -> None:
    requests: list[Any] = []
    page.on("request", lambda request: requests.append(request))
    page.goto(demo_url(page_origin, f"{framework}/index.html", server.url))
    first = snapshot(page)
    cid = first["done"]["conversationId"]
    assert (first["conversationId"], first["turn"]) == (cid, 1)
    refused = ask_in_demo(page, TOO_LONG)
    assert refused["error"]["code"] == "query_too_long" and refused["turn"] is None
    assert page.locator("#rating").count() == 0  # a refusal is no answer to rate
    second = ask_in_demo(page, FOLLOW_UP)
    assert_complete(second)
    assert (second["conversationId"], second["turn"]) == (cid, 2)
    params = chat_params([r.url for r in requests])
    assert params["conversation_id"] == [cid] and "conversation_history" not in params

    page.click("#rating .rate-down")  # under the answer
    page.wait_for_function("window.__zantara.rating === -1")
    assert page.get_attribute("#rating .rate-down", "aria-pressed") == "true"
    page.click('.turn[data-turn="1"] .rate-up')  # under the first answer, in the conversation above
    page.wait_for_function("window.__zantara.history.some((t) => t.turn === 1 && t.rating === 1)")

    turns = stored_turns(server, cid)
    assert [(t["question"], t["rating"]) for t in turns] == [(QUESTION, 1), (FOLLOW_UP, -1)]
    posts = [r for r in requests if r.url.endswith("/feedback") and r.method == "POST"]
    assert len(posts) == 2 and all(
        r.header_value("origin") == page_origin.origin for r in posts
    )  # CORS passed
    assert problems == []


@pytest.mark.parametrize("demo", ["react/index.html", "vue/index.html", "vanilla/index.html"])
def test_demo_reports_an_in_band_error(
    page: Any, server: ServerProcess, page_origin: StaticServer, demo: str
) -> None:
    page.add_init_script(TRACK_EVENT_SOURCES)
    page.goto(demo_url(page_origin, demo, server.url, question="x" * 5000))

    state = snapshot(page)

    assert state["state"] == "error"
    assert state["error"]["code"] == "query_too_long"
    assert state["error"]["message"] in page.inner_text("#error")
    assert page.get_attribute("#error", "data-code") == "query_too_long"
    # The EventSource was closed on the error event (CLOSED, not CONNECTING): no reconnect can follow.
    assert page.evaluate("window.__eventSources.map((source) => source.readyState)") == [2]
    assert page.evaluate("window.__zantara.state") == "error"


def test_node_eventsource_client(server: ServerProcess) -> None:
    clients = REPO / "tests" / "clients"
    require_node_modules(clients)
    url = server.url + "/bali-zero/chat-stream?" + urlencode({"query": QUESTION})

    out = subprocess.run(
        ["node", str(clients / "node_eventsource.mjs"), url, "--timeout", "30"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0] == {"type": "open"}
    events = [line["data"] for line in lines[1:]]
    texts = [e for e in events if "text" in e]
    assert texts and "sources" in events[-2] and events[-1]["done"] is True
    assert "".join(t["text"] for t in texts) == ask(server.url, QUESTION).answer
    assert all(line["id"].endswith(f":{n}") for n, line in enumerate(lines[1:], start=1))


def test_test_page_resumes_after_the_connection_is_cut(
    page: Any, server: ServerProcess, page_origin: StaticServer
) -> None:
    reference = ask(server.url, QUESTION).answer
    with TcpProxy(int(server.port)) as proxy:
        page.goto(page_origin.url("SSE_TEST.html"))
        page.fill("#backend-url", proxy.origin)
        proxy.cut_after_text_events(3)
        page.fill("#query", QUESTION)
        page.click("#ask")

        assert proxy.cut.wait(10), "the proxy never saw three text events"
        page.wait_for_function("window.__zantara.reconnects >= 1")
        partial = page.evaluate("window.__zantara")
        proxy.start()  # back on the same port: the browser's next retry carries Last-Event-ID
        state = snapshot(page)

    assert 1 <= partial["chunks"] <= 3 and partial["state"] == "connecting"
    assert_complete(state)
    assert state["answer"] == reference, "the resumed answer is not the whole answer exactly once"
    assert state["resumes"] == 1 and state["reconnects"] >= 1
    assert state["gaps"] == 0
    assert state["duplicates"] == 0, "the server regenerated the answer instead of resuming it"
    assert page.inner_text("#metric-resumes") == "1"
