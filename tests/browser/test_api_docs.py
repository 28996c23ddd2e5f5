"""The API reference at /docs: served by cmschat itself, no CDN, under the strict CSP."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import Web

# Reported by the page itself: CSP violations do not always reach the console.
WATCH_CSP = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


async def test_the_api_reference_lists_the_operations_without_a_cdn_or_csp_violation(
    web: Web,
) -> None:
    page = await web.page()
    await page.add_init_script(WATCH_CSP)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type in ("error", "warning") else None)
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda r: elsewhere.append(r.url) if not r.url.startswith(web.url) else None,
    )

    response = await page.goto(web.url + "/docs")
    assert response is not None and response.ok
    assert "script-src" not in response.headers["content-security-policy"]  # default-src 'self'
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("cmschat")
    send = page.locator(".opblock-post", has_text="/api/v1/rooms/{room_id}/messages")
    await expect(send).to_be_visible()
    assert await page.locator(".opblock").count() >= 40  # every route, not a placeholder

    await web.screenshot(page, "api-docs")
    await send.locator(".opblock-summary").first.click()  # expands: parameters, schemas
    await expect(send.locator(".opblock-body")).to_be_visible()
    await expect(send.locator("select").first).to_be_visible()  # arrow icon: a file, not data:

    assert elsewhere == []
    assert await page.evaluate("window.cspViolations") == []
    assert console == [], console
    assert page.errors == []  # type: ignore[attr-defined]


async def test_the_page_and_its_files_need_no_sign_in(web: Web) -> None:
    page = await web.page()
    for path in ("/docs/", "/vendor/swagger-ui/swagger-ui-bundle.js", "/api/v1/openapi.json"):
        response = await page.request.get(web.url + path)
        assert response.status == 200, path
