"""The embedded default's driver adapter: one trip to aiosqlite's thread per statement,
with the same answers SQLAlchemy's own adapter gives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cmschat.db.session import create_engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with engine.begin() as connection:
        await connection.exec_driver_sql(
            "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)"
        )
    yield engine
    await engine.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every function sent to a driver thread, in order."""
    sent: list[Any] = []
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(fn)
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return sent


async def test_a_select_is_one_trip_to_the_driver_thread(
    engine: AsyncEngine, trips: list[Any]
) -> None:
    async with engine.connect() as connection:
        await connection.exec_driver_sql("SELECT 1")  # the connection is checked out
        trips.clear()
        rows = (await connection.execute(text("SELECT :n + 1"), {"n": 41})).all()
        assert rows == [(42,)]
        # SQLAlchemy's stock adapter makes four: cursor, execute, fetchall, close.
        assert len(trips) == 1


async def test_writes_report_rowcount_lastrowid_and_returning_rows(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        inserted = await connection.execute(text("INSERT INTO item (name) VALUES ('a')"))
        assert inserted.rowcount == 1
        assert inserted.lastrowid == 1
        many = await connection.execute(
            text("INSERT INTO item (name) VALUES (:name)"), [{"name": "b"}, {"name": "c"}]
        )
        assert many.rowcount == 2
        returned = await connection.execute(
            text("UPDATE item SET name = name || '!' WHERE id > 1 RETURNING id, name")
        )
        assert sorted(returned.all()) == [(2, "b!"), (3, "c!")]
        deleted = await connection.execute(text("DELETE FROM item WHERE id = 3"))
        assert deleted.rowcount == 1
        assert not deleted.returns_rows
    async with engine.connect() as connection:
        names = (await connection.execute(text("SELECT name FROM item ORDER BY id"))).scalars()
        assert list(names) == ["a", "b!"]


async def test_a_constraint_error_is_sqlalchemys_and_the_connection_goes_on(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("INSERT INTO item (name) VALUES ('same')"))
        with pytest.raises(IntegrityError):
            await connection.execute(text("INSERT INTO item (name) VALUES ('same')"))
        await connection.rollback()
        count = await connection.scalar(text("SELECT count(*) FROM item"))
        assert count == 0


async def test_streamed_results_still_come_in_chunks(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO item (name) VALUES (:name)"),
            [{"name": f"n{i}"} for i in range(250)],
        )
    async with engine.connect() as connection:
        result = await connection.stream(text("SELECT id FROM item ORDER BY id"))
        seen = [row.id async for row in result]
        assert seen == list(range(1, 251))
