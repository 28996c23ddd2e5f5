"""The web client and console in a real browser (headless Chromium)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from playwright.async_api import Page, expect

from tests.browser.conftest import Web
from tests.browser.relay import relay_to
from tests.support import NamedUser

PAYLOADS = Path(__file__).resolve().parents[1] / "data" / "xss" / "xss_payloads_quick.txt"


async def room_with(web: Web, owner: NamedUser, *members: NamedUser, name: str = "team") -> int:
    async with httpx.AsyncClient(base_url=web.url) as http:
        headers = await owner.login(http)
        response = await http.post(
            "/api/v1/rooms",
            json={"kind": "group", "name": name, "member_ids": [m.id for m in members]},
            headers=headers,
        )
        room_id: int = response.json()["id"]
        return room_id


async def send_api(web: Web, user: NamedUser, room: int, content: str) -> None:
    async with httpx.AsyncClient(base_url=web.url) as http:
        headers = await user.login(http)
        response = await http.post(
            f"/api/v1/rooms/{room}/messages", json={"content": content}, headers=headers
        )
        assert response.status_code == 201, response.text


async def signed_in(web: Web, user: NamedUser, **size: int) -> Page:
    page = await web.page(**size)
    await web.sign_in(page, user.username, user.password)
    await expect(page.locator(".connection")).to_have_attribute("data-state", "connected")
    return page


def message(page: Page, text: str):  # type: ignore[no-untyped-def]
    return page.locator(".message-body", has_text=text)


async def test_two_users_chat_in_real_time(web: Web, alice: NamedUser, bob: NamedUser) -> None:
    await room_with(web, alice, bob, name="planning")
    a, b = await signed_in(web, alice), await signed_in(web, bob)

    await a.fill("#composer-input", "회의는 3시에 해요 **확정**")
    await a.keyboard.press("Enter")
    await expect(message(b, "회의는 3시에 해요")).to_be_visible()
    await expect(b.locator(".message-body strong", has_text="확정")).to_be_visible()

    await b.fill("#composer-input", "좋아요 @ali")
    await expect(b.locator("#suggestions li", has_text="@alice")).to_be_visible()
    await b.keyboard.press("Enter")  # picks the suggestion
    await b.keyboard.press("Enter")  # sends
    await expect(message(a, "좋아요 @alice")).to_be_visible()
    await web.screenshot(a, "chat")
    mobile = await signed_in(web, bob, width=390, height=844)
    await expect(message(mobile, "회의는 3시에 해요")).to_be_visible()
    await web.screenshot(mobile, "chat-phone")
    assert a.errors == [] and b.errors == []  # type: ignore[attr-defined]


async def test_a_file_is_uploaded_and_downloaded(
    web: Web, alice: NamedUser, bob: NamedUser, tmp_path: Path
) -> None:
    await room_with(web, alice, bob)
    a, b = await signed_in(web, alice), await signed_in(web, bob)
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")

    await a.set_input_files("#file-input", str(report))
    await expect(a.locator(".pending-files li", has_text="report.pdf")).to_be_visible()
    await a.fill("#composer-input", "the report")
    await a.keyboard.press("Enter")

    download_button = b.locator(".download", has_text="report.pdf")
    await expect(download_button).to_be_visible()
    async with b.expect_download() as info:
        await download_button.click()
    download = await info.value
    assert download.suggested_filename == "report.pdf"
    saved = await asyncio.to_thread(Path(await download.path()).read_bytes)
    assert saved == report.read_bytes()


async def test_xss_payloads_show_as_text_and_run_nothing(
    web: Web, alice: NamedUser, bob: NamedUser
) -> None:
    payloads = [line for line in PAYLOADS.read_text().splitlines() if line.strip()]
    room = await room_with(web, alice, bob)
    for payload in payloads[:-1]:
        await send_api(web, alice, room, payload)
    b = await signed_in(web, bob)
    a = await signed_in(web, alice)
    await a.fill("#composer-input", payloads[-1])  # one through the composer too
    await a.keyboard.press("Enter")

    messages = b.locator(".message")
    await expect(messages).to_have_count(len(payloads))
    injected = await b.evaluate(
        """() => [...document.querySelectorAll('.messages *')].filter((el) =>
            ['SCRIPT', 'IFRAME', 'OBJECT', 'EMBED', 'SVG', 'IMG', 'STYLE', 'FORM', 'INPUT']
              .includes(el.tagName.toUpperCase()) && !el.classList.contains('preview')
            || [...el.attributes].some((attr) => /^on/i.test(attr.name)
              || /javascript:/i.test(attr.value))).length"""
    )
    assert injected == 0
    assert b.dialogs == [] and a.dialogs == []  # type: ignore[attr-defined]
    # The text is shown, not swallowed: "alert" appears as typed in every payload using it.
    shown = await b.locator(".messages").inner_text()
    assert shown.count("alert") >= sum("alert" in p for p in payloads) - 2


async def test_a_published_notice_appears_without_reload(
    web: Web, admin: NamedUser, alice: NamedUser
) -> None:
    member = await signed_in(web, alice)
    console = await web.page()
    await web.sign_in(console, admin.username, admin.password, "/console.html#notices")
    await console.fill("#notice-title", "Maintenance on Sunday")
    await console.click(".editor")
    await console.keyboard.type("The server restarts at 02:00.")
    await console.click("form.card button.primary")
    await console.click("button:text('publish')")
    await expect(console.locator("td", has_text="published")).to_be_visible()

    banner = member.locator(".notice-banner")
    await expect(banner).to_contain_text("Maintenance on Sunday")
    await expect(banner).to_contain_text("The server restarts at 02:00.")
    await web.screenshot(member, "chat-notice")


async def test_the_client_reconnects_after_a_restart_and_shows_what_it_missed(
    web: Web, alice: NamedUser, bob: NamedUser
) -> None:
    room = await room_with(web, alice, bob)
    b = await signed_in(web, bob)
    await send_api(web, alice, room, "before the restart")
    await expect(message(b, "before the restart")).to_be_visible()

    await web.stop()
    await expect(b.locator(".connection")).to_have_attribute("data-state", "reconnecting")
    await web.start()
    await send_api(web, alice, room, "sent while you were away")
    await expect(message(b, "sent while you were away")).to_be_visible(timeout=30_000)
    await expect(b.locator(".connection")).to_have_attribute("data-state", "connected")
    await expect(message(b, "before the restart")).to_have_count(1)


async def test_a_link_cut_without_a_close_is_given_up_and_the_client_resumes(
    web: Web, alice: NamedUser, bob: NamedUser
) -> None:
    # The server's host cut off from the network: the socket stays open and silent (behind
    # nginx, for an hour). The page used to wait on it, connected in name, receiving nothing.
    room = await room_with(web, alice, bob)
    async with relay_to(web.port) as relay:
        b = await web.page()
        await b.goto(relay.url + "/")
        await b.fill("#username", bob.username)
        await b.fill("#password", bob.password)
        await b.click("button[type=submit]")
        await expect(b.locator(".connection")).to_have_attribute("data-state", "connected")
        assert relay.cut_websockets() == 1
        relay.cut_next = 1  # and the first reconnection hangs, connecting, for ever

        await send_api(web, alice, room, "sent while the link was cut")
        # The browser is back online (or the tab shown again): it checks the link at once;
        # the ping goes unanswered, so within 10 s it gives the socket up; the next one
        # never opens, and is given up 10 s later too; the third resumes.
        await b.evaluate("window.dispatchEvent(new Event('online'))")
        await expect(message(b, "sent while the link was cut")).to_be_visible(timeout=40_000)
        await expect(b.locator(".connection")).to_have_attribute("data-state", "connected")
        assert relay.websockets_opened() == 3
        assert b.errors == []  # type: ignore[attr-defined]


async def test_the_console_is_for_admins_only(
    web: Web, admin: NamedUser, alice: NamedUser, agent: NamedUser
) -> None:
    console = await web.page()
    await web.sign_in(console, admin.username, admin.password, "/console.html")
    for page in (
        "dashboard",
        "users",
        "rooms",
        "moderation",
        "notices",
        "cannedReplies",
        "retention",
        "audit",
    ):
        await console.click(f"a[data-page={page}]")
        await expect(console.locator("[data-page] h1, .console-main h1")).to_be_visible()
        await expect(
            console.locator(".console-main table, .console-main .tiles").first
        ).to_be_visible()
        await expect(console.locator(".console-main .form-error:not(:empty)")).to_have_count(0)
        if page == "dashboard":  # the other pages: test_console_layout.py, with data
            await web.screenshot(console, f"console-{page}")
    assert console.errors == []  # type: ignore[attr-defined]

    for user in (alice, agent):
        refused = await web.page()
        await web.sign_in(refused, user.username, user.password, "/console.html")
        await expect(refused.locator("[role=alert]")).to_contain_text("administrators")
        await expect(refused.locator(".console-nav")).to_have_count(0)
