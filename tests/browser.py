"""Browser-test plumbing: headless Debian Chromium via Playwright, a static page server, a cuttable proxy.

Playwright's own browser download is blocked here, so `launch_chromium` drives the system `/usr/bin/chromium`
(`scripts/install-browser.sh` installs it) with the pip wheel's bundled driver. Playwright gives every
launch a fresh temporary profile, which is the `--user-data-dir` isolation we want (it refuses that flag in
`args`). Sync API only: the browser tests are plain functions.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_PATH = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
REPO = Path(__file__).resolve().parent.parent
INSTALL_HINT = "run scripts/install-browser.sh"


def browser_unavailable_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright==1.65.2)"
    if not CHROMIUM_PATH.exists():
        return f"{CHROMIUM_PATH} is missing ({INSTALL_HINT})"
    return None


def require_browser() -> None:
    """Fail the calling test with an actionable reason when Chromium or Playwright is missing.

    A failure, not a skip: `scripts/test.sh` installs both, so a missing browser is a broken setup.
    """
    reason = browser_unavailable_reason()
    if reason:
        pytest.fail(reason)


def require_node_modules(directory: Path) -> None:
    if shutil.which("node") is None:
        pytest.fail("node is not installed")
    if not (directory / "node_modules").is_dir():
        pytest.fail(f"{directory.relative_to(REPO)}/node_modules is missing ({INSTALL_HINT})")


@contextlib.contextmanager
def launch_chromium(*, headless: bool = True) -> Iterator[Any]:
    """A Playwright `Browser` running Debian's Chromium headless with the project's flags."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM_PATH), args=list(CHROMIUM_ARGS), headless=headless
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def open_page(browser: Any, *, problems: list[str] | None = None, **context_options: Any) -> Iterator[Any]:
    """A `Page` in a fresh context (own storage and cache); page and console errors go to `problems`."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    if problems is not None:
        page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: problems.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None,
        )
    try:
        yield page
    finally:
        context.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def guess_type(self, path: Any) -> str:
        # A recorded chat stream saved as `<dir>/bali-zero/chat-stream` plays back as one (tests that need
        # a response the real server can no longer send, such as a link it now refuses).
        return "text/event-stream" if str(path).endswith("/chat-stream") else super().guess_type(path)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class StaticServer:
    """Serves a directory on a loopback port: the page origin that the CORS tests allow or do not allow."""

    def __init__(self, root: Path, port: int = 0) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.origin = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="static-server", daemon=True)

    def url(self, path: str) -> str:
        return self.origin + "/" + path.lstrip("/")

    def __enter__(self) -> StaticServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


_EVENT_END = re.compile(rb"\n\n(?:\r\n)?")  # an SSE event, plus the end of its HTTP chunk when present


class TcpProxy:
    """A loopback TCP proxy that can be killed and brought back on the same port, to break live streams.

    `cut_after_text_events(n)` arms a one-shot cut: once the n-th text event of an event stream has been
    forwarded whole, everything is closed (listener and connections) and `cut` is set. `start()` listens
    again on the same port. Forwarding whole events keeps the cut deterministic however the server batches.
    """

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = port or free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.cut = threading.Event()
        self._cut_after: int | None = None
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections = 0

    def cut_after_text_events(self, count: int) -> None:
        self.cut.clear()
        self._cut_after = count

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: rebinding right away works
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            _close(listener)
        for sock in sockets:
            _close(sock)

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self._maybe_cut), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, watch: Callable[[bytes], bool] | None) -> None:
        pending = b""
        headers_seen = False
        try:
            while data := src.recv(65536):
                if watch is None or self._cut_after is None:
                    dst.sendall(pending + data)
                    pending = b""
                    continue
                pending += data
                if not headers_seen:
                    end = pending.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    dst.sendall(pending[: end + 4])
                    pending, headers_seen = pending[end + 4 :], True
                while match := _EVENT_END.search(pending):
                    unit, pending = pending[: match.end()], pending[match.end() :]
                    dst.sendall(unit)
                    if watch(unit):
                        return
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)

    def _maybe_cut(self, unit: bytes) -> bool:
        if self._cut_after is None or b'"text":' not in unit:
            return False
        self._cut_after -= 1
        if self._cut_after > 0:
            return False
        self._cut_after = None
        self.stop()
        self.cut.set()
        return True


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
