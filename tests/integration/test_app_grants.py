"""The MariaDB grants of docs/security.md, applied to a real server as written there.

The app user they create runs cmschat normally, expires audit events through the
procedure, and cannot update, delete or unprotect the audit trail.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from cmschat.accounts import service as accounts
from cmschat.accounts.models import Role
from cmschat.audit import chain
from cmschat.audit.expiry import expire_events
from cmschat.audit.service import audited
from cmschat.clock import FakeClock
from cmschat.db.actors import SYSTEM_CLI, SYSTEM_RETENTION
from cmschat.db.migrate import DERIVED_TABLE_PREFIXES, run_migrations
from cmschat.db.models import metadata
from cmschat.db.session import Database, create_engine
from tests import support

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
BLOCK = re.compile(r"<!-- app-grants:start -->\s*```sql\n(.*?)```", re.DOTALL)


def documented_grants(database: str, user: str, password: str) -> list[str]:
    match = BLOCK.search(DOC.read_text())
    assert match, "docs/security.md lost its grants block"
    sql = (
        match.group(1)
        .replace("cmschat.", f"{database}.")
        .replace("'cmschat_app'@'%'", f"'{user}'@'%'")
        .replace("'a long random password'", f"'{password}'")
    )
    return [line.rstrip(";") for line in sql.splitlines() if line.strip()]


@pytest.fixture
async def app_user() -> AsyncIterator[tuple[str, list[str]]]:
    """A migrated database and the documented app user; its URL and the grants."""
    support.mariadb_available()
    owner_url = await support.create_mariadb_database()
    database = make_url(owner_url).database
    assert database is not None
    user, password = f"app_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    owner = create_engine(owner_url)
    statements = documented_grants(database, user, password)
    try:
        await run_migrations(owner)
        async with owner.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
        url = make_url(owner_url).set(username=user, password=password)
        yield url.render_as_string(hide_password=False), statements
    finally:
        async with owner.begin() as connection:
            await connection.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        await owner.dispose()
        await support.drop_mariadb_database(owner_url)


@pytest.mark.mariadb
async def test_the_documented_app_user_works_but_cannot_touch_the_trail(
    app_user: tuple[str, list[str]],
) -> None:
    url, statements = app_user
    granted = {m.group(1) for s in statements if (m := re.search(r"ON \w+\.(\w+) TO", s))}
    assert granted == set(metadata.tables) | {"message_search", "alembic_version"}
    assert not granted & {"audit_expiry_permit"} and "audit_expiry_permit" in DERIVED_TABLE_PREFIXES

    db = audited(Database(create_engine(url), FakeClock()))
    try:
        await run_migrations(db.engine)  # nothing to do, and allowed
        async with db.unit_of_work(SYSTEM_CLI) as session:
            await accounts.create_user(
                session,
                username="alice",
                password="Correct-Horse-7-battery",
                role=Role.member,
                display_name=None,
                must_change_password=False,
                bcrypt_rounds=4,
                clock=db.clock,
            )
        for statement in (
            "UPDATE audit_events SET action = 'x'",
            "DELETE FROM audit_events",
            "INSERT INTO audit_expiry_permit (id) VALUES (1)",
            "DROP TRIGGER audit_events_refuse_update",
            "ALTER TABLE audit_events ADD COLUMN note TEXT",
        ):
            with pytest.raises(Exception, match="denied"):
                async with db.engine.begin() as connection:
                    await connection.execute(text(statement))

        db.clock.advance(days=1)  # type: ignore[attr-defined]
        assert await expire_events(db=db, cutoff=db.clock.now(), actor=SYSTEM_RETENTION) == 1
        async with db.unit_of_work(SYSTEM_CLI) as session:
            verdict = await chain.verify(session)
        assert verdict.ok, verdict.describe()
    finally:
        await db.dispose()
