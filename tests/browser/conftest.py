"""A real HTTP server and a real headless Chromium for the web page's tests.

The app runs in werkzeug's threaded server on a free loopback port with Celery
in eager mode (a job runs in the request thread that created it). Chromium is
Debian's ``/usr/bin/chromium`` driven by Playwright for Python; nothing is
downloaded. Without either, the tests skip with the reason printed (``-ra``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from tests.support.browser import LiveServer

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One browser for the session (each test gets a fresh context)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -r requirements-dev.txt)")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def live_app(eager_app: Callable[..., Flask]) -> Flask:
    return eager_app()


@pytest.fixture
def server(live_app: Flask) -> Iterator[LiveServer]:
    with LiveServer(live_app) as live:
        yield live


@pytest.fixture
def page(chromium: Any, server: LiveServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A desktop-sized page on the live server; console errors fail the test."""
    context = chromium.new_context(
        base_url=server.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_console(message: Any) -> None:
        # An API answering 4xx is the page's business (it shows the message);
        # Chromium logs it all the same. Anything else an error logs fails the test.
        url = (message.location or {}).get("url", "")
        if message.type != "error" or (
            "Failed to load resource" in message.text and "/api/" in url
        ):
            return
        problems.append(f"console {message.type}: {message.text} ({url})")

    page.on("console", on_console)
    page.problems = problems
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()
