"""What a request gets when the database is down or the disk is full: a clear 503 or 507
with ``Retry-After`` and a stable code, never a 500; one log line, not a trace per request;
``/readyz`` saying so; and, for the full disk, service back as soon as space is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bench import children
from cmschat.accounts import service as accounts
from cmschat.accounts.models import Role
from cmschat.app import create_app
from cmschat.audit.service import audited
from cmschat.clock import FakeClock
from cmschat.db.actors import SYSTEM_SETUP
from cmschat.db.migrate import run_migrations
from cmschat.db.session import Database, create_engine
from cmschat.settings import (
    DatabaseSettings,
)
from tests import support
from tests.observability.metrics_support import value
from tests.realtime.wsclient import serve, token_of, ws_client
from tests.support import PASSWORD

REQUESTS = 20


async def test_database_down_answers_503_with_retry_after_and_logs_once(
    unreachable_database: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.clear()
    for _ in range(REQUESTS):
        response = await unreachable_database.post(
            "/api/v1/auth/login", json={"username": "ann", "password": PASSWORD}
        )
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        assert response.json()["error"]["code"] == "database_unavailable"
        assert response.json()["error"]["request_id"] == response.headers["X-Request-ID"]
    ready = await unreachable_database.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "unreachable"

    outage_lines = [r for r in caplog.records if r.name == "cmschat.outage"]
    assert len(outage_lines) == 1, [r.getMessage() for r in outage_lines]
    assert "database_unavailable" in outage_lines[0].getMessage()
    traced = [r for r in caplog.records if r.exc_info and r.name.startswith("cmschat.http")]
    assert traced == []
    metrics = await unreachable_database.get("/metrics")
    assert 'cmschat_dependency_errors_total{code="database_unavailable"}' in metrics.text
    assert 'cmschat_http_requests_total{method="POST",route="/api/v1/auth/login",status="503"}' in (
        metrics.text
    )


@pytest.mark.mariadb
async def test_a_starved_pool_answers_503_pool_exhausted_counted_apart(
    mariadb_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every pooled connection held (one, here): a request waits ``pool_timeout``, then gets
    503 ``database_pool_exhausted`` with ``Retry-After: 1``, counted under its own code (not
    as the database down); once the connection is back, the same request is answered."""
    pool = DatabaseSettings(pool_size=1, pool_overflow=0, pool_timeout=0.2)
    application = create_app(support.settings_for(mariadb_url, tmp_path / "var", database=pool))
    login = {"username": "nobody", "password": PASSWORD}
    codes = ("database_pool_exhausted", "database_unavailable")

    def refusals() -> list[float]:
        return [value("cmschat_dependency_errors_total", code=code) for code in codes]

    before = refusals()
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            engine = application.state.context.db.engine
            caplog.clear()
            async with engine.connect() as held:
                await held.execute(text("SELECT 1"))
                starved = await http.post("/api/v1/auth/login", json=login)
            answered = await http.post("/api/v1/auth/login", json=login)

    assert starved.status_code == 503, starved.text
    assert starved.json()["error"]["code"] == "database_pool_exhausted"
    assert starved.headers["Retry-After"] == "1"
    assert answered.status_code == 401, answered.text
    assert refusals() == [before[0] + 1, before[1]]  # not counted as the database down
    outage_lines = [r.getMessage() for r in caplog.records if r.name == "cmschat.outage"]
    assert len(outage_lines) == 1 and "database_pool_exhausted" in outage_lines[0]


@pytest.mark.mariadb
async def test_forty_requests_at_once_on_a_starved_pool_get_503_or_their_answer(
    mariadb_url: str, tmp_path: Path
) -> None:
    """40 token checks at once while the one pooled connection is held: every one refused
    with ``database_pool_exhausted``, none a 500; 40 more once it is free: each answered
    (401, a token nobody holds) or, queued past ``pool_timeout`` behind the others, refused
    the same way."""
    pool = DatabaseSettings(pool_size=1, pool_overflow=0, pool_timeout=0.5)
    application = create_app(support.settings_for(mariadb_url, tmp_path / "var", database=pool))
    unknown = {"Authorization": "Bearer a-token-nobody-holds"}
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

            async def forty() -> list[httpx.Response]:
                return await asyncio.gather(
                    *(http.get("/api/v1/rooms", headers=unknown) for _ in range(40))
                )

            async with application.state.context.db.engine.connect() as held:
                await held.execute(text("SELECT 1"))
                starved = await forty()
            freed = await forty()

    assert {(r.status_code, r.json()["error"]["code"]) for r in starved} == {
        (503, "database_pool_exhausted")
    }
    answers = {(r.status_code, r.json()["error"]["code"]) for r in freed}
    assert answers <= {(401, "invalid_token"), (503, "database_pool_exhausted")}, answers
    assert (401, "invalid_token") in answers


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, unmounted afterwards (needs root, as CI has)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        support.service_missing("a tmpfs mount (root)", PermissionError("not root"))
    subprocess.run(  # noqa: S603
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],  # noqa: S607
        check=True,
        preexec_fn=children.with_parent(),
    )
    try:
        yield mount_point
    finally:
        subprocess.run(  # noqa: S603
            ["umount", "-l", str(mount_point)],  # noqa: S607
            check=False,
            preexec_fn=children.with_parent(),
        )


def fill(directory: Path) -> Path:
    """Write until the disk refuses, down to the last byte; the filler file's path."""
    filler = directory / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(descriptor, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(descriptor)
    return filler


async def test_full_disk_answers_507_turns_unready_and_recovers(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = small_disk / "var"
    data_dir.mkdir()
    url = support.sqlite_url(data_dir / "cmschat.db")
    engine = create_engine(url)
    await run_migrations(engine)
    db = audited(Database(engine, FakeClock()))
    async with db.unit_of_work(SYSTEM_SETUP) as session:
        await accounts.create_user(
            session,
            username="ann",
            password=PASSWORD,
            role=Role.member,
            display_name="Ann",
            must_change_password=False,
            bcrypt_rounds=4,
            clock=db.clock,
        )
    await engine.dispose()

    settings = support.settings_for(url, data_dir, min_free_disk_mib=1)
    async with serve(create_app(settings, clock=FakeClock())) as live:
        transport = httpx.ASGITransport(app=live.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            login = await http.post(
                "/api/v1/auth/login", json={"username": "ann", "password": PASSWORD}
            )
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            room = await http.post(
                "/api/v1/rooms",
                headers=headers,
                json={"kind": "group", "name": "disk", "member_ids": []},
            )
            room_id = room.json()["id"]
            messages = f"/api/v1/rooms/{room_id}/messages"
            assert (await http.post(messages, headers=headers, json={"content": "ok"})).is_success
            assert (await http.get("/readyz")).status_code == 200

            filler = fill(small_disk)
            caplog.clear()
            refused = 0
            for n in range(REQUESTS):
                response = await http.post(
                    messages, headers=headers, json={"content": f"{n} " + "x" * 3000}
                )
                assert response.status_code in (201, 507), response.text
                if response.status_code == 507:
                    refused += 1
                    assert response.json()["error"]["code"] == "storage_full"
                    assert int(response.headers["Retry-After"]) > 0
            assert refused > 0
            async with ws_client(live, token_of(headers)) as ws:
                frame = {"type": "message.send", "room_id": room_id, "content": "y" * 3000}
                await ws.send({**frame, "client_id": "full-1"})
                answer = await ws.recv_until(lambda f: f["type"] in ("error", "message.created"))
                assert answer[-1]["type"] == "error", answer
                assert answer[-1]["code"] == "storage_full"
                assert answer[-1]["retry_after"] > 0
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["disk"] == "low"
            history = await http.get(messages, headers=headers)
            assert history.status_code == 200  # reading still works
            assert [r for r in caplog.records if r.exc_info and r.name == "cmschat.http"] == []

            filler.unlink()
            after = await http.post(messages, headers=headers, json={"content": "space again"})
            assert after.status_code == 201, after.text
            assert (await http.get("/readyz")).status_code == 200
            items = (await http.get(messages, headers=headers)).json()["items"]
            assert max(items, key=lambda m: m["seq"])["content"] == "space again"
    check = create_engine(url)
    try:
        async with check.connect() as connection:
            result = await connection.execute(text("PRAGMA integrity_check"))
            assert result.scalar() == "ok"
    finally:
        await check.dispose()
