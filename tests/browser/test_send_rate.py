"""The client when the server says "too fast": a short message, and the text is kept."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from cmschat.settings import ChatSettings, Settings
from tests.browser.conftest import Web
from tests.browser.test_client import message, room_with, signed_in
from tests.support import NamedUser


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A slow rate (one message per 10 s after a burst of 2), so the third send is refused."""
    return settings.model_copy(update={"chat": ChatSettings(send_rate=0.1, send_burst=2)})


async def test_a_rate_limited_send_says_so_and_keeps_the_text(
    web: Web, alice: NamedUser, bob: NamedUser
) -> None:
    await room_with(web, alice, bob, name="fast")
    page = await signed_in(web, alice)
    await page.locator(".room-entry", has_text="fast").click()
    for text in ("one", "two"):
        await page.fill("#composer-input", text)
        await page.keyboard.press("Enter")
        await expect(message(page, text)).to_be_visible()

    await page.fill("#composer-input", "three, too soon")
    await page.keyboard.press("Enter")
    error = page.locator(".composer .form-error")
    await expect(error).to_have_text(re.compile(r"You are sending too fast\. Wait \d+ s"))
    await expect(page.locator("#composer-input")).to_have_value("three, too soon")
    await expect(message(page, "three, too soon")).to_have_count(0)
    assert not page.errors  # type: ignore[attr-defined]
