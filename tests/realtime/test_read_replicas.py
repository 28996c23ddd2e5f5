"""Read replicas (issue 18 point 2): a MariaDB primary with binary logging (GTID) and a
replica of it, both started here.

History pages, searches and WebSocket replays read from the replica while it has applied
every commit made before the read, and from the primary while it lags (its SQL thread
stopped) or is down: a user never misses their own message, and the replica really is
read from (the counters say where each read went; the replica itself is asked what it
holds).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from cmschat.app import create_app
from cmschat.clock import FakeClock
from cmschat.db.migrate import run_migrations
from cmschat.db.readers import Readers
from cmschat.db.replicas import Replicas
from cmschat.db.session import create_engine
from cmschat.settings import DatabaseSettings, Settings
from tests import support
from tests.faults.own_mariadb import OwnMariaDB
from tests.observability.metrics_support import value
from tests.realtime.test_gateway import created, make_room, post
from tests.realtime.wsclient import LiveServer, token_of, ws_client
from tests.support import NamedUser

pytestmark = pytest.mark.slow
READS = "cmschat_database_replica_reads_total"
CATCH_UP_SECONDS = 30


class Pair:
    """A primary and its replica."""

    def __init__(self, base: Path) -> None:
        self.primary = OwnMariaDB(
            base / "primary", ("--log-bin=binlog", "--server-id=1", "--binlog-format=ROW")
        )
        self.replica = OwnMariaDB(base / "replica", ("--server-id=2", "--read-only"))

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        self.replica.sql(
            f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={self.primary.port}, "
            "MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos; START SLAVE"
        )

    def caught_up(self) -> None:
        """Wait until the replica has applied everything the primary has committed."""
        position = self.primary.sql("SELECT @@gtid_binlog_pos").strip()
        waited = self.replica.sql(f"SELECT MASTER_GTID_WAIT('{position}', {CATCH_UP_SECONDS})")
        assert waited.strip() == "0", self.replica.sql("SHOW SLAVE STATUS\\G")

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("replication")
    (base / "primary").mkdir()
    (base / "replica").mkdir()
    started = Pair(base)
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture
async def database_url(pair: Pair) -> AsyncIterator[str]:
    """A migrated database on the primary, replicated (replaces the suite's two)."""
    name = f"replicas_{secrets.token_hex(4)}"
    pair.primary.create_database(name)
    url = pair.primary.url(name)
    engine = create_engine(url)
    try:
        await run_migrations(engine)
    finally:
        await engine.dispose()
    pair.caught_up()
    yield url
    pair.primary.sql(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def settings(database_url: str, pair: Pair, tmp_path: Path) -> Settings:
    name = database_url.rsplit("/", 1)[1]
    return support.settings_for(
        database_url, tmp_path / "var", database_replica_urls=[pair.replica.url(name)]
    )


def counts() -> dict[str, float]:
    return {outcome: value(READS, outcome=outcome) for outcome in ("replica", "primary", "behind")}


def went(before: dict[str, float]) -> dict[str, float]:
    """How many reads went where since ``before``."""
    return {outcome: n - before[outcome] for outcome, n in counts().items() if n != before[outcome]}


async def search(http: httpx.AsyncClient, headers: dict[str, str], q: str) -> list[str]:
    found = await http.get("/api/v1/search", params={"q": q}, headers=headers)
    assert found.status_code == 200, found.text
    return [item["content"] for item in found.json()["items"]]


def on_replica(pair: Pair, database_url: str, needle: str) -> int:
    """Messages containing ``needle`` that the replica itself holds."""
    name = database_url.rsplit("/", 1)[1]
    held = pair.replica.sql("SELECT content FROM messages", database=name)
    return sum(needle in line for line in held.splitlines())


async def test_searches_read_a_replica_that_has_every_commit_and_the_primary_while_it_lags(
    pair: Pair,
    database_url: str,
    server: LiveServer,
    http: httpx.AsyncClient,
    alice: NamedUser,
) -> None:
    a = await alice.login(http)
    room = await make_room(http, a)
    await post(http, a, room, "first on the replica")
    pair.caught_up()
    before = counts()
    assert await search(http, a, "replica") == ["first on the replica"]
    assert went(before) == {"replica": 1}

    pair.replica.sql("STOP SLAVE SQL_THREAD")  # the replica receives, applies nothing
    try:
        await post(http, a, room, "second while it lags")
        assert on_replica(pair, database_url, "lags") == 0
        before = counts()
        # Alice's own message, just sent, is found: from the primary.
        assert await search(http, a, "lags") == ["second while it lags"]
        assert went(before) == {"behind": 1, "primary": 1}
    finally:
        pair.replica.sql("START SLAVE SQL_THREAD")
    pair.caught_up()
    before = counts()
    assert await search(http, a, "lags") == ["second while it lags"]
    assert went(before) == {"replica": 1}


async def page(http: httpx.AsyncClient, headers: dict[str, str], room: int) -> list[str]:
    answer = await http.get(f"/api/v1/rooms/{room}/messages", headers=headers)
    assert answer.status_code == 200, answer.text
    return sorted(item["content"] for item in answer.json()["items"])


async def test_history_pages_read_a_fresh_replica_and_the_primary_while_it_lags(
    pair: Pair,
    server: LiveServer,
    http: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a)
    await post(http, a, room, "one")
    pair.caught_up()
    before = counts()
    assert await page(http, a, room) == ["one"]
    assert went(before) == {"replica": 1}
    # Who may read is checked as on the primary: to bob, no member, the room is not there;
    # a bad token is refused.
    refused = await http.get(f"/api/v1/rooms/{room}/messages", headers=b)
    assert refused.status_code == 404, refused.text
    unknown = await http.get(
        f"/api/v1/rooms/{room}/messages", headers={"Authorization": "Bearer nope"}
    )
    assert unknown.status_code == 401, unknown.text

    pair.replica.sql("STOP SLAVE SQL_THREAD")
    try:
        await post(http, a, room, "two")
        before = counts()
        assert await page(http, a, room) == ["one", "two"]
        assert went(before) == {"behind": 1, "primary": 1}
    finally:
        pair.replica.sql("START SLAVE SQL_THREAD")
    pair.caught_up()
    before = counts()
    assert await page(http, a, room) == ["one", "two"]
    assert went(before) == {"replica": 1}


async def test_forty_pages_at_once_then_a_revoked_token_on_the_replica_route(
    pair: Pair, server: LiveServer, http: httpx.AsyncClient, alice: NamedUser
) -> None:
    """The token is checked on the primary: a logout refuses the very next page and search,
    however the replica stands; forty pages at once all answer."""
    a = await alice.login(http)
    room = await make_room(http, a)
    await post(http, a, room, "asked forty times")
    pair.caught_up()
    url = f"/api/v1/rooms/{room}/messages"
    answers = await asyncio.gather(*(http.get(url, headers=a) for _ in range(40)))
    assert [answer.status_code for answer in answers] == [200] * 40, answers[0].text
    pair.replica.sql("STOP SLAVE SQL_THREAD")  # the replica never hears of the logout
    try:
        assert (await http.post("/api/v1/auth/logout", headers=a)).status_code == 204
        assert (await http.get(url, headers=a)).status_code == 401
        refused = await http.get("/api/v1/search", params={"q": "forty"}, headers=a)
        assert refused.status_code == 401
    finally:
        pair.replica.sql("START SLAVE SQL_THREAD")
    pair.caught_up()


async def test_websocket_replays_read_the_primary_while_the_replica_lags(
    pair: Pair,
    server: LiveServer,
    http: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
) -> None:
    a, b = await alice.login(http), await bob.login(http)
    room = await make_room(http, a, bob)
    async with ws_client(server, token_of(b)) as bob_ws:
        seen = int(bob_ws.ready["rooms"][str(room)])

    async def replayed(since: int, missed: list[str]) -> list[dict[str, Any]]:
        async with ws_client(server, token_of(b), resume={room: since}) as again:
            return await again.recv_until(
                lambda f: f.get("message", {}).get("content") == missed[-1]
            )

    pair.replica.sql("STOP SLAVE SQL_THREAD")
    try:
        missed = [f"while bob was away {n}" for n in range(3)]
        for text in missed:
            await post(http, a, room, text)
        before = counts()
        frames = await replayed(seen, missed)
        assert created(frames) == missed
        assert went(before).get("primary", 0) >= 1
        assert "replica" not in went(before)
    finally:
        pair.replica.sql("START SLAVE SQL_THREAD")
    pair.caught_up()
    before = counts()
    frames = await replayed(seen, missed)
    assert created(frames) == missed
    assert went(before).get("replica", 0) >= 1


async def test_with_the_replica_down_reads_go_to_the_primary(
    pair: Pair, server: LiveServer, http: httpx.AsyncClient, alice: NamedUser
) -> None:
    a = await alice.login(http)
    room = await make_room(http, a)
    await post(http, a, room, "read without the replica")
    pair.replica.kill()
    try:
        before = value(READS, outcome="unreachable")
        started = time.monotonic()
        assert await search(http, a, "without") == ["read without the replica"]
        assert value(READS, outcome="unreachable") == before + 1
        # Skipped from then on: the next read does not wait for it again.
        assert await search(http, a, "without") == ["read without the replica"]
        assert value(READS, outcome="unreachable") == before + 1
        assert time.monotonic() - started < 10
    finally:
        pair.replica.start()
        pair.caught_up()


async def test_searches_at_once_never_hold_two_connections_of_a_small_pool(
    pair: Pair, settings: Settings, clock: FakeClock, alice: NamedUser
) -> None:
    """Twelve searches on a pool of four: each gives the primary's connection back before it
    reads the replica, so none waits for a connection another holds."""
    small = DatabaseSettings(pool_size=2, pool_overflow=2, pool_timeout=5)
    application = create_app(settings.model_copy(update={"database": small}), clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            a = await alice.login(http)
            room = await make_room(http, a)
            await post(http, a, room, "searched at once")
            pair.caught_up()
            answers = await asyncio.gather(
                *(http.get("/api/v1/search", params={"q": "once"}, headers=a) for _ in range(12))
            )
    assert [answer.status_code for answer in answers] == [200] * 12, answers[0].text
    assert all(answer.json()["items"] for answer in answers)


async def test_a_primary_without_a_binary_log_sends_every_read_to_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The machine's MariaDB has log_bin off: no position to compare, so no replica (even
    one named) may answer; an error says why, once."""
    support.mariadb_available()
    url = await support.create_mariadb_database()
    primary, replica = create_engine(url), create_engine(url)
    went: list[str] = []
    kept = Readers(primary)
    replicas = Replicas(kept, [replica], counted=went.append)
    try:
        assert await replicas.fresh() is None
        assert await replicas.fresh() is None
        assert went == ["primary", "primary"]
        assert len([r for r in caplog.records if "no binary log" in r.message]) == 1
    finally:
        await replicas.dispose()
        await kept.close()
        await primary.dispose()
        await support.drop_mariadb_database(url)


def test_replicas_need_a_mariadb_primary(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="read replicas need a MariaDB primary"):
        support.settings_for(
            f"sqlite+aiosqlite:///{tmp_path}/x.db",
            tmp_path,
            database_replica_urls=["mysql+asyncmy://root@127.0.0.1/x"],
        )
    with pytest.raises(ValidationError, match="replicas are MariaDB"):
        Settings(database_replica_urls="sqlite+aiosqlite:///x.db", _env_file=None)  # type: ignore[call-arg]
