"""The purge, with a fake clock moved past the retention periods (SQLite and MariaDB)."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import httpx
import pytest
from asyncmy.errors import OperationalError as MariaDBError
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from cmschat.app import create_app
from cmschat.attachments.models import Attachment
from cmschat.audit import chain
from cmschat.chat.models import Message, Room, RoomEvent
from cmschat.clock import FakeClock
from cmschat.db.actors import SYSTEM_CLI
from cmschat.retention import purge
from cmschat.settings import Settings
from tests.api.test_attachments import PDF, stored_files
from tests.processes import clean_env, cmschat
from tests.retention.conftest import Chat
from tests.s3server import BUCKET, S3Server
from tests.support import NamedUser, audit_events


def stored_files_at(settings: Settings) -> list[Path]:
    root = Path(settings.storage_url.removeprefix("file://"))
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.fixture
async def chat_on_disk(chat: Chat, settings: Settings) -> tuple[Settings, int]:
    """A room with two old messages (one with a file), written on the fake clock."""
    room = await chat.room("ops")
    await chat.send(room, "one", file=PDF)
    await chat.send(room, "two")
    return settings, room


async def count(chat: Chat, model: type, **where: object) -> int:
    async with chat.context.db.unit_of_work(SYSTEM_CLI) as session:
        statement = select(func.count()).select_from(model)
        for name, value in where.items():
            statement = statement.where(getattr(model, name) == value)
        return int(await session.scalar(statement) or 0)


async def test_messages_past_the_default_are_gone_with_their_files(
    chat: Chat, clock: FakeClock
) -> None:
    room = await chat.room("ops")
    await chat.send(room, "old secret plan", file=PDF)
    await chat.advance(days=20)
    await chat.send(room, "recent news")
    await chat.set_defaults(message_days=30, attachment_days=None)
    await chat.advance(days=15)  # the first message is 35 days old, the second 15

    report = await chat.purge()

    assert await chat.history(room) == ["recent news"]
    [loss] = report.rooms
    assert (loss.room_id, loss.messages, loss.attachments, loss.bytes) == (room, 1, 1, len(PDF))
    # Gone, not flagged: no row, no search hit, no event, no file.
    assert await count(chat, Message, room_id=room) == 1
    found = await chat.client.get("/api/v1/search", params={"q": "secret"}, headers=chat.alice)
    assert found.json()["items"] == []
    assert await count(chat, Attachment) == 0
    assert stored_files(chat.context) == []
    async with chat.context.db.unit_of_work(SYSTEM_CLI) as session:
        stored_room = await session.get(Room, room)
        assert stored_room is not None
        events = (
            await session.scalars(select(RoomEvent.seq).where(RoomEvent.room_id == room))
        ).all()
    assert stored_room.purged_through_seq == 2  # member.joined (1), the old message (2)
    assert min(events) == 3
    [event] = await audit_events(chat.context.db, action="retention.purged")
    assert (event.actor, event.target_id) == ("system:retention", str(room))
    assert json.loads(event.changes)["messages"] == 1
    assert "old secret plan" not in " ".join(e.changes for e in await audit_events(chat.context.db))

    again = await chat.purge()  # safe to rerun: nothing left, no new room event
    assert again.rooms == []
    assert len(await audit_events(chat.context.db, action="retention.purged")) == 1


async def test_files_expire_on_their_own_while_the_message_stays(
    chat: Chat, clock: FakeClock
) -> None:
    room = await chat.room("files")
    message = await chat.send(room, "see attached", file=PDF)
    await chat.set_defaults(message_days=None, attachment_days=7)
    await chat.advance(days=8)

    report = await chat.purge()

    assert [(r.messages, r.attachments) for r in report.rooms] == [(0, 1)]
    assert await chat.history(room) == ["see attached"]
    attachment_id = message["attachments"][0]["id"]
    download = await chat.client.get(f"/api/v1/attachments/{attachment_id}", headers=chat.alice)
    assert download.status_code == 404
    assert stored_files(chat.context) == []


async def test_legal_hold_keeps_everything_until_lifted(chat: Chat, clock: FakeClock) -> None:
    held = await chat.room("litigation")
    other = await chat.room("chatter")
    for room in (held, other):
        await chat.send(room, "old")
    await chat.set_defaults(message_days=1, attachment_days=1)
    await chat.set_room(held, legal_hold=True, legal_hold_reason="case 2026-17")
    await chat.advance(days=3)

    report = await chat.purge()

    assert await chat.history(held) == ["old"]
    assert await chat.history(other) == []
    assert {(r.room_id, r.legal_hold, r.messages) for r in report.rooms} == {
        (held, True, 0),
        (other, False, 1),
    }
    [placed] = await audit_events(chat.context.db, action="retention.legal_hold_placed")
    assert json.loads(placed.changes)["reason"] == "case 2026-17"

    response = await chat.client.delete(f"/api/v1/admin/retention/rooms/{held}", headers=chat.admin)
    assert response.status_code == 204
    await chat.purge()
    assert await chat.history(held) == []
    assert len(await audit_events(chat.context.db, action="retention.legal_hold_lifted")) == 1


async def test_room_overrides_beat_the_default_both_ways(chat: Chat, clock: FakeClock) -> None:
    short = await chat.room("short")
    forever = await chat.room("forever")
    plain = await chat.room("plain")
    for room in (short, forever, plain):
        await chat.send(room, "hello")
    await chat.set_defaults(message_days=60, attachment_days=None)
    await chat.set_room(short, message_days=10)
    await chat.set_room(forever, message_days=None)
    await chat.advance(days=30)
    await chat.purge()
    assert [await chat.history(r) for r in (short, forever, plain)] == [[], ["hello"], ["hello"]]

    await chat.advance(days=40)
    await chat.purge()
    assert [await chat.history(r) for r in (forever, plain)] == [["hello"], []]


async def test_dry_run_and_preview_report_without_changing_anything(
    chat: Chat, clock: FakeClock
) -> None:
    room = await chat.room("ops")
    await chat.send(room, "one", file=PDF)
    await chat.send(room, "two")
    await chat.advance(days=10)
    before = len(await audit_events(chat.context.db))

    proposal = await chat.client.post(
        "/api/v1/admin/retention/preview",
        json={"defaults": {"message_days": 5}},
        headers=chat.admin,
    )
    assert proposal.status_code == 200
    body = proposal.json()
    assert (body["messages"], body["attachments"], body["bytes"]) == (2, 1, len(PDF))
    assert body["rooms"][0]["room_id"] == room
    current = await chat.client.get("/api/v1/admin/retention/preview", headers=chat.admin)
    assert current.json()["messages"] == 0  # nothing is saved by a preview

    await chat.set_defaults(message_days=5, attachment_days=None)
    dry = await chat.purge(dry_run=True)
    assert [(r.messages, r.attachments, r.bytes) for r in dry.rooms] == [(2, 1, len(PDF))]
    assert await chat.history(room) == ["one", "two"]
    assert len(stored_files(chat.context)) == 1
    # The preview and the policy change were audited; the dry run changed nothing at all.
    actions = [e.action for e in await audit_events(chat.context.db)][before:]
    assert actions == ["retention.previewed", "retention.defaults_changed"]


async def test_an_interrupted_purge_finishes_on_rerun_with_one_audit_event(
    chat: Chat, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = await chat.room("big")
    for n in range(7):
        await chat.send(room, f"message {n}", file=PDF if n == 0 else None)
    await chat.set_defaults(message_days=1, attachment_days=None)
    await chat.advance(days=2)
    chat.context.settings.retention.batch_size = 2

    real_batch = purge.purge_batch
    calls = 0

    async def crash_on_third_batch(*args: object, **kwargs: object) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ConnectionError("the database went away")
        return await real_batch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(purge, "purge_batch", crash_on_third_batch)
    with pytest.raises(ConnectionError):
        await chat.purge()
    assert await chat.history(room) == ["message 4", "message 5", "message 6"]
    assert await audit_events(chat.context.db, action="retention.purged") == []

    monkeypatch.setattr(purge, "purge_batch", real_batch)
    report = await chat.purge()

    assert await chat.history(room) == []
    assert [(r.messages, r.attachments) for r in report.rooms] == [(7, 1)]
    [event] = await audit_events(chat.context.db, action="retention.purged")
    changes = json.loads(event.changes)
    assert (changes["messages"], changes["interrupted_runs"]) == (7, 1)
    assert stored_files(chat.context) == []


async def test_old_audit_events_expire_behind_a_checkpoint(chat: Chat, clock: FakeClock) -> None:
    room = await chat.room("ops")
    await chat.send(room, "kept")
    old = await audit_events(chat.context.db)
    await chat.advance(days=401)
    await chat.send(room, "newer")

    report = await chat.purge()

    assert report.audit_events_expired == len(old)
    remaining = await audit_events(chat.context.db)
    assert remaining[0].id == old[-1].id + 1
    [checkpoint] = [e for e in remaining if e.action == "audit.expired"]
    details = json.loads(checkpoint.changes)
    assert (details["through_id"], details["through_hash"]) == (old[-1].id, old[-1].hash)
    async with chat.context.db.unit_of_work(SYSTEM_CLI) as session:
        verdict = await chain.verify(session)
    assert verdict.ok, verdict.describe()


async def test_on_s3_purged_files_leave_the_bucket(
    settings: Settings, clock: FakeClock, s3_server: S3Server, alice: NamedUser, admin: NamedUser
) -> None:
    prefix = uuid.uuid4().hex
    on_s3 = s3_server.settings_for(settings, prefix)
    app = create_app(on_s3, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            chat = Chat(
                client=client,
                context=app.state.context,
                users=(alice, admin),
                alice=await alice.login(client),
                admin=await admin.login(client),
            )
            room = await chat.room("s3")
            await chat.send(room, "with a file", file=PDF)
            await chat.send(room, "another", file=PDF)
            listed = s3_server.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
            assert listed["KeyCount"] == 2
            await chat.set_defaults(message_days=3, attachment_days=None)
            await chat.advance(days=4)
            report = await chat.purge()
    assert report.totals == (2, 2, 2 * len(PDF))
    listed = s3_server.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    assert listed.get("KeyCount", 0) == 0


def test_the_command_previews_then_purges(
    chat_on_disk: tuple[Settings, int], tmp_path: Path
) -> None:
    """``cmschat retention run`` runs on the real clock: the chat is from January 2026."""
    settings, room = chat_on_disk
    env = clean_env(
        CMSCHAT_DATABASE_URL=settings.database_url,
        CMSCHAT_STORAGE_URL=settings.storage_url,
        CMSCHAT_DATA_DIR=str(settings.data_dir),
        CMSCHAT_RETENTION__MESSAGE_DAYS="30",
    )
    dry = cmschat(tmp_path, "retention", "run", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"ops (#{room}): 2 messages, 1 files, {len(PDF)} bytes" in dry.stdout
    assert "would remove 2 messages and 1 files" in dry.stdout
    assert len(stored_files_at(settings)) == 1

    done = cmschat(tmp_path, "retention", "run", env=env)
    assert done.returncode == 0, done.stderr
    assert "removed 2 messages and 1 files" in done.stdout
    assert stored_files_at(settings) == []
    again = cmschat(tmp_path, "retention", "run", env=env)
    assert "removed 0 messages" in again.stdout


async def test_old_sign_in_records_are_removed(
    chat: Chat, client: httpx.AsyncClient, alice: NamedUser
) -> None:
    from cmschat.accounts.models import AuthToken, LoginAttempt

    await client.post("/api/v1/auth/login", json={"username": "alice", "password": "wrong-1234"})
    assert await count(chat, LoginAttempt) >= 3  # two logins by the fixture, one failure
    old = await count(chat, LoginAttempt)
    await chat.advance(days=91)  # past 90 days of attempts and every token's absolute expiry

    report = await chat.purge()

    assert report.login_attempts_removed == old
    assert await count(chat, LoginAttempt) == 2  # advance() signed alice and the admin in again
    assert report.sessions_removed >= 2
    assert await count(chat, AuthToken) == 2  # the two sessions just opened
    [run] = await audit_events(chat.context.db, action="retention.run")
    changes = json.loads(run.changes)
    assert changes["login_attempts_removed"] == report.login_attempts_removed


async def test_a_batch_ended_as_a_deadlock_victim_runs_again_and_the_run_completes(
    chat: Chat, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    room = await chat.room("busy")
    for n in range(5):
        await chat.send(room, f"message {n}")
    await chat.set_defaults(message_days=1, attachment_days=None)
    await chat.advance(days=2)
    chat.context.settings.retention.batch_size = 2

    real_batch = purge.purge_batch
    calls = 0

    async def second_batch_collides_twice(*args: object, **kwargs: object) -> int:
        # As InnoDB ends a deadlock's victim: after the batch's statements, before its commit.
        nonlocal calls
        calls += 1
        removed = await real_batch(*args, **kwargs)  # type: ignore[arg-type]
        if calls in (2, 3):
            raise OperationalError(
                "DELETE FROM messages ...",
                {},
                MariaDBError(1213, "Deadlock found when trying to get lock; try restarting"),
            )
        return removed

    monkeypatch.setattr(purge, "purge_batch", second_batch_collides_twice)
    caplog.set_level(logging.INFO, logger=purge.__name__)
    report = await chat.purge()

    assert calls == 5  # 2, 2 (ended twice, rolled back, then kept), 1
    assert await chat.history(room) == []
    [loss] = report.rooms
    assert (loss.messages, report.stopped_early) == (5, False)  # nothing counted twice
    [event] = await audit_events(chat.context.db, action="retention.purged")
    assert json.loads(event.changes)["messages"] == 5
    retried = [
        r for r in caplog.records if getattr(r, "event.action", "") == "retention.batch_retried"
    ]
    assert len(retried) == 2


async def test_a_batch_that_keeps_colliding_fails_the_run(
    chat: Chat, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = await chat.room("stuck")
    await chat.send(room, "old")
    await chat.set_defaults(message_days=1, attachment_days=None)
    await chat.advance(days=2)

    async def always_collides(*args: object, **kwargs: object) -> int:
        raise OperationalError("DELETE", {}, MariaDBError(1213, "Deadlock found"))

    monkeypatch.setattr(purge, "purge_batch", always_collides)
    with pytest.raises(OperationalError):
        await chat.purge()
    assert await chat.history(room) == ["old"]
