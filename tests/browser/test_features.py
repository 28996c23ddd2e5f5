"""More of the client in the browser: keyboard and Korean, canned replies, typing,
presence, edits, replies, deletes, images, search, channels, console actions."""

from __future__ import annotations

import io
import re

import httpx
from PIL import Image
from playwright.async_api import expect

from tests.browser.conftest import Web
from tests.browser.test_client import message, room_with, send_api, signed_in
from tests.support import NamedUser


async def test_keyboard_alone_and_korean(web: Web, alice: NamedUser, bob: NamedUser) -> None:
    await room_with(web, alice, bob, name="키보드")
    page = await web.page()
    await page.goto(web.url + "/")
    await expect(page.locator("#username")).to_be_focused()  # where the form puts it
    await page.keyboard.type(alice.username)
    await page.keyboard.press("Tab")
    await page.keyboard.type(alice.password)
    await page.keyboard.press("Enter")
    await expect(page.locator(".connection")).to_have_attribute("data-state", "connected")

    await page.select_option("select[aria-label=Language]", "ko")
    await expect(page.locator("button.primary", has_text="보내기")).to_be_visible()
    await expect(page.locator(".connection")).to_have_text("연결됨")
    room_button = page.locator(".room-entry", has_text="키보드")
    await room_button.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#composer-input")).to_be_focused()
    await page.keyboard.type("키보드만으로 보냈어요")
    await page.keyboard.press("Enter")
    await expect(message(page, "키보드만으로 보냈어요")).to_be_visible()
    await web.screenshot(page, "chat-korean")


async def test_an_agent_inserts_a_canned_reply_with_slash(
    web: Web, admin: NamedUser, agent: NamedUser, alice: NamedUser
) -> None:
    async with httpx.AsyncClient(base_url=web.url) as http:
        created = await http.post(
            "/api/v1/admin/canned-replies",
            json={"shortcut": "refund", "title": "Refunds", "body": "Refunds take **3 days**."},
            headers=await admin.login(http),
        )
        assert created.status_code == 201
    await room_with(web, agent, alice, name="support")
    page, customer = await signed_in(web, agent), await signed_in(web, alice)
    await page.fill("#composer-input", "/ref")
    await expect(page.locator("#suggestions li", has_text="/refund")).to_be_visible()
    await page.keyboard.press("Enter")
    await expect(page.locator("#composer-input")).to_have_value("Refunds take **3 days**.")
    await page.keyboard.press("Enter")
    await expect(customer.locator(".message-body strong", has_text="3 days")).to_be_visible()


async def test_typing_presence_edit_reply_and_delete(
    web: Web, alice: NamedUser, bob: NamedUser
) -> None:
    async with httpx.AsyncClient(base_url=web.url) as http:
        response = await http.post(
            "/api/v1/rooms",
            json={"kind": "direct", "member_ids": [bob.id]},
            headers=await alice.login(http),
        )
        assert response.status_code == 201
    a = await signed_in(web, alice)
    b = await signed_in(web, bob)
    await expect(a.locator(".room-entry .presence")).to_have_attribute("data-online", "true")

    await b.type("#composer-input", "typing slowly")
    await expect(a.locator(".typing")).to_have_text("Bob is typing…")
    await b.keyboard.press("Enter")
    await expect(message(a, "typing slowly")).to_be_visible()
    await expect(a.locator(".typing")).to_have_text("")

    await a.fill("#composer-input", "first version")
    await a.keyboard.press("Enter")
    own = a.locator(".message", has_text="first version")
    await own.locator("button", has_text="Edit").click()
    await a.fill("#composer-input", "second version")
    await a.keyboard.press("Enter")
    await expect(b.locator(".message", has_text="second version")).to_contain_text("(edited)")

    await (
        b.locator(".message", has_text="second version").locator("button", has_text="Reply").click()
    )
    await b.keyboard.type("replying to you")
    await b.keyboard.press("Enter")
    reply = a.locator(".message", has_text="replying to you")
    await expect(reply.locator(".reply-quote")).to_have_text("second version")

    delete = a.locator(".message", has_text="second version").locator("button", has_text="Delete")
    await delete.click()
    await expect(delete).to_have_text("Really delete?")
    await delete.click()
    await expect(
        b.locator(".message-body em", has_text="This message was deleted.")
    ).to_be_visible()
    await b.close()
    await expect(a.locator(".room-entry .presence")).to_have_attribute("data-online", "false")


async def test_images_preview_and_search_finds_messages(
    web: Web, alice: NamedUser, bob: NamedUser
) -> None:
    room = await room_with(web, alice, bob)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buffer, "PNG")
    a = await signed_in(web, alice)
    await a.set_input_files(
        "#file-input",
        files=[{"name": "red.png", "mimeType": "image/png", "buffer": buffer.getvalue()}],
    )
    await expect(a.locator(".pending-files li", has_text="red.png")).to_be_visible()
    await a.fill("#composer-input", "a red square")
    await a.keyboard.press("Enter")
    preview = a.locator("img.preview[alt='red.png']")
    await expect(preview).to_have_attribute("src", re.compile(r"^blob:"))
    assert await preview.evaluate("(img) => img.decode().then(() => img.naturalWidth)") == 40

    await send_api(web, bob, room, "분기 보고서는 금요일까지")
    await a.fill("#search", "보고서")
    await a.keyboard.press("Enter")
    await expect(a.locator(".search-hit")).to_have_count(1)
    await expect(a.locator(".search-hit")).to_contain_text("분기 보고서는 금요일까지")


async def test_public_channels_can_be_joined(web: Web, alice: NamedUser, bob: NamedUser) -> None:
    async with httpx.AsyncClient(base_url=web.url) as http:
        await http.post(
            "/api/v1/rooms",
            json={"kind": "channel", "name": "announcements", "member_ids": []},
            headers=await alice.login(http),
        )
    b = await signed_in(web, bob)
    await b.click("button:text('Channels')")
    await b.locator("dialog li", has_text="announcements").locator("button").click()
    await expect(b.locator(".room-entry", has_text="announcements")).to_be_visible()
    await expect(b.locator(".room-title")).to_have_text("announcements")


async def test_console_creates_users_and_moderates_with_a_reason(
    web: Web, admin: NamedUser, alice: NamedUser, bob: NamedUser
) -> None:
    room = await room_with(web, alice, bob)
    await send_api(web, alice, room, "buy cheap watches now")
    console = await web.page()
    await web.sign_in(console, admin.username, admin.password, "/console.html#users")
    await console.fill("#new-username", "carol")
    await console.uncheck("#generate-password")
    await console.fill("#new-password", "Wintry-lantern-2026")
    await console.click("form.new-user button[type=submit]")
    await expect(console.locator("tbody tr", has_text="carol")).to_have_count(1)

    await console.click("a[data-page=moderation]")
    await console.fill(".console-main input[type=search]", "watches")
    await console.keyboard.press("Enter")
    row = console.locator("tr", has_text="buy cheap watches now")
    await row.locator("button", has_text="Delete").click()
    await expect(console.locator("[role=alert]", has_text="reason")).to_be_visible()
    await console.fill("#delete-reason", "advertising")
    await row.locator("button", has_text="Delete").click()
    await expect(console.locator("tr", has_text="buy cheap watches now")).to_have_count(0)
    await console.click("a[data-page=audit]")
    await expect(console.locator("td", has_text="message.deleted")).to_be_visible()
    await expect(console.locator("code", has_text="advertising")).to_be_visible()


async def test_first_sign_in_forces_a_new_password(
    web: Web, admin: NamedUser, alice: NamedUser
) -> None:
    async with httpx.AsyncClient(base_url=web.url) as http:
        reset = await http.post(
            f"/api/v1/admin/users/{alice.id}/password", json={}, headers=await admin.login(http)
        )
        one_time = reset.json()["temporary_password"]
    page = await web.page()
    await web.sign_in(page, alice.username, one_time)
    await expect(page.locator("h1", has_text="Choose a new password")).to_be_visible()
    await page.fill("#fresh", "Brand-new-secret-77")
    await page.click("button[type=submit]")
    await expect(page.locator(".connection")).to_have_attribute("data-state", "connected")
    again = await web.page()
    await web.sign_in(again, alice.username, "Brand-new-secret-77")
    await expect(again.locator(".connection")).to_have_attribute("data-state", "connected")


async def test_unread_badges_and_last_messages_in_the_room_list(
    web: Web, alice: NamedUser, bob: NamedUser
) -> None:
    quiet = await room_with(web, alice, bob, name="quiet")
    busy = await room_with(web, alice, bob, name="busy")
    b = await signed_in(web, bob)
    await b.click(f'.room-entry[data-room-id="{quiet}"]')
    for n in range(3):
        await send_api(web, alice, busy, f"news {n}")
    entry = b.locator(f'.room-entry[data-room-id="{busy}"]')
    await expect(entry.locator(".badge")).to_have_text("3")
    await expect(entry.locator(".last-message")).to_have_text("news 2")
    await entry.click()
    await expect(entry.locator(".badge")).to_have_count(0)
    await expect(message(b, "news 0")).to_be_visible()
