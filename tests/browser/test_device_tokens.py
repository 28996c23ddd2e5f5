"""The web client keeps a device token, so a stranger's guessing does not lock it out."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import expect

from tests.browser.conftest import Web
from tests.support import NamedUser


async def test_a_browser_that_signed_in_before_gets_in_while_strangers_are_locked_out(
    web: Web, alice: NamedUser
) -> None:
    page = await web.page()
    await web.sign_in(page, alice.username, alice.password)
    await expect(page.locator(".connection")).to_have_attribute("data-state", "connected")
    stored = await page.evaluate("JSON.parse(localStorage.getItem('cmschat.devices'))")
    assert list(stored) == ["alice"] and stored["alice"].startswith("d1.")
    await page.evaluate("localStorage.removeItem('cmschat.token')")  # signed out

    async with httpx.AsyncClient(base_url=web.url) as stranger:
        for n in range(web.settings.auth.max_failures_per_account):
            guess = {"username": "alice", "password": f"guess-{n:04}"}
            assert (await stranger.post("/api/v1/auth/login", json=guess)).status_code == 401

    elsewhere = await web.page()  # a browser alice never used: locked like the stranger
    await web.sign_in(elsewhere, alice.username, alice.password)
    await expect(elsewhere.locator("[role=alert]")).to_contain_text(re.compile("too many", re.I))
    await web.sign_in(page, " Alice", alice.password)
    await expect(page.locator(".connection")).to_have_attribute("data-state", "connected")
    assert page.errors == []  # type: ignore[attr-defined]
