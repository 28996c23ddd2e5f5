"""The per-process membership and user caches (chat/caches.py) never outlive the change
that invalidates them: a removed member is refused at once, an archived room takes no
message, a renamed user shows by the new name, and a moment the broker cannot vouch for
(an outage, a reconnect) empties them."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import delete

from cmschat.accounts.models import User
from cmschat.chat.caches import Bounded, HotCaches, Membership
from cmschat.chat.models import MemberRole, RoomKind, RoomMember
from cmschat.context import AppContext
from cmschat.realtime.broker import MemoryBroker
from tests.api.test_messages import ROOMS, group, post, send
from tests.support import NamedUser, error_of


async def warm(client: httpx.AsyncClient, headers: dict[str, str], room_id: int) -> None:
    """A send and a page: the member's membership is now cached."""
    await send(client, headers, room_id, "warming up")
    response = await client.get(f"{ROOMS}/{room_id}/messages", headers=headers)
    assert response.status_code == 200


async def refused(client: httpx.AsyncClient, headers: dict[str, str], room_id: int) -> None:
    """Neither send nor read: 404, as for a room never joined."""
    sent = await post(client, headers, room_id, "after removal")
    assert sent.status_code == 404, sent.text
    read = await client.get(f"{ROOMS}/{room_id}/messages", headers=headers)
    assert read.status_code == 404, read.text
    assert "after removal" not in read.text and "warming up" not in read.text


async def test_a_removed_member_is_refused_at_once(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    await warm(client, b, room_id)
    assert context.caches is not None and (room_id, bob.id) in context.caches.members._entries
    removed = await client.delete(f"{ROOMS}/{room_id}/members/{bob.id}", headers=a)
    assert removed.status_code == 204
    await refused(client, b, room_id)


async def test_a_lossy_broker_does_not_keep_this_instance_stale(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    await warm(client, b, room_id)
    context.broker = MemoryBroker()  # never started: it delivers nothing, as if all were lost
    assert (
        await client.delete(f"{ROOMS}/{room_id}/members/{bob.id}", headers=a)
    ).status_code == 204
    await refused(client, b, room_id)


async def test_an_archived_room_takes_no_message_from_a_cached_member(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    await warm(client, b, room_id)
    archived = await client.patch(f"{ROOMS}/{room_id}", headers=a, json={"archived": True})
    assert archived.status_code == 200
    sent = await post(client, b, room_id, "into the archive")
    assert sent.status_code == 409 and error_of(sent)["code"] == "room_archived"


async def test_a_renamed_user_shows_by_the_new_name_in_the_next_message(
    client: httpx.AsyncClient,
    admin: NamedUser,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
) -> None:
    a, b, boss = await alice.login(client), await bob.login(client), await admin.login(client)
    room_id = await group(client, a, bob)
    await warm(client, b, room_id)
    async with context.db.unit_of_work() as session:
        socket_user = await session.get(User, bob.id)  # as a WebSocket holds it: from sign-in
    assert socket_user is not None
    renamed = await client.patch(
        f"/api/v1/admin/users/{bob.id}", headers=boss, json={"display_name": "Robert"}
    )
    assert renamed.status_code == 200
    by_http = await send(client, b, room_id, "by http")
    assert by_http["author"]["display_name"] == "Robert"
    view, _ = await context.sends.send(user=socket_user, room_id=room_id, draft=_Draft("by ws"))
    assert socket_user.display_name == "Bob" and view.data["author"] is not None
    assert view.data["author"]["display_name"] == "Robert"
    items = (await client.get(f"{ROOMS}/{room_id}/messages", headers=a)).json()["items"]
    assert {m["author"]["display_name"] for m in items if m["author"]["id"] == bob.id} == {"Robert"}


class _Draft:
    """A WebSocket ``message.send`` frame's fields."""

    def __init__(self, content: str) -> None:
        self.content = content
        self.client_id: str | None = None
        self.reply_to: int | None = None
        self.attachment_ids: list[int] = []


async def _remove_behind_its_back(context: AppContext, room_id: int, user_id: int) -> None:
    """A removal this instance hears nothing of (another instance's, while Redis was away)."""
    async with context.db.unit_of_work() as session:
        await session.execute(
            delete(RoomMember).where(RoomMember.room_id == room_id, RoomMember.user_id == user_id)
        )


async def test_while_the_broker_is_away_the_caches_are_not_trusted(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    await warm(client, b, room_id)
    await _remove_behind_its_back(context, room_id, bob.id)
    assert isinstance(context.broker, MemoryBroker)
    context.broker.connected = False  # type: ignore[misc] - a broker that lost Redis
    try:
        await refused(client, b, room_id)
        assert context.caches is not None and len(context.caches.members) == 0
    finally:
        context.broker.connected = True  # type: ignore[misc]


async def test_a_broker_reconnect_flushes_the_caches(
    alice: NamedUser,
    bob: NamedUser,
    settings: object,
    clock: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reconnects: list[Callable[[], None]] = []

    class Reconnecting(MemoryBroker):
        async def start(self, deliver: object, on_reconnect: Callable[[], None]) -> None:
            reconnects.append(on_reconnect)
            await super().start(deliver, on_reconnect)  # type: ignore[arg-type]

    monkeypatch.setattr("cmschat.app.MemoryBroker", Reconnecting)
    from cmschat.app import create_app

    app = create_app(settings, clock=clock)  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        context: AppContext = app.state.context
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            a, b = await alice.login(client), await bob.login(client)
            room_id = await group(client, a, bob)
            await warm(client, b, room_id)
            await _remove_behind_its_back(context, room_id, bob.id)
            assert (await post(client, b, room_id, "still cached")).status_code == 201
            (reconnected,) = reconnects
            reconnected()  # what RedisBroker calls when its subscription comes back
            await refused(client, b, room_id)


def test_the_caches_stay_bounded_and_expire() -> None:
    now = [0.0]
    caches = HotCaches(size=2, ttl=5, now=lambda: now[0])
    member = Membership(role=MemberRole.member, archived=False, kind=RoomKind.group)
    for room_id in (1, 2, 3):
        caches.keep_membership(caches.epoch, room_id, 7, member)
    assert len(caches.members) == 2 and caches.membership(1, 7) is None  # least recent went
    assert caches.membership(3, 7) == member
    now[0] = 5.0
    assert caches.membership(3, 7) is None and len(caches.members) == 1


def test_a_read_that_raced_an_invalidation_is_not_kept() -> None:
    caches = HotCaches(size=10, ttl=5)
    member = Membership(role=MemberRole.member, archived=False, kind=RoomKind.group)
    epoch = caches.epoch  # the read begins
    caches.invalidate(type="member.left", room_id=1, user_id=7)  # the removal commits
    caches.keep_membership(epoch, 1, 7, member)  # the read ends with what it saw before
    assert caches.membership(1, 7) is None


def test_a_full_cache_of_many_rooms_holds_its_bound() -> None:
    cache: Bounded[int, int] = Bounded(size=100, ttl=60, now=lambda: 0.0)
    for key in range(10_000):
        cache.put(key, key)
    assert len(cache) == 100 and cache.get(9_999) == 9_999 and cache.get(0) is None


@pytest.mark.parametrize("database_url", ["sqlite", "mariadb"], indirect=True)
async def test_a_batch_reads_what_left_the_caches_through_its_driver(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memberships and authors that expired (``cache_seconds``) are read in the batch's
    own transaction through its driver: no pass through SQLAlchemy's execution and
    bridge (which then also took the batch's commit), the same answers, kept again."""
    from cmschat.db.writer import WriterTransaction

    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    await warm(client, b, room_id)
    through_sqlalchemy: list[object] = []
    execute = WriterTransaction.execute

    async def recorded(self: WriterTransaction, statement: object) -> object:
        through_sqlalchemy.append(statement)
        return await execute(self, statement)  # type: ignore[arg-type]

    monkeypatch.setattr(WriterTransaction, "execute", recorded)
    caches = context.caches
    assert caches is not None
    caches.flush()  # as if their time was up
    sent = await send(client, b, room_id, "after the caches' time")
    assert sent["author"]["display_name"] == "Bob"
    assert through_sqlalchemy == []
    assert (room_id, bob.id) in caches.members._entries and bob.id in caches.users._entries
    await _remove_behind_its_back(context, room_id, bob.id)
    caches.flush()
    await refused(client, b, room_id)  # a pair the driver does not find is no membership
    assert through_sqlalchemy == []
