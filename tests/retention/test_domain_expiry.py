"""Each domain's expiry, as the purge calls it: bounded batches, one transaction each."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from cmschat.accounts import expiry as account_expiry
from cmschat.accounts.models import AuthToken, LoginAttempt
from cmschat.audit import expiry as audit_expiry
from cmschat.audit import service as audit
from cmschat.audit.chain import EXPIRED_ACTION, verify
from cmschat.audit.models import AuditEvent
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_CLI, SYSTEM_RETENTION
from cmschat.db.session import Database
from tests.support import NamedUser, audit_events


@pytest.fixture
def commits(context: AppContext) -> Iterator[list[str]]:
    """The actor of every transaction committed on the app's database from now on."""
    seen: list[str] = []

    def count(session: Session) -> None:
        seen.append(str(session.info.get("cmschat.actor")))

    event.listen(context.db.session_class, "after_commit", count)
    yield seen
    event.remove(context.db.session_class, "after_commit", count)


async def attempts(db: Database, *, count: int, username: str) -> None:
    async with db.unit_of_work(SYSTEM_CLI) as session:
        for _ in range(count):
            session.add(LoginAttempt(username=username, succeeded=False, reason="bad_password"))


async def how_many(db: Database, model: type[AuthToken] | type[LoginAttempt]) -> int:
    async with db.unit_of_work(SYSTEM_CLI) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_old_login_attempts_go_in_batches_of_one_transaction_each(
    context: AppContext, clock: FakeClock, commits: list[str]
) -> None:
    db = context.db
    await attempts(db, count=5, username="old")
    clock.advance(days=2)
    cutoff = clock.now() - timedelta(days=1)
    await attempts(db, count=1, username="recent")
    commits.clear()

    removed = await account_expiry.remove_login_attempts(
        db=db, before=cutoff, batch=2, actor=SYSTEM_RETENTION
    )

    assert removed == 5
    assert commits == [SYSTEM_RETENTION] * 3  # 2 + 2 + 1: the last, short batch ends it
    async with db.unit_of_work(SYSTEM_CLI) as session:
        left = (await session.scalars(select(LoginAttempt.username))).all()
    assert left == ["recent"]


async def test_sessions_go_a_day_after_their_absolute_expiry(
    context: AppContext, clock: FakeClock, alice: NamedUser
) -> None:
    db = context.db
    async with db.unit_of_work(SYSTEM_CLI) as session:
        for days_left in (-3, 0):
            session.add(
                AuthToken(
                    user_id=alice.id,
                    token_hash=f"{days_left:+d}".ljust(64, "x"),
                    expires_at=clock.now() + timedelta(days=days_left),
                    last_used_at=clock.now(),
                )
            )
    before = await how_many(db, AuthToken)

    removed = await account_expiry.remove_expired_sessions(
        db=db, now=clock.now(), batch=10, actor=SYSTEM_RETENTION
    )

    assert removed == 1  # the one expired three days ago; the other is within its grace
    assert await how_many(db, AuthToken) == before - 1


async def test_audit_events_expire_in_batches_each_leaving_its_checkpoint(
    context: AppContext, clock: FakeClock, commits: list[str]
) -> None:
    db = context.db
    for n in range(5):
        async with db.unit_of_work(SYSTEM_CLI) as session:
            audit.record(session, action="user.created", target_type="user", target_id=n)
    clock.advance(days=1)
    old = len(await audit_events(db))
    commits.clear()

    expired = await audit_expiry.expire_events(
        db=db, cutoff=clock.now(), actor=SYSTEM_RETENTION, batch=2
    )

    assert expired == old
    assert set(commits) == {SYSTEM_RETENTION}
    events = await audit_events(db)  # only the checkpoints, one per batch of two
    assert [e.action for e in events] == [EXPIRED_ACTION] * math.ceil(old / 2)
    async with db.unit_of_work(SYSTEM_CLI) as session:
        assert (await verify(session)).ok
        assert await session.scalar(select(func.count()).select_from(AuditEvent)) == len(events)
