"""The request context: authentication answers who the caller is; the unit of work acts for them.

``authenticate()`` changes nothing on the session it reads with; the transport that opened
the unit of work names the actor, so rows it writes (the token's refreshed ``last_used_at``
first of all) are stamped with the caller, as before.
"""

from __future__ import annotations

import httpx
from sqlalchemy import select

from cmschat.accounts import auth
from cmschat.accounts.models import AuthToken
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.actors import ANONYMOUS, current_actor
from tests.support import NamedUser


async def _token(context: AppContext, user_id: int) -> AuthToken:
    async with context.db.unit_of_work("system:test") as session:
        token = await session.scalar(select(AuthToken).where(AuthToken.user_id == user_id))
    assert token is not None
    return token


async def test_authenticate_says_who_and_leaves_the_actor_alone(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    headers = await alice.login(client)
    token = headers["Authorization"].removeprefix("Bearer ")
    async with context.db.unit_of_work(ANONYMOUS) as session:
        signed_in = await auth.authenticate(
            session,
            token=token,
            policy=context.settings.auth,
            token_key=context.token_key,
            clock=context.clock,
        )
        assert (signed_in.user.id, signed_in.actor) == (alice.id, f"user:{alice.id}")
        assert current_actor(session) == ANONYMOUS


async def test_a_request_acts_for_its_caller(
    client: httpx.AsyncClient, alice: NamedUser, clock: FakeClock, context: AppContext
) -> None:
    headers = await alice.login(client)
    clock.advance(minutes=5)  # past the refresh interval: this use writes last_used_at
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    token = await _token(context, alice.id)
    assert (token.last_used_at, token.updated_by) == (clock.now(), f"user:{alice.id}")


async def test_a_route_with_its_own_transactions_acts_for_its_caller(
    client: httpx.AsyncClient, alice: NamedUser, clock: FakeClock, context: AppContext
) -> None:
    headers = await alice.login(client)
    clock.advance(minutes=5)
    # Uploads authenticate in a short transaction of their own; the room does not exist.
    response = await client.post(
        "/api/v1/rooms/999999/attachments",
        headers=headers,
        files={"file": ("a.txt", b"hello", "text/plain")},
    )
    assert response.status_code == 404, response.text
    token = await _token(context, alice.id)
    assert (token.last_used_at, token.updated_by) == (clock.now(), f"user:{alice.id}")
