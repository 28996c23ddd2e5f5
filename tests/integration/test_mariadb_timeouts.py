"""``serve``'s MariaDB connections: a bound on a statement left unanswered
(``CMSCHAT_DATABASE__READ_TIMEOUT``), and lock waits that end before it, so that a long
lock wait is still a conflict (1205), not a database taken for gone."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from cmschat.app import engine_for
from cmschat.settings import Settings
from tests import support

pytestmark = pytest.mark.mariadb


def settings(read_timeout: float) -> Settings:
    return Settings(
        database_url=support.MARIADB_SERVER + "/",
        database={"read_timeout": read_timeout, "connect_timeout": 2},  # type: ignore[arg-type]
    )


async def test_lock_waits_end_five_seconds_before_the_read_timeout() -> None:
    support.mariadb_available()
    engine = engine_for(support.MARIADB_SERVER + "/", settings(20))
    try:
        async with engine.connect() as connection:
            waits = await connection.execute(
                text("SELECT @@SESSION.innodb_lock_wait_timeout, @@SESSION.lock_wait_timeout")
            )
            assert tuple(waits.one()) == (15, 15)
    finally:
        await engine.dispose()


async def test_a_statement_unanswered_past_the_read_timeout_fails_instead_of_waiting() -> None:
    support.mariadb_available()
    engine = engine_for(support.MARIADB_SERVER + "/", settings(1))
    try:
        async with engine.connect() as connection:
            # SLEEP stands for a server that went silent: nothing comes back for 3 s.
            with pytest.raises(OperationalError, match="read timeout"):
                await connection.execute(text("SELECT SLEEP(3)"))
    finally:
        await engine.dispose()
