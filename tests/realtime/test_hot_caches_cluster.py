"""Two app instances on one MariaDB and the real Redis: a change made on one drops the
other's cached membership or name as soon as the broker delivers it (waited for as an
event, with a bound), whatever rooms that instance has sockets in (here: none)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI

from cmschat.accounts import service as accounts
from cmschat.accounts.models import Role
from cmschat.app import create_app
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_SETUP
from cmschat.settings import ChatSettings, Settings
from tests import support
from tests.api.test_hot_caches import refused, warm
from tests.api.test_messages import group, send
from tests.support import PASSWORD, NamedUser

DELIVERED_WITHIN = 5.0


def cluster_settings(url: str, prefix: str, data: Path) -> Settings:
    return support.settings_for(
        url,
        data,
        redis_url=support.REDIS_URL,
        redis_prefix=prefix,
        # A long TTL: only the invalidation, not the clock, may make the answers fresh.
        chat=ChatSettings(send_rate=0, cache_seconds=60),
    )


@contextlib.asynccontextmanager
async def instance(settings: Settings) -> AsyncIterator[tuple[AppContext, httpx.AsyncClient]]:
    app: FastAPI = create_app(settings, clock=FakeClock())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield app.state.context, http


def heard(context: AppContext, kind: str) -> asyncio.Event:
    """Set once this instance's caches are told of an event of ``kind``."""
    caches = context.caches
    assert caches is not None
    event = asyncio.Event()
    real = caches.invalidate

    def invalidate(**fields: object) -> None:
        real(**fields)  # type: ignore[arg-type]
        if fields["type"] == kind:
            event.set()

    caches.invalidate = invalidate  # type: ignore[method-assign]
    return event


async def named(context: AppContext, name: str, role: Role = Role.member) -> NamedUser:
    async with context.db.unit_of_work(SYSTEM_SETUP) as session:
        user = await accounts.create_user(
            session,
            username=name,
            password=PASSWORD,
            role=role,
            display_name=name.title(),
            must_change_password=False,
            bcrypt_rounds=4,
            clock=context.clock,
        )
    return NamedUser(id=user.id, username=name, password=PASSWORD, role=role.value)


async def test_a_removal_and_a_rename_on_one_instance_reach_the_others_caches(
    mariadb_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    await support.empty_all_tables(mariadb_url)
    try:
        async with (
            instance(cluster_settings(mariadb_url, redis_prefix, tmp_path / "one")) as (one, h1),
            instance(cluster_settings(mariadb_url, redis_prefix, tmp_path / "two")) as (two, h2),
        ):
            alice, bob = await named(one, "alice"), await named(one, "bob")
            boss = await named(one, "boss", Role.admin)
            a1, boss1, b2 = await alice.login(h1), await boss.login(h1), await bob.login(h2)
            room_id = await group(h1, a1, bob)
            await warm(h2, b2, room_id)  # bob's membership and name are cached on two

            renamed = heard(two, "user.changed")
            response = await h1.patch(
                f"/api/v1/admin/users/{bob.id}", headers=boss1, json={"display_name": "Robert"}
            )
            assert response.status_code == 200
            await asyncio.wait_for(renamed.wait(), DELIVERED_WITHIN)
            assert (await send(h2, b2, room_id, "renamed"))["author"]["display_name"] == "Robert"

            left = heard(two, "member.left")
            removed = await h1.delete(f"/api/v1/rooms/{room_id}/members/{bob.id}", headers=a1)
            assert removed.status_code == 204
            await asyncio.wait_for(left.wait(), DELIVERED_WITHIN)
            await refused(h2, b2, room_id)
    finally:
        await support.empty_all_tables(mariadb_url)
