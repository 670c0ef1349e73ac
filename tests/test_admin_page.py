"""The admin page (`/admin`, served by the service) in headless Chromium: sign in, upload a file, see it
listed, ask about it, delete it. `UPDATE_SCREENSHOT=1` refreshes docs/admin.png."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.admin import ADMIN_SECRET, QUOKKA, token
from tests.browser import REPO, launch_chromium, open_page, require_browser
from tests.harness import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = REPO / "docs" / "admin.png"
TIMEOUT_MS = 30_000


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
