"""created_*/updated_* are stamped from the acting user or system actor, never by hand."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select, update

from cmschat.accounts.models import AuthToken, Role, User
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_CLI
from tests.support import PASSWORD, NamedUser


async def _row(context: AppContext, model: type, **where: object):
    async with context.db.unit_of_work("system:test") as session:
        return await session.scalar(select(model).filter_by(**where))


async def test_rows_carry_who_and_when_for_create_and_update(
    client: httpx.AsyncClient, admin: NamedUser, clock: FakeClock, context: AppContext
) -> None:
    headers = await admin.login(client)
    created_at = clock.now()
    response = await client.post(
        "/api/v1/admin/users",
        headers=headers,
        json={"username": "dave", "password": PASSWORD, "role": "member"},
    )
    dave_id = response.json()["id"]
    clock.advance(hours=2)
    await client.patch(
        f"/api/v1/admin/users/{dave_id}", headers=headers, json={"display_name": "Dave D."}
    )
    dave = await _row(context, User, id=dave_id)
    assert (dave.created_by, dave.created_at) == (f"user:{admin.id}", created_at)
    assert (dave.updated_by, dave.updated_at) == (f"user:{admin.id}", clock.now())
    # Dave's own login stamps his token with his id, not the admin's.
    await NamedUser(dave_id, "dave", PASSWORD, "member").login(client)
    token = await _row(context, AuthToken, user_id=dave_id)
    assert token.created_by == f"user:{dave_id}"


async def test_bulk_updates_are_stamped_too(
    client: httpx.AsyncClient,
    admin: NamedUser,
    alice: NamedUser,
    clock: FakeClock,
    context: AppContext,
) -> None:
    await alice.login(client)
    clock.advance(minutes=30)
    headers = await admin.login(client)
    # Disabling alice revokes her tokens with one UPDATE statement.
    await client.patch(
        f"/api/v1/admin/users/{alice.id}", headers=headers, json={"is_active": False}
    )
    token = await _row(context, AuthToken, user_id=alice.id)
    assert token.revoked_at == clock.now()
    assert (token.updated_by, token.updated_at) == (f"user:{admin.id}", clock.now())


async def test_system_actor_for_work_without_a_user(context: AppContext) -> None:
    async with context.db.unit_of_work(SYSTEM_CLI) as session:
        session.add(
            User(
                username="script",
                display_name="s",
                role=Role.member,
                is_active=True,
                must_change_password=False,
                password_hash="x",
                password_changed_at=context.clock.now(),
            )
        )
    user = await _row(context, User, username="script")
    assert user.created_by == user.updated_by == "system:cli"


async def test_a_write_without_a_declared_actor_is_refused(context: AppContext) -> None:
    with pytest.raises(RuntimeError, match="no actor"):
        async with context.db.unit_of_work() as session:
            session.add(
                User(
                    username="ghost",
                    display_name="g",
                    role=Role.member,
                    is_active=True,
                    must_change_password=False,
                    password_hash="x",
                    password_changed_at=context.clock.now(),
                )
            )
    with pytest.raises(RuntimeError, match="no actor"):
        async with context.db.unit_of_work() as session:
            await session.execute(update(User).values(display_name="x"))
    assert await _row(context, User, username="ghost") is None
