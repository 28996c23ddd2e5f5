"""GET requests read in read-only units of work: on the embedded default they never queue
behind SQLite's one writer, and a GET that tried to write would be refused, not queued."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select, text

from cmschat.accounts.models import AuthToken
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db import write_lock
from cmschat.db.write_lock import ReadOnlyWrite
from tests.support import NamedUser

WAIT = 5.0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_history_and_profile_are_answered_while_a_write_holds_the_database(
    client: httpx.AsyncClient, alice: NamedUser, context: AppContext
) -> None:
    headers = await alice.login(client)
    room = (
        await client.post(
            "/api/v1/rooms", json={"kind": "group", "name": "r", "member_ids": []}, headers=headers
        )
    ).json()["id"]
    sent = await client.post(
        f"/api/v1/rooms/{room}/messages", json={"content": "before"}, headers=headers
    )
    assert sent.status_code == 201
    lock = write_lock.lock_of(context.db.engine)
    assert lock is not None
    async with context.db.unit_of_work("system:test") as writer:
        # A long write transaction (a purge, a backup's bookkeeping) holds the writers' lock.
        await writer.execute(text("UPDATE rooms SET name = 'renamed' WHERE id = :id"), {"id": room})
        assert lock.holder is not None
        history = await asyncio.wait_for(
            client.get(f"/api/v1/rooms/{room}/messages", headers=headers), WAIT
        )
        me = await asyncio.wait_for(client.get("/api/v1/me", headers=headers), WAIT)
        # A reader that queued for the lock would wait for this transaction: a deadlock here.
        assert history.status_code == 200, history.text
        assert [item["content"] for item in history.json()["items"]] == ["before"]
        assert me.status_code == 200
        assert lock.waiting == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_read_only_unit_of_work_that_writes_is_refused_and_writes_nothing(
    context: AppContext,
) -> None:
    with pytest.raises(ReadOnlyWrite, match="read-only"):
        async with context.db.unit_of_work("system:test", read_only=True) as session:
            await session.execute(text("UPDATE rooms SET name = 'x'"))
    with pytest.raises(ReadOnlyWrite):
        async with context.db.unit_of_work("system:test", read_only=True) as session:
            await session.execute(text("DELETE FROM messages"))
    async with context.db.unit_of_work("system:test", read_only=True) as session:
        # Reads, including a CTE, go through.
        assert await session.scalar(text("WITH x AS (SELECT 1 AS n) SELECT n FROM x")) == 1


async def test_forty_reads_at_once_past_the_refresh_interval_all_answer_and_refresh_the_token(
    client: httpx.AsyncClient, alice: NamedUser, clock: FakeClock, context: AppContext
) -> None:
    headers = await alice.login(client)
    clock.advance(minutes=5)  # past the refresh interval: each of these may write last_used_at
    answers = await asyncio.wait_for(
        asyncio.gather(*(client.get("/api/v1/me", headers=headers) for _ in range(40))), 30
    )
    assert [a.status_code for a in answers] == [200] * 40
    async with context.db.unit_of_work("system:test", read_only=True) as session:
        used = await session.scalar(
            select(AuthToken.last_used_at).where(AuthToken.user_id == alice.id)
        )
    assert used == clock.now()
