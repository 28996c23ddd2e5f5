"""The web client on the session-ended (4001) and account-changed (4002) close codes."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, WebSocket, expect

from tests.browser.conftest import Web
from tests.support import NamedUser


async def watched_sign_in(web: Web, user: NamedUser) -> tuple[Page, list[WebSocket]]:
    """A signed-in, connected page and the WebSockets it opens from the start."""
    page = await web.page()
    sockets: list[WebSocket] = []
    page.on("websocket", lambda socket: sockets.append(socket))
    await web.sign_in(page, user.username, user.password)
    await expect(page.locator(".connection")).to_have_attribute("data-state", "connected")
    return page, sockets


async def test_signed_out_elsewhere_the_page_returns_to_sign_in_without_reconnecting(
    web: Web, alice: NamedUser
) -> None:
    page, sockets = await watched_sign_in(web, alice)
    token = await page.evaluate("localStorage.getItem('cmschat.token')")
    async with httpx.AsyncClient(base_url=web.url) as http:
        ended = await http.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
        assert ended.status_code == 204
    await expect(page.locator("#username")).to_be_visible()
    assert await page.evaluate("localStorage.getItem('cmschat.token')") is None
    assert len(sockets) == 1  # no reconnect with the dead token


async def test_a_role_change_reconnects_at_once(
    web: Web, admin: NamedUser, alice: NamedUser
) -> None:
    page, sockets = await watched_sign_in(web, alice)
    async with httpx.AsyncClient(base_url=web.url) as http:
        boss = await admin.login(http)
        async with page.expect_websocket(timeout=5_000):
            changed = await http.patch(
                f"/api/v1/admin/users/{alice.id}", headers=boss, json={"role": "agent"}
            )
            assert changed.status_code == 200
    await expect(page.locator(".connection")).to_have_attribute("data-state", "connected")
    await expect(page.locator("#username")).to_have_count(0)
    assert len(sockets) == 2
