"""The admin page (`/admin`, served by the service) in headless Chromium: sign in, upload a file, see it
listed, ask about it, delete it; the knowledge-gaps view. `UPDATE_SCREENSHOT=1` refreshes docs/admin.png."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.admin import ADMIN_SECRET, QUOKKA, WOMBAT, bearer, token
from tests.browser import REPO, launch_chromium, open_page, require_browser
from tests.harness import ServerProcess
from tests.security import Reply, ask_sse

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = REPO / "docs" / "admin.png"
TIMEOUT_MS = 30_000
OFF_TOPIC = ["What's the capital of France?", "What is the capital city of France?"]
INDONESIAN = "Apa ibu kota negara Prancis?"
WOMBAT_QUESTION = "How much is the Wombat licence per year?"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    server = ServerProcess(AUTH_SECRET=ADMIN_SECRET, AUTO_INGEST="false")
    try:
        yield server.start(wait="/health")  # an empty knowledge base is never /ready
    finally:
        server.cleanup()


@pytest.fixture
def page() -> Iterator[Any]:
    require_browser()
    problems: list[str] = []
    with (
        launch_chromium() as browser,
        open_page(browser, problems=problems, viewport={"width": 1200, "height": 900}) as page,
    ):
        page.set_default_timeout(TIMEOUT_MS)
        yield page
    # The one failed request Chromium reports is the deliberate sign-in with a token without the scope.
    assert [p for p in problems if "status of 403" not in p] == []


def test_upload_list_ask_and_delete_in_the_browser(page: Any, server: ServerProcess, tmp_path: Path) -> None:
    page.goto(server.url + "/admin")
    assert page.locator("#workspace").is_hidden()
    page.fill("#token", token(scope=None))
    page.click("#sign-in")
    page.wait_for_function("document.getElementById('sign-in-error').textContent.length > 0")
    assert "admin" in page.inner_text("#sign-in-error")

    page.fill("#token", token())
    page.click("#sign-in")
    page.wait_for_selector("#workspace", state="visible")
    assert page.locator("#documents tr").count() == 0

    upload = tmp_path / "quokka-permit.md"
    upload.write_text(QUOKKA, encoding="utf-8")
    page.set_input_files("#file-input", str(upload))
    row = page.locator('#documents tr[data-id="uploads/quokka-permit.md"]')
    row.wait_for()
    assert "Quokka permit" in row.inner_text()
    assert page.locator('#results li[data-id="uploads/quokka-permit.md"] .status').inner_text() == "added"
    assert page.evaluate("document.getElementById('upload-progress').value") == 100

    page.fill("#question", "How much does the Quokka permit cost per day?")
    page.click("#ask")
    page.wait_for_function("window.__admin.asking === 'done'")
    assert "4,321" in page.inner_text("#answer")
    assert page.locator('#sources li[data-id="uploads/quokka-permit.md"]').count() == 1

    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(SCREENSHOT), full_page=True)

    row.locator("button.delete").click()
    page.wait_for_selector("#confirm-delete[open]")
    assert "uploads/quokka-permit.md" in page.inner_text("#confirm-title")
    page.click("#confirm-yes")
    row.wait_for(state="detached")
    assert page.locator("#documents tr").count() == 0

    page.click("#ask")
    page.wait_for_function("window.__admin.asking === 'done'")
    assert "4,321" not in page.inner_text("#answer")
    # Asked again without its document, the question has no source: the gaps view, read again, lists it.
    unanswered = page.locator(
        "#gaps-no_source tr.gap", has_text="How much does the Quokka permit cost per day?"
    )
    assert unanswered.locator(".group-count").inner_text() == "1"


def sources(reply: Reply) -> list[dict[str, Any]]:
    assert reply.status == 200 and reply.last.get("done") is True and "error" not in reply.last, (
        reply.payloads
    )
    found: list[dict[str, Any]] = next(p["sources"] for p in reply.payloads if "sources" in p)
    return found


def test_the_knowledge_gaps_view_shows_each_group_with_its_count_and_examples(
    page: Any, server: ServerProcess
) -> None:
    user = bearer(token("guest@example.com", scope=None))
    with httpx.Client(base_url=server.url, timeout=60) as client:
        added = client.post(
            "/admin/documents", files=[("file", ("wombat.md", WOMBAT.encode()))], headers=bearer()
        )
        assert added.status_code == 200
        for question in (*OFF_TOPIC, INDONESIAN):
            assert sources(ask_sse(client, question, headers=user)) == []
        wombat = ask_sse(client, WOMBAT_QUESTION, headers=user)
        assert sources(wombat)
        rating = {"conversation_id": wombat.last["conversationId"], "turn": 1, "rating": -1}
        assert client.post("/feedback", json=rating, headers=user).status_code == 204

        page.goto(server.url + "/admin")
        page.fill("#token", token())
        page.click("#sign-in")
        page.wait_for_function("window.__admin.gapsState === 'done'")
        no_source = page.locator("#gaps-no_source tr.gap")
        # The two English wordings are one group (its example the most recent); the Indonesian one its own.
        english = no_source.filter(has_text="capital")
        assert english.count() == 1 and english.locator(".group-count").inner_text() == "2"
        assert english.locator('li[data-lang="en"] .question').inner_text() == OFF_TOPIC[1]
        indonesian = no_source.filter(has_text=INDONESIAN)
        assert indonesian.locator('li[data-lang="id"] .question').inner_text() == INDONESIAN
        assert indonesian.locator(".group-count").inner_text() == "1"
        (rated,) = page.locator("#gaps-rated_down tr.gap").all()
        assert rated.locator('li[data-lang="en"] .question').inner_text() == WOMBAT_QUESTION
        assert page.locator("#gaps-no_source tr.gap", has_text=WOMBAT_QUESTION).count() == 0
        assert page.inner_text("#gaps-degraded") == "None."
        assert "(1 question(s) in 1 group(s))" in page.inner_text('.gap-kind[data-kind="rated_down"] h3')

        # Refresh reads the report again: one more paraphrase joins its group.
        sources(ask_sse(client, "Which city is the capital of France?", headers=user))
        page.click("#gaps-refresh")
        page.wait_for_function(
            "[...document.querySelectorAll('#gaps-no_source tr.gap')]"
            ".some((row) => row.textContent.includes('Which city is the capital of France?'))"
        )
        assert english.locator(".group-count").inner_text() == "3"
        assert client.delete("/admin/documents/uploads/wombat.md", headers=bearer()).status_code == 204
