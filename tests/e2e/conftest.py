"""A headless Chromium with the official Sentry browser SDKs, and pages to run them in.

``@sentry/browser`` and ``@sentry/react`` (with React) are bundled from the locked
npm packages in ``browser/`` by ``make test`` (``tests/e2e/setup.sh``). Chromium is
the system's (``/usr/bin/chromium``, or ``FAULTLENS_CHROMIUM``), driven by
Playwright; no browser is downloaded. The pages are served from their own loopback
port, so every request the SDK makes to Faultlens is cross-origin and the browser
enforces CORS on it.
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.conftest import free_port

BUNDLES = Path(__file__).parent / "browser" / "dist"
CHROMIUM = os.environ.get("FAULTLENS_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling out to Google's
# hosts, which a closed network refuses; --no-sandbox because tests may run as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Clinic portal</title>
<script src="/sentry.js"></script></head>
<body><h1>Appointments</h1>
<input id="patient" name="patient" value="Jane Roe">
<button id="book">Book</button>
</body></html>
"""
REACT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Clinic portal</title>
<script src="/sentry-react.js"></script></head>
<body><div id="app"></div></body></html>
"""
PAGES = {"/": PAGE, "/react": REACT_PAGE}
SCRIPTS = ("sentry.js", "sentry-react.js")


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        if self.path in PAGES:
            body, kind = PAGES[self.path].encode(), "text/html; charset=utf-8"
        elif name in SCRIPTS:
            body, kind = (BUNDLES / name).read_bytes(), "text/javascript"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # The tests read what reached Faultlens, not this server's log.


@pytest.fixture(scope="session")
def page_origin() -> Iterator[str]:
    """An origin on loopback serving the test page and the SDK bundle."""
    missing = [name for name in SCRIPTS if not (BUNDLES / name).is_file()]
    if missing:
        pytest.fail(
            f"the SDK bundles {missing} are missing in {BUNDLES}; build them with "
            "`make test`, or by running tests/e2e/setup.sh"
        )
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"no Chromium at {CHROMIUM}; install Debian's (apt-get install chromium) "
            "or set FAULTLENS_CHROMIUM"
        )
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def page(browser: Browser, page_origin: str) -> Iterator[Page]:
    """A fresh browser context on the test page, the SDK loaded, not yet set up."""
    context = browser.new_context()
    opened = context.new_page()
    opened.goto(page_origin)
    try:
        yield opened
    finally:
        context.close()
