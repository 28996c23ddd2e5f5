"""Creating and managing users in the console as an operator expects: the rules up front,
a generated one-time password shown once, a forced change that says why, refusals that
leave the page telling the truth."""

from __future__ import annotations

from playwright.async_api import expect

from cmschat.accounts import service as accounts
from cmschat.db.actors import SYSTEM_SETUP
from tests.browser.conftest import Web
from tests.browser.test_console_layout import open_console, visit
from tests.support import NamedUser


async def test_a_generated_one_time_password_is_shown_once_and_must_be_changed(
    web: Web, admin: NamedUser
) -> None:
    console, trouble = await open_console(web, admin, lang="ko", width=1280)
    rules = console.locator("#password-rules")
    await expect(rules).to_contain_text("10자 이상")  # before any attempt, from the server
    await expect(console.locator("#generate-password")).to_be_checked()
    await expect(console.locator("#must-change")).to_be_checked()
    await expect(console.locator("#new-password")).to_be_disabled()
    await console.fill("#new-username", "kim.minji")
    await console.fill("#new-display-name", "김민지")
    await console.select_option("#new-role", "agent")
    await console.click("form.new-user button[type=submit]")
    secret = console.locator(".one-time code")
    await expect(secret).to_be_visible()
    one_time = await secret.text_content()
    assert one_time and len(one_time) >= 10
    row = console.locator("tr[data-username='kim.minji']")
    await expect(row).to_contain_text("김민지")
    await expect(row).to_contain_text("비밀번호 변경 필요")
    await expect(row.locator("select")).to_have_value("agent")
    await visit(console, "rooms")
    await visit(console, "users")
    await expect(console.locator(".one-time code")).to_have_count(0)  # shown once
    assert trouble.console == [] and trouble.failed == []

    newcomer = await web.page()
    await web.sign_in(newcomer, "kim.minji", one_time)
    await expect(newcomer.locator("h1", has_text="Choose a new password")).to_be_visible()
    await expect(newcomer.locator(".auth")).to_contain_text("set by an administrator")
    await expect(newcomer.locator("#password-rules")).to_contain_text("At least 10 characters")
    await newcomer.fill("#fresh", "kim.minji-2026-autumn")
    await newcomer.click("button[type=submit]")
    await expect(newcomer.locator("[role=alert]")).to_have_text(
        "The password must not contain the username."
    )
    await newcomer.fill("#fresh", "Harbour-lights-2026")
    await newcomer.click("button[type=submit]")
    await expect(newcomer.locator(".connection")).to_have_attribute("data-state", "connected")


async def test_a_given_password_is_checked_against_the_rules_in_the_readers_language(
    web: Web, admin: NamedUser
) -> None:
    console, _ = await open_console(web, admin, lang="ko", width=390)
    await console.fill("#new-username", "joon")
    await console.uncheck("#generate-password")
    await console.uncheck("#must-change")
    await console.fill("#new-password", "password1234")
    await console.click("form.new-user button[type=submit]")
    await expect(console.locator(".console-main > .form-error")).to_have_text(
        "너무 흔하거나 단순한 비밀번호입니다. 다른 비밀번호를 고르세요."
    )
    await console.fill("#new-password", "Quiet-river-2026")
    await console.click("form.new-user button[type=submit]")
    row = console.locator("tr[data-username=joon]")
    await expect(row).to_be_visible()
    await expect(row).not_to_contain_text("비밀번호 변경 필요")
    await expect(console.locator(".one-time code")).to_have_count(0)
    await console.fill("#new-username", "joon")
    await console.click("form.new-user button[type=submit]")
    await expect(console.locator(".console-main > .form-error")).to_have_text(
        "이미 쓰이는 사용자 이름입니다."
    )


async def test_a_refused_self_demotion_puts_the_role_back(web: Web, admin: NamedUser) -> None:
    console, trouble = await open_console(web, admin, lang="en", width=1280)
    own = console.locator(f"tr[data-username='{admin.username}'] select")
    await own.select_option("member")
    await expect(console.locator(".console-main > .form-error")).to_have_text(
        "You cannot demote, disable or reset your own account here."
    )
    await expect(own).to_have_value("admin")
    assert [f for f in trouble.failed if "409" not in f] == []


async def test_the_canned_reply_shortcut_pattern_is_checked(web: Web, admin: NamedUser) -> None:
    console, trouble = await open_console(web, admin, lang="en", width=1280)
    await visit(console, "cannedReplies")
    shortcut = console.locator("#canned-shortcut")
    await shortcut.fill("Not OK")
    assert await shortcut.evaluate("(el) => el.validity.patternMismatch")
    await shortcut.fill("refund-2")
    assert not await shortcut.evaluate("(el) => el.validity.patternMismatch")
    await console.fill("#canned-title", "Refunds")
    await console.fill("#canned-text", "Refunds take 3 days.")
    await console.click("form button.primary")
    await expect(console.locator("td[data-label=Shortcut]")).to_have_text("/refund-2")
    assert trouble.console == [] and trouble.failed == []


async def test_the_first_admin_is_told_cmschat_generated_the_password(web: Web) -> None:
    assert web.server is not None
    context = web.server.app.state.context
    async with context.db.unit_of_work(SYSTEM_SETUP) as session:
        generated = await accounts.ensure_first_admin(
            session, bcrypt_rounds=context.settings.auth.bcrypt_rounds, clock=context.clock
        )
    assert generated is not None
    page = await web.page()
    await page.add_init_script("localStorage.setItem('cmschat.lang', 'ko')")
    await web.sign_in(page, accounts.FIRST_ADMIN, generated, "/console.html")
    hint = page.locator(".auth p").first
    await expect(hint).to_have_text(
        "cmschat이 처음 시작할 때 만든 비밀번호입니다. 계속하려면 새 비밀번호를 정하세요."
    )
    await expect(page.locator(".auth")).not_to_contain_text("관리자가 정한")
