"""Notices: drafts, publishing to everyone or some rooms, sanitised rich text, who sees what."""

from __future__ import annotations

import httpx

from tests.support import NamedUser, error_of

ADMIN = "/api/v1/admin/notices"


async def room(client: httpx.AsyncClient, owner: dict[str, str], name: str) -> int:
    response = await client.post(
        "/api/v1/rooms", json={"kind": "group", "name": name, "member_ids": []}, headers=owner
    )
    room_id: int = response.json()["id"]
    return room_id


async def visible(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    response = await client.get("/api/v1/notices", headers=headers)
    assert response.status_code == 200
    return [n["title"] for n in response.json()["items"]]


async def test_drafts_are_private_until_published_and_gone_when_unpublished(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser
) -> None:
    a, headers = await alice.login(client), await admin.login(client)
    created = await client.post(
        ADMIN, json={"title": "점검 안내", "body_html": "<p>일요일 02:00</p>"}, headers=headers
    )
    assert created.status_code == 201
    notice = created.json()
    assert (notice["state"], notice["room_ids"], notice["published_at"]) == ("draft", None, None)
    assert await visible(client, a) == []

    published = await client.post(f"{ADMIN}/{notice['id']}/publish", headers=headers)
    assert published.json()["state"] == "published"
    assert await visible(client, a) == ["점검 안내"]
    again = await client.post(f"{ADMIN}/{notice['id']}/publish", headers=headers)
    assert again.status_code == 409

    await client.post(f"{ADMIN}/{notice['id']}/unpublish", headers=headers)
    assert await visible(client, a) == []


async def test_targeted_notices_reach_only_their_rooms(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, bob: NamedUser
) -> None:
    a, b, headers = await alice.login(client), await bob.login(client), await admin.login(client)
    alices_room = await room(client, a, "alice only")
    notice = (
        await client.post(
            ADMIN,
            json={"title": "for one room", "body_html": "<p>hi</p>", "room_ids": [alices_room]},
            headers=headers,
        )
    ).json()
    await client.post(f"{ADMIN}/{notice['id']}/publish", headers=headers)
    assert await visible(client, a) == ["for one room"]
    assert await visible(client, b) == []

    unknown = await client.post(
        ADMIN, json={"title": "x", "body_html": "<p>x</p>", "room_ids": [999]}, headers=headers
    )
    assert unknown.status_code == 422
    assert "999" in error_of(unknown)["message"]


async def test_rich_text_is_sanitised_on_the_server(
    client: httpx.AsyncClient, admin: NamedUser
) -> None:
    headers = await admin.login(client)
    body = (
        '<h2>Title</h2><p onclick="x()">Hello <script>alert(1)</script><b>bold</b>'
        '<a href="javascript:alert(1)">bad</a> <a href="https://example.com">good</a></p>'
        '<img src=x onerror="alert(1)"><style>p{}</style>'
    )
    notice = (
        await client.post(ADMIN, json={"title": "t", "body_html": body}, headers=headers)
    ).json()
    html = notice["body_html"]
    for bad in ("script", "onclick", "onerror", "javascript:", "<img", "<style"):
        assert bad not in html
    assert "<h2>Title</h2>" in html and "<b>bold</b>" in html
    assert 'href="https://example.com"' in html and "noopener" in html
    empty = await client.post(
        ADMIN, json={"title": "t", "body_html": "<script>x</script>"}, headers=headers
    )
    assert empty.status_code == 422


async def test_only_admins_manage_notices(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, agent: NamedUser
) -> None:
    headers = await admin.login(client)
    notice = (
        await client.post(ADMIN, json={"title": "t", "body_html": "<p>x</p>"}, headers=headers)
    ).json()
    calls = [
        ("GET", ADMIN, None),
        ("POST", ADMIN, {"title": "t", "body_html": "<p>x</p>"}),
        ("GET", f"{ADMIN}/{notice['id']}", None),
        ("PATCH", f"{ADMIN}/{notice['id']}", {"title": "u"}),
        ("POST", f"{ADMIN}/{notice['id']}/publish", None),
        ("POST", f"{ADMIN}/{notice['id']}/unpublish", None),
        ("DELETE", f"{ADMIN}/{notice['id']}", None),
    ]
    for user in (alice, agent):
        user_headers = await user.login(client)
        for method, path, body in calls:
            response = await client.request(method, path, json=body, headers=user_headers)
            assert response.status_code == 403, (user.username, method, path)
    assert (await client.get("/api/v1/notices")).status_code == 401
    listed = await client.get(ADMIN, headers=headers)
    assert [n["state"] for n in listed.json()["items"]] == ["draft"]
