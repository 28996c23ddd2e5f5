"""Signing in and out: tokens, expiry, throttling, forced password change, revocation."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
from sqlalchemy import func, select

from cmschat.accounts.models import AuthToken, LoginAttempt, User
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from tests.support import PASSWORD, NamedUser, error_of

LOGIN = "/api/v1/auth/login"


async def test_login_returns_a_bearer_token_that_opens_me(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    response = await client.post(LOGIN, json={"username": "Alice ", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert len(body["access_token"]) >= 43  # 256 bits in url-safe base64
    assert body["user"]["username"] == "alice"
    assert "password_hash" not in body["user"]
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == alice.id


async def test_only_a_keyed_hash_of_the_token_is_stored(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    token = (await alice.login(client))["Authorization"].split()[1]
    async with context.db.unit_of_work("system:test") as session:
        stored = (await session.scalars(select(AuthToken.token_hash))).all()
    assert len(stored) == 1
    assert token not in stored[0] and len(stored[0]) == 64


async def test_wrong_password_and_unknown_user_get_the_same_answer(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    wrong = await client.post(LOGIN, json={"username": "alice", "password": "not-the-password"})
    unknown = await client.post(LOGIN, json={"username": "nobody", "password": "whatever-x1"})
    assert wrong.status_code == unknown.status_code == 401
    assert error_of(wrong) == error_of(unknown)
    assert error_of(wrong)["code"] == "bad_credentials"


async def test_disabled_user_cannot_log_in_and_is_not_told_why(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser
) -> None:
    headers = await admin.login(client)
    await client.patch(
        f"/api/v1/admin/users/{alice.id}", json={"is_active": False}, headers=headers
    )
    response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 401
    assert error_of(response)["code"] == "bad_credentials"


async def test_every_attempt_is_recorded_with_who_when_and_where(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    await client.post(
        LOGIN,
        json={"username": "alice", "password": "wrong-password-1"},
        headers={"User-Agent": "pytest-agent"},
    )
    await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    async with context.db.unit_of_work("system:test") as session:
        attempts = (await session.scalars(select(LoginAttempt).order_by(LoginAttempt.id))).all()
    assert [(a.succeeded, a.reason) for a in attempts] == [(False, "bad_credentials"), (True, "ok")]
    assert all(a.user_id == alice.id and a.client_address == "203.0.113.7" for a in attempts)
    assert attempts[0].user_agent == "pytest-agent"
    assert attempts[0].created_at == context.clock.now()


async def test_failed_logins_per_account_are_throttled_then_released(
    client: httpx.AsyncClient, alice: NamedUser, clock: FakeClock, context: AppContext
) -> None:
    limit = context.settings.auth.max_failures_per_account
    for _ in range(limit):
        response = await client.post(LOGIN, json={"username": "alice", "password": "bad-guess-00"})
        assert response.status_code == 401
    # Even the right password is refused while locked: the attacker learns nothing.
    locked = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429
    assert error_of(locked)["code"] == "rate_limited"
    assert 0 < int(locked.headers["Retry-After"]) <= context.settings.auth.failure_window_seconds
    clock.advance(seconds=context.settings.auth.failure_window_seconds + 1)
    assert (
        await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    ).status_code == 200


async def test_failed_logins_per_address_are_throttled_across_usernames(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    for n in range(context.settings.auth.max_failures_per_address):
        await client.post(LOGIN, json={"username": f"guess{n}", "password": "bad-guess-00"})
    response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert "Retry-After" in response.headers


async def test_success_resets_the_account_count(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    limit = context.settings.auth.max_failures_per_account
    for _ in range(limit - 1):
        await client.post(LOGIN, json={"username": "alice", "password": "bad-guess-00"})
    await alice.login(client)
    for _ in range(limit - 1):
        await client.post(LOGIN, json={"username": "alice", "password": "bad-guess-00"})
    assert (
        await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    ).status_code == 200


async def test_logout_revokes_the_token(client: httpx.AsyncClient, alice: NamedUser) -> None:
    headers = await alice.login(client)
    other = await alice.login(client)
    assert (await client.post("/api/v1/auth/logout", headers=headers)).status_code == 204
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 401
    assert (await client.get("/api/v1/me", headers=other)).status_code == 200


async def test_token_expires_after_idle_time_but_activity_keeps_it(
    client: httpx.AsyncClient, alice: NamedUser, clock: FakeClock, context: AppContext
) -> None:
    idle = context.settings.auth.token_idle_minutes
    headers = await alice.login(client)
    clock.advance(minutes=idle - 5)
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    clock.advance(minutes=idle - 5)  # active 5 minutes ago in idle terms: still fine
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    clock.advance(minutes=idle + 1)
    response = await client.get("/api/v1/me", headers=headers)
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_token"


async def test_token_expires_at_its_absolute_limit_however_active(
    client: httpx.AsyncClient, alice: NamedUser, clock: FakeClock, context: AppContext
) -> None:
    response = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    hours = context.settings.auth.token_absolute_hours
    step = context.settings.auth.token_idle_minutes // 2
    expires_at = datetime.fromisoformat(response.json()["expires_at"])
    assert expires_at == clock.now() + timedelta(hours=hours)
    while clock.now() + timedelta(minutes=step) < expires_at:
        clock.advance(minutes=step)
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    clock.advance(minutes=step)
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 401


async def test_garbage_tokens_and_missing_tokens_are_401(client: httpx.AsyncClient) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer " + "x" * 5000},
        {"Authorization": "Bearer ' OR 1=1 --"},
    ):
        response = await client.get("/api/v1/me", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_password_change_ends_other_sessions_and_keeps_this_one(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    mine, other = await alice.login(client), await alice.login(client)
    response = await client.post(
        "/api/v1/me/password",
        headers=mine,
        json={"current_password": PASSWORD, "new_password": "Brand-new-secret-42"},
    )
    assert response.status_code == 200
    assert (await client.get("/api/v1/me", headers=mine)).status_code == 200
    assert (await client.get("/api/v1/me", headers=other)).status_code == 401
    old = await client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    assert old.status_code == 401
    new = await client.post(LOGIN, json={"username": "alice", "password": "Brand-new-secret-42"})
    assert new.status_code == 200


async def test_password_change_checks_current_password_and_policy(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    headers = await alice.login(client)
    wrong = await client.post(
        "/api/v1/me/password",
        headers=headers,
        json={"current_password": "not-it-at-all", "new_password": "Brand-new-secret-42"},
    )
    assert wrong.status_code == 422
    assert error_of(wrong)["field"] == "current_password"
    weak = await client.post(
        "/api/v1/me/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": "short"},
    )
    assert weak.status_code == 422
    assert error_of(weak)["field"] == "new_password"


async def test_forced_password_change_blocks_everything_else_until_done(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser
) -> None:
    admin_headers = await admin.login(client)
    reset = await client.post(
        f"/api/v1/admin/users/{alice.id}/password", json={}, headers=admin_headers
    )
    temporary = reset.json()["temporary_password"]
    login = await client.post(LOGIN, json={"username": "alice", "password": temporary})
    assert login.status_code == 200
    assert login.json()["user"]["must_change_password"] is True
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    blocked = await client.get("/api/v1/admin/users", headers=headers)
    assert blocked.status_code == 403
    assert error_of(blocked)["code"] == "password_change_required"
    changed = await client.post(
        "/api/v1/me/password",
        headers=headers,
        json={"current_password": temporary, "new_password": "Own-choice-9-pass"},
    )
    assert changed.status_code == 200
    assert changed.json()["must_change_password"] is False


async def test_disabling_a_user_ends_all_their_sessions_at_once(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, context: AppContext
) -> None:
    sessions = [await alice.login(client) for _ in range(3)]
    admin_headers = await admin.login(client)
    response = await client.patch(
        f"/api/v1/admin/users/{alice.id}", json={"is_active": False}, headers=admin_headers
    )
    assert response.status_code == 200
    for headers in sessions:
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 401
    async with context.db.unit_of_work("system:test") as session:
        live = await session.scalar(
            select(func.count())
            .select_from(AuthToken)
            .where(AuthToken.user_id == alice.id, AuthToken.revoked_at.is_(None))
        )
    assert live == 0


async def test_role_change_takes_effect_on_the_next_request(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser
) -> None:
    alice_headers = await alice.login(client)
    admin_headers = await admin.login(client)
    assert (await client.get("/api/v1/admin/users", headers=alice_headers)).status_code == 403
    await client.patch(
        f"/api/v1/admin/users/{alice.id}", json={"role": "admin"}, headers=admin_headers
    )
    assert (await client.get("/api/v1/admin/users", headers=alice_headers)).status_code == 200
    await client.patch(
        f"/api/v1/admin/users/{alice.id}", json={"role": "member"}, headers=admin_headers
    )
    assert (await client.get("/api/v1/admin/users", headers=alice_headers)).status_code == 403


async def test_passwords_and_hashes_never_reach_a_log_or_a_response(
    client: httpx.AsyncClient, admin: NamedUser, all_logs, context: AppContext
) -> None:
    headers = await admin.login(client)
    secret = "Unique-Sekret-Value-314"
    created = await client.post(
        "/api/v1/admin/users",
        headers=headers,
        json={"username": "carol", "password": secret, "role": "member"},
    )
    assert created.status_code == 201
    await client.post(LOGIN, json={"username": "carol", "password": secret + "x"})
    login = await client.post(LOGIN, json={"username": "carol", "password": secret})
    token = login.json()["access_token"]
    async with context.db.unit_of_work("system:test") as session:
        stored_hash = await session.scalar(
            select(User.password_hash).where(User.username == "carol")
        )
    assert stored_hash and stored_hash.startswith("bcrypt-hmac-sha256$")
    captured = all_logs.text + "".join(str(r.__dict__) for r in all_logs.records)
    assert all_logs.records, "expected request logs"
    for leaked in (secret, token, stored_hash):
        assert leaked not in captured
        assert leaked not in created.text


async def test_the_user_directory_lists_active_people_to_signed_in_users(
    client: httpx.AsyncClient, admin: NamedUser, alice: NamedUser, bob: NamedUser
) -> None:
    assert (await client.get("/api/v1/users")).status_code == 401
    headers = await admin.login(client)
    await client.patch(f"/api/v1/admin/users/{bob.id}", json={"is_active": False}, headers=headers)
    found = await client.get("/api/v1/users", params={"q": "b"}, headers=await alice.login(client))
    assert found.status_code == 200
    assert [u["username"] for u in found.json()["items"]] == []  # bob is disabled
    everyone = await client.get("/api/v1/users", headers=await alice.login(client))
    entries = everyone.json()["items"]
    assert {u["username"] for u in entries} == {"root-admin", "alice"}
    assert set(entries[0]) == {"id", "username", "display_name"}  # nothing more
