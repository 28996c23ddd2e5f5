"""Browser tests: Debian's Chromium driven by Playwright, against a live cmschat.

Chromium comes from ``scripts/browser`` (the test command runs it); Playwright's own
browser download cannot work here. Browser tests run on SQLite only: they test the
client, and the database layer has its own tests on both backends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from cmschat.app import create_app
from cmschat.clock import SystemClock
from cmschat.settings import Settings
from tests import support
from tests.processes import free_port
from tests.realtime.wsclient import LiveServer, serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALLED = CHROMIUM.exists()
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
EXPECT_MS = 10_000


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only (see the module docstring)."""
    return support.copy_sqlite(sqlite_template, tmp_path / "browser.db")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium; the test fails (skips locally) when it is not installed."""
    if not CHROMIUM_INSTALLED:
        support.service_missing("Chromium (run scripts/browser)", FileNotFoundError(CHROMIUM))
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=FLAGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Web:
    """A live cmschat with the web client, and a way to open pages on it."""

    settings: Settings
    browser: Browser
    port: int
    shots: Path
    contexts: list[BrowserContext] = field(default_factory=list)
    server: LiveServer | None = None
    _running: contextlib.AbstractAsyncContextManager[LiveServer] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Serve on the fixed port (again, after a stop: clients reconnect to it)."""
        self._running = serve(create_app(self.settings, clock=SystemClock()), port=self.port)
        self.server = await self._running.__aenter__()

    async def stop(self) -> None:
        """Shut the server down as a restart would (WebSockets get 1012)."""
        if self._running is not None:
            running, self._running = self._running, None
            await running.__aexit__(None, None, None)

    async def page(self, *, width: int = 1280, height: int = 800) -> Page:
        context = await self.browser.new_context(
            viewport={"width": width, "height": height}, locale="en-US", accept_downloads=True
        )
        self.contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(EXPECT_MS)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        page.dialogs = dialogs  # type: ignore[attr-defined]
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.errors = errors  # type: ignore[attr-defined]
        return page

    async def sign_in(self, page: Page, username: str, password: str, path: str = "/") -> None:
        await page.goto(self.url + path)
        await page.fill("#username", username)
        await page.fill("#password", password)
        await page.click("button[type=submit]")

    async def screenshot(self, page: Page, name: str) -> None:
        await page.screenshot(path=str(self.shots / f"{name}.png"))


@pytest.fixture
async def web(settings: Settings, browser: Browser, tmp_path: Path) -> AsyncIterator[Web]:
    """cmschat on a fixed loopback port (so it can be restarted) with the web client."""
    # Screenshots go to docs/ when asked for (CMSCHAT_SCREENSHOTS=docs), else stay private.
    shots = SCREENSHOTS if os.environ.get("CMSCHAT_SCREENSHOTS") == "docs" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    state = Web(settings=settings, browser=browser, port=free_port(), shots=shots)
    await state.start()
    try:
        yield state
    finally:
        for context in state.contexts:
            await context.close()
        await state.stop()
