"""Issue 17 point 4, the expand/contract rule (docs/deploy.md): during a blue/green release
the previous release's code runs beside the new release's schema, and a rollback starts it
again. So this release's code must run on a schema one expand migration ahead of it: a new
nullable column, a column with a default, a new table and index, and a schema revision its
migrations do not know.

On SQLite and MariaDB: ``cmschat migrate`` says the schema is newer and leaves it, and a real
``cmschat serve`` starts on it, signs users in, stores and delivers a message over HTTP and
WebSocket, and pages history, with a warning logged and no stack trace.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from cmschat.db.migrate import run_migrations
from cmschat.db.session import create_engine
from tests import support
from tests.processes import clean_env, cmschat, running_server
from tests.realtime.test_multi_instance import live, login
from tests.realtime.wsclient import token_of, ws_client

pytestmark = pytest.mark.slow

NEXT_REVISION = "0099_next_release_expand"
EXPAND = (
    "ALTER TABLE messages ADD COLUMN next_release_note VARCHAR(200) NULL",
    "ALTER TABLE users ADD COLUMN next_release_flag INTEGER NOT NULL DEFAULT 0",
    "CREATE TABLE next_release_things (id INTEGER PRIMARY KEY, note VARCHAR(50))",
    "CREATE INDEX ix_messages_next_release_note ON messages (next_release_note)",
)


@pytest.fixture(params=["sqlite", "mariadb"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated database, then expanded as the next release's migration would."""
    if request.param == "sqlite":
        url = support.sqlite_url(tmp_path / "cmschat.db")
    else:
        support.mariadb_available()
        url = await support.create_mariadb_database()
    engine = create_engine(url)
    try:
        await run_migrations(engine)
        async with engine.begin() as connection:
            for statement in EXPAND:
                await connection.execute(text(statement))
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :revision"),
                {"revision": NEXT_REVISION},
            )
        yield url
    finally:
        await engine.dispose()
        if request.param == "mariadb":
            await support.drop_mariadb_database(url)


async def test_this_release_runs_on_the_next_releases_expanded_schema(
    database_url: str, tmp_path: Path
) -> None:
    env = clean_env(
        CMSCHAT_ENVIRONMENT="test",
        CMSCHAT_AUTH__BCRYPT_ROUNDS="4",
        CMSCHAT_DATABASE_URL=database_url,
        CMSCHAT_DATA_DIR=str(tmp_path / "data"),
        CMSCHAT_SECRET_KEY=secrets.token_urlsafe(48),
    )
    migrated = cmschat(tmp_path, "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == (
        f"cmschat: database schema {NEXT_REVISION} is newer than this cmschat; "
        "left as it is (a newer release migrated it)"
    )
    for name in ("ann", "ben"):
        made = cmschat(
            tmp_path, "user", "create", name, "--password-stdin", env=env,
            stdin=support.PASSWORD + "\n",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr

    with running_server(tmp_path, env, "previous") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            ann, ben = await login(http, "ann"), await login(http, "ben")
            ben_id = (await http.get("/api/v1/me", headers=ben)).json()["id"]
            room = await http.post(
                "/api/v1/rooms",
                headers=ann,
                json={"kind": "group", "name": "expand", "member_ids": [ben_id]},
            )
            assert room.status_code == 201, room.text
            room_id = room.json()["id"]
            async with ws_client(live(server), token_of(ben)) as ws:
                sent = await http.post(
                    f"/api/v1/rooms/{room_id}/messages",
                    headers=ann,
                    json={"content": "still here", "client_id": "expand-1"},
                )
                assert sent.status_code == 201, sent.text
                frames = await ws.recv_until(lambda f: f["type"] == "message.created")
                assert frames[-1]["message"]["content"] == "still here"
            page = await http.get(f"/api/v1/rooms/{room_id}/messages", headers=ben)
            assert page.status_code == 200, page.text
            assert [item["content"] for item in page.json()["items"]] == ["still here"]
    logged = server.stderr()
    assert f"database schema {NEXT_REVISION} is newer" in logged
    assert "Traceback" not in logged


async def test_an_older_schema_is_still_brought_up_to_date(tmp_path: Path) -> None:
    """The tolerance is for a newer schema only: an empty one is migrated as before."""
    engine = create_engine(support.sqlite_url(tmp_path / "fresh.db"))
    try:
        assert await run_migrations(engine) == []
        async with engine.connect() as connection:
            revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        assert revision is not None and revision != NEXT_REVISION
    finally:
        await engine.dispose()
