"""The console's backups page in a real browser."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import Web
from tests.support import NamedUser


async def test_console_backs_up_and_drills_and_shows_rto_and_rpo(
    web: Web, admin: NamedUser
) -> None:
    console = await web.page()
    await web.sign_in(console, admin.username, admin.password, "/console.html#backups")
    await expect(console.locator(".card", has_text="No restore drill yet")).to_be_visible()
    await console.click("button:text('Back up now')")
    await expect(console.locator("tbody tr", has_text="-full")).to_have_count(1)
    await console.click("button:text('Run a restore drill')")
    drill = console.locator(".card", has_text="Last restore drill")
    await expect(drill).to_contain_text("OK")
    await expect(drill).to_contain_text("RTO")
    await expect(drill).to_contain_text("RPO")
    await expect(drill.locator("li", has_text="audit chain")).to_be_visible()
