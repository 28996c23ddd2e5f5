"""The console's user management, and who may not use it."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.support import PASSWORD, NamedUser, error_of

USERS = "/api/v1/admin/users"


async def test_admin_creates_lists_and_reads_users(
    client: httpx.AsyncClient, admin: NamedUser
) -> None:
    headers = await admin.login(client)
    created = await client.post(
        USERS,
        headers=headers,
        json={
            "username": "Kim.Minji",
            "password": "Seoul-tower-2026",
            "role": "agent",
            "display_name": "김민지 🌸",
        },
    )
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["username"] == "kim.minji"
    assert user["display_name"] == "김민지 🌸"
    assert user["role"] == "agent" and user["is_active"] and not user["must_change_password"]
    assert user["created_by"] == f"user:{admin.id}"
    assert user.pop("temporary_password") is None  # a password was given: nothing to show
    fetched = await client.get(f"{USERS}/{user['id']}", headers=headers)
    assert fetched.json() == user
    login = await client.post(
        "/api/v1/auth/login", json={"username": "kim.minji", "password": "Seoul-tower-2026"}
    )
    assert login.status_code == 200


async def test_list_searches_filters_and_pages(client: httpx.AsyncClient, admin: NamedUser) -> None:
    headers = await admin.login(client)
    for n in range(7):
        response = await client.post(
            USERS,
            headers=headers,
            json={
                "username": f"member{n}",
                "password": PASSWORD,
                "role": "member",
                "display_name": f"회원 {n}",
            },
        )
        assert response.status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, "q": "member"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(USERS, headers=headers, params=params)).json()
        seen += [u["username"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"member{n}" for n in range(7)]
    by_name = (await client.get(USERS, headers=headers, params={"q": "회원 3"})).json()
    assert [u["username"] for u in by_name["items"]] == ["member3"]
    admins = (await client.get(USERS, headers=headers, params={"role": "admin"})).json()
    assert [u["username"] for u in admins["items"]] == [admin.username]
    wildcard = (await client.get(USERS, headers=headers, params={"q": "%"})).json()
    assert wildcard["items"] == []


@pytest.mark.parametrize("raw", [b"garbage!", b"u" + b"9" * 30, b"u-5", b"\xff\xfe"])
async def test_bad_or_forged_cursor_is_a_clear_422(
    client: httpx.AsyncClient, admin: NamedUser, raw: bytes
) -> None:
    headers = await admin.login(client)
    cursor = raw.decode() if raw == b"garbage!" else base64.urlsafe_b64encode(raw).decode()
    response = await client.get(USERS, headers=headers, params={"cursor": cursor})
    assert response.status_code == 422
    assert error_of(response)["field"] == "cursor"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "ab", "password": PASSWORD}, "username"),
        ({"username": "has space", "password": PASSWORD}, "username"),
        ({"username": "newbie", "password": "short"}, "password"),
        ({"username": "newbie", "password": "newbie-is-me-1"}, "password"),
        ({"username": "newbie", "password": "password123456"}, "password"),
        ({"username": "newbie", "password": "x" * 129}, "password"),
        ({"username": "newbie", "password": PASSWORD, "role": "root"}, "role"),
        ({"username": "newbie", "password": PASSWORD, "display_name": "a\u0000b"}, "display_name"),
        ({"username": "newbie", "password": PASSWORD, "is_admin": True}, "is_admin"),
        ({"password": PASSWORD}, "username"),
    ],
)
async def test_bad_user_input_is_422_naming_the_field(
    client: httpx.AsyncClient, admin: NamedUser, body, field
) -> None:
    headers = await admin.login(client)
    response = await client.post(USERS, headers=headers, json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field
    listed = (await client.get(USERS, headers=headers)).json()["items"]
    assert [u["username"] for u in listed] == [admin.username]


async def test_taken_username_is_409(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser
) -> None:
    headers = await admin.login(client)
    response = await client.post(
        USERS, headers=headers, json={"username": "ALICE", "password": PASSWORD}
    )
    assert response.status_code == 409
    assert error_of(response)["code"] == "username_taken"


async def test_admin_changes_name_role_and_state(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser
) -> None:
    headers = await admin.login(client)
    response = await client.patch(
        f"{USERS}/{alice.id}", headers=headers, json={"display_name": "앨리스", "role": "agent"}
    )
    assert response.status_code == 200
    assert response.json()["display_name"] == "앨리스"
    assert response.json()["role"] == "agent"
    assert response.json()["updated_by"] == f"user:{admin.id}"
    missing = await client.patch(f"{USERS}/999999", headers=headers, json={"role": "agent"})
    assert missing.status_code == 404


async def test_reset_password_with_given_password(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser
) -> None:
    headers = await admin.login(client)
    alice_headers = await alice.login(client)
    response = await client.post(
        f"{USERS}/{alice.id}/password", headers=headers, json={"password": "Temporary-pass-77"}
    )
    assert response.status_code == 200
    assert response.json()["temporary_password"] is None
    assert response.json()["user"]["must_change_password"] is True
    assert (await client.get("/api/v1/me", headers=alice_headers)).status_code == 401
    login = await client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": "Temporary-pass-77"}
    )
    assert login.status_code == 200


async def test_admin_cannot_lock_themselves_or_the_system_out(
    client: httpx.AsyncClient, admin: NamedUser
) -> None:
    headers = await admin.login(client)
    for change in ({"role": "member"}, {"is_active": False}):
        response = await client.patch(f"{USERS}/{admin.id}", headers=headers, json=change)
        assert response.status_code == 409
        assert error_of(response)["code"] == "self_lockout"
    reset = await client.post(f"{USERS}/{admin.id}/password", headers=headers, json={})
    assert reset.status_code == 409
    assert (await client.get("/api/v1/me", headers=headers)).json()["role"] == "admin"


async def test_last_admin_cannot_be_demoted_by_another_admin(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser
) -> None:
    headers = await admin.login(client)
    await client.patch(f"{USERS}/{alice.id}", headers=headers, json={"role": "admin"})
    alice_headers = await alice.login(client)
    first = await client.patch(
        f"{USERS}/{admin.id}", headers=alice_headers, json={"role": "member"}
    )
    assert first.status_code == 200
    # alice is now the only admin; nobody else can remove her.
    second = await client.patch(
        f"{USERS}/{alice.id}", headers=alice_headers, json={"is_active": False}
    )
    assert second.status_code == 409


ADMIN_ROUTES = [
    ("GET", USERS, None),
    ("POST", USERS, {"username": "mallory", "password": PASSWORD, "role": "admin"}),
    ("GET", USERS + "/{id}", None),
    ("PATCH", USERS + "/{id}", {"role": "admin"}),
    ("POST", USERS + "/{id}/password", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_admin_routes_refuse_anonymous_members_and_agents(
    client: httpx.AsyncClient,
    alice: NamedUser,
    agent: NamedUser,
    admin: NamedUser,
    method,
    path,
    body,
) -> None:
    url = path.format(id=alice.id)
    anonymous = await client.request(method, url, json=body)
    assert anonymous.status_code == 401
    for user in (alice, agent):
        response = await client.request(method, url, json=body, headers=await user.login(client))
        assert response.status_code == 403, (user.username, response.text)
        assert error_of(response)["code"] == "admin_required"
    # Nothing changed: alice is still a member with her own password.
    me = await client.get("/api/v1/me", headers=await alice.login(client))
    assert me.json()["role"] == "member"
    listed = await client.get(USERS, headers=await admin.login(client))
    assert "mallory" not in [u["username"] for u in listed.json()["items"]]
