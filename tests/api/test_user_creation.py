"""Creating users as operators expect: a generated one-time password, a forced change, the
password rules before the first attempt, and the reason the change screen gives."""

from __future__ import annotations

import json

import httpx

from cmschat.accounts import passwords
from cmschat.accounts import service as accounts
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_CLI, SYSTEM_SETUP
from tests.support import PASSWORD, NamedUser, audit_events, error_of

USERS = "/api/v1/admin/users"
LOGIN = "/api/v1/auth/login"


async def test_without_a_password_one_is_generated_shown_once_and_must_be_changed(
    client: httpx.AsyncClient, admin: NamedUser, context: AppContext
) -> None:
    headers = await admin.login(client)
    created = await client.post(
        USERS, headers=headers, json={"username": "minji", "display_name": "김민지"}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    one_time = body["temporary_password"]
    assert isinstance(one_time, str) and len(one_time) >= passwords.MIN_LENGTH
    assert body["display_name"] == "김민지"
    assert body["must_change_password"] and body["must_change_reason"] == "set_by_admin"
    # Shown once: reading the account again never shows it.
    fetched = await client.get(f"{USERS}/{body['id']}", headers=headers)
    assert "temporary_password" not in fetched.json()
    listed = (await client.get(USERS, headers=headers)).json()["items"]
    assert all("temporary_password" not in u for u in listed)

    login = await client.post(LOGIN, json={"username": "minji", "password": one_time})
    assert login.status_code == 200
    assert login.json()["user"]["must_change_reason"] == "set_by_admin"
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    refused = await client.get("/api/v1/rooms", headers=bearer)
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "password_change_required"
    (event,) = await audit_events(context.db, action="user.created", target_id=body["id"])
    assert json.loads(event.changes)["must_change_password"] is True
    assert one_time not in event.changes


async def test_a_given_password_keeps_the_apis_default_of_no_forced_change(
    client: httpx.AsyncClient, admin: NamedUser
) -> None:
    headers = await admin.login(client)
    given = await client.post(
        USERS, headers=headers, json={"username": "joon", "password": PASSWORD}
    )
    assert given.status_code == 201
    assert given.json()["temporary_password"] is None
    assert not given.json()["must_change_password"]
    assert given.json()["must_change_reason"] is None
    forced = await client.post(
        USERS,
        headers=headers,
        json={"username": "seo", "password": PASSWORD, "must_change_password": True},
    )
    assert forced.json()["must_change_password"]
    kept = await client.post(
        USERS, headers=headers, json={"username": "haneul", "must_change_password": False}
    )
    assert kept.json()["temporary_password"] and not kept.json()["must_change_password"]


async def test_creation_is_refused_to_non_admins_and_for_bad_input(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, agent: NamedUser
) -> None:
    for user in (alice, agent):
        refused = await client.post(
            USERS, headers=await user.login(client), json={"username": "intruder"}
        )
        assert refused.status_code == 403
    anonymous = await client.post(USERS, json={"username": "intruder"})
    assert anonymous.status_code == 401
    headers = await admin.login(client)
    weak = await client.post(
        USERS, headers=headers, json={"username": "hyun", "password": "hyun-password-1"}
    )
    assert weak.status_code == 422
    assert error_of(weak)["code"] == "weak_password"
    assert "username" in error_of(weak)["message"]
    odd = await client.post(
        USERS, headers=headers, json={"username": "hyun", "must_change_password": "maybe"}
    )
    assert odd.status_code == 422 and error_of(odd)["field"] == "must_change_password"
    taken = await client.post(USERS, headers=headers, json={"username": alice.username})
    assert taken.status_code == 409 and error_of(taken)["code"] == "username_taken"
    listed = (await client.get(USERS, headers=headers, params={"q": "intruder"})).json()
    assert listed["items"] == []


async def test_password_rules_are_served_as_enforced(client: httpx.AsyncClient) -> None:
    policy = (await client.get("/api/v1/auth/password-policy")).json()
    assert policy == {
        "min_length": passwords.MIN_LENGTH,
        "max_length": passwords.MAX_LENGTH,
        "min_distinct_characters": passwords.MIN_DISTINCT,
        "not_username": True,
        "not_common": True,
    }
    just_short = "x1-" + "abcdefghijk"[: policy["min_length"] - 4]
    passwords.check_password_policy("Q" + just_short, username="kim")  # exactly the minimum
    for bad in (just_short, "aaaabbbbcccc"[:2] * 6, "kim-" + just_short + "Q"):
        try:
            passwords.check_password_policy(bad, username="kim")
        except Exception as exc:
            assert getattr(exc, "code", "") == "weak_password"
        else:
            raise AssertionError(f"{bad!r} passed the policy")


async def test_the_change_screen_knows_a_first_start_password_from_an_admins(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    async with context.db.unit_of_work(SYSTEM_SETUP) as session:
        generated = await accounts.ensure_first_admin(
            session, bcrypt_rounds=context.settings.auth.bcrypt_rounds, clock=context.clock
        )
    assert generated is not None
    login = await client.post(LOGIN, json={"username": "admin", "password": generated})
    assert login.json()["user"]["must_change_reason"] == "first_start"
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    me = await client.get("/api/v1/me", headers=bearer)
    assert me.json()["must_change_reason"] == "first_start"

    async with context.db.unit_of_work(SYSTEM_CLI) as session:
        user = await accounts.get_user_by_name(session, username="admin")
        _, reset = await accounts.reset_password(
            session,
            acting_user=None,
            user_id=user.id,
            password=None,
            bcrypt_rounds=context.settings.auth.bcrypt_rounds,
            clock=context.clock,
        )
    assert reset is not None
    again = await client.post(LOGIN, json={"username": "admin", "password": reset})
    assert again.json()["user"]["must_change_reason"] == "set_by_admin"
    bearer = {"Authorization": f"Bearer {again.json()['access_token']}"}
    changed = await client.post(
        "/api/v1/me/password",
        headers=bearer,
        json={"current_password": reset, "new_password": "Autumn-harbour-2026"},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["must_change_reason"] is None
