"""Backup fixtures: a room with messages and files, and the toolkit of the running app."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from cmschat.attachments.storage import LocalStorage, Storage
from cmschat.backup import service
from cmschat.backup.crypto import IDENTITY_NAME, generate_identity
from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.db.session import create_engine
from cmschat.settings import Settings
from tests import support
from tests.support import NamedUser

PDF = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
# Tables compared row by row after a restore (everything a user or an auditor sees).
COMPARED = ("users", "rooms", "room_members", "messages", "attachments", "audit_events")


def toolkit(settings: Settings, storage: Storage, clock: FakeClock) -> service.Toolkit:
    """The backup toolkit for these settings and this store."""
    return service.Toolkit(
        settings=settings,
        target=service.target_for(settings),
        engine=service.engine_for(settings),
        storage=storage,
        clock=clock,
    )


def configure_key(settings: Settings) -> None:
    """On MariaDB, where recipients are required: a key pair in the data dir, configured."""
    if not settings.is_sqlite:
        key = settings.data_dir / IDENTITY_NAME
        public = generate_identity(key)
        settings.backup = settings.backup.model_copy(
            update={"recipients": [public], "identity_file": key}
        )


@pytest.fixture
def kit(context: AppContext, clock: FakeClock) -> service.Toolkit:
    """The running app's backup toolkit; on MariaDB with a configured key pair."""
    configure_key(context.settings)
    return toolkit(context.settings, context.storage, clock)


@pytest.fixture
async def elsewhere(
    context: AppContext, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[service.Toolkit]:
    """An empty database and store "on another machine", same backup target and key."""
    settings = context.settings
    if settings.is_sqlite:
        url = f"sqlite+aiosqlite:///{tmp_path / 'elsewhere' / 'cmschat.db'}"
    else:
        url = await support.create_mariadb_database()
    other = settings.model_copy(
        update={
            "database_url": url,
            "data_dir": tmp_path / "elsewhere",
            "backup": settings.backup.model_copy(
                update={"identity_file": settings.data_dir / IDENTITY_NAME}
            ),
        }
    )
    try:
        yield toolkit(other, LocalStorage(tmp_path / "elsewhere" / "files"), clock)
    finally:
        if not settings.is_sqlite:
            await support.drop_mariadb_database(url)


@dataclass
class Chat:
    """A room where alice talks and sends files."""

    client: httpx.AsyncClient
    headers: dict[str, str]
    room: int

    async def say(self, count: int, prefix: str = "message") -> None:
        """Send ``count`` messages."""
        for n in range(count):
            response = await self.client.post(
                f"/api/v1/rooms/{self.room}/messages",
                headers=self.headers,
                json={"content": f"{prefix} {n} 안녕하세요 **bold**"},
            )
            assert response.status_code == 201, response.text

    async def send_file(self, tag: str) -> dict[str, Any]:
        """Upload a small PDF (unique per tag) and send it in a message."""
        content = PDF + f"% {tag}\n".encode() * 50
        boundary = "b" + hashlib.sha256(tag.encode()).hexdigest()[:16]
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{tag}.pdf"\r\nContent-Type: application/pdf\r\n\r\n'
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        response = await self.client.post(
            f"/api/v1/rooms/{self.room}/attachments",
            content=body,
            headers=self.headers | {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 201, response.text
        meta: dict[str, Any] = response.json()
        sent = await self.client.post(
            f"/api/v1/rooms/{self.room}/messages",
            headers=self.headers,
            json={"content": f"file {tag}", "attachment_ids": [meta["id"]]},
        )
        assert sent.status_code == 201, sent.text
        return meta


@pytest.fixture
async def chat(client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser) -> Chat:
    """alice's room with bob."""
    headers = await alice.login(client)
    response = await client.post(
        "/api/v1/rooms",
        headers=headers,
        json={"kind": "group", "name": "backup", "member_ids": [bob.id]},
    )
    assert response.status_code == 201, response.text
    return Chat(client, headers, int(response.json()["id"]))


async def snapshot_rows(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the compared tables, in id order."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = {}
            for name in COMPARED:
                order = "room_id, user_id" if name == "room_members" else "id"
                rows = await connection.execute(text(f"SELECT * FROM {name} ORDER BY {order}"))  # noqa: S608
                result[name] = [tuple(row) for row in rows]
            return result
    finally:
        await engine.dispose()


async def snapshot_files(database_url: str, storage: Storage) -> dict[str, bytes]:
    """The bytes of every ready attachment, by storage key."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            keys = (
                await connection.execute(
                    text("SELECT storage_key FROM attachments WHERE state = 'ready'")
                )
            ).scalars()
            found = {}
            for key in list(keys):
                found[key] = b"".join([chunk async for chunk in storage.read(key)])
            return found
    finally:
        await engine.dispose()


def sqlite_only() -> Any:
    """Run a test on SQLite only."""
    return pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
