"""Notices: write (drafts), publish to everyone or some rooms, unpublish, list.

The body is rich text from the console's editor; it is sanitised with nh3 against a small
allow-list before it is stored, so what members receive is safe to insert as HTML.
Publishing sends ``notice.published`` live, after the commit, to exactly its audience.
"""

from __future__ import annotations

from collections.abc import Sequence

import nh3
from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.accounts.models import User
from cmschat.audit import service as audit
from cmschat.chat.models import Room, RoomMember
from cmschat.clock import Clock
from cmschat.cms.notices.models import Notice, NoticeRoom, NoticeState
from cmschat.cms.notices.schemas import NoticeRead
from cmschat.errors import Conflict, Invalid, NotFound
from cmschat.events import EVERYONE, Published, queue_events

ALLOWED_TAGS = frozenset(
    {
        "p",
        "br",
        "b",
        "strong",
        "i",
        "em",
        "u",
        "s",
        "h2",
        "h3",
        "ul",
        "ol",
        "li",
        "blockquote",
        "code",
        "pre",
        "a",
    }
)
ALLOWED_ATTRIBUTES = {"a": frozenset({"href", "title"})}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
VISIBLE_LIMIT = 50


def sanitise(body_html: str) -> str:
    """The editor's HTML with everything outside the allow-list removed."""
    clean = nh3.clean(
        body_html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer nofollow",
    ).strip()
    if not clean:
        raise Invalid(
            "the notice has no text left once unsafe markup is removed", field="body_html"
        )
    return clean


async def get_notice(session: AsyncSession, *, notice_id: int) -> Notice:
    """One notice, or NotFound."""
    notice = await session.get(Notice, notice_id)
    if notice is None:
        raise NotFound("no such notice")
    return notice


async def room_ids_of(session: AsyncSession, notice_id: int) -> list[int] | None:
    """The rooms of a targeted notice; None if it is for everyone."""
    notice = await get_notice(session, notice_id=notice_id)
    if notice.for_everyone:
        return None
    rows = await session.scalars(
        select(NoticeRoom.room_id)
        .where(NoticeRoom.notice_id == notice_id)
        .order_by(NoticeRoom.room_id)
    )
    return list(rows.all())


async def _set_rooms(session: AsyncSession, notice: Notice, room_ids: Sequence[int] | None) -> None:
    await session.execute(delete(NoticeRoom).where(NoticeRoom.notice_id == notice.id))
    notice.for_everyone = room_ids is None
    if room_ids is None:
        return
    wanted = set(room_ids)
    if not wanted:
        raise Invalid("name at least one room, or none (null) for everyone", field="room_ids")
    found = set((await session.scalars(select(Room.id).where(Room.id.in_(wanted)))).all())
    if missing := wanted - found:
        raise Invalid(f"no such rooms: {sorted(missing)}", field="room_ids")
    for room_id in sorted(wanted):
        session.add(NoticeRoom(notice_id=notice.id, room_id=room_id))


async def create_notice(
    session: AsyncSession, *, title: str, body_html: str, room_ids: Sequence[int] | None
) -> Notice:
    """A new draft."""
    notice = Notice(title=title, body_html=sanitise(body_html), state=NoticeState.draft)
    session.add(notice)
    await session.flush()
    await _set_rooms(session, notice, room_ids)
    await session.flush()
    audit.record(
        session,
        action="notice.created",
        target_type="notice",
        target_id=notice.id,
        changes={"title": title, "room_ids": sorted(room_ids) if room_ids is not None else None},
    )
    return notice


async def update_notice(
    session: AsyncSession,
    *,
    notice_id: int,
    title: str | None,
    body_html: str | None,
    room_ids: Sequence[int] | None,
    fields: set[str],
) -> Notice:
    """Edit a notice; a published one is sent again to its (possibly new) audience."""
    notice = await get_notice(session, notice_id=notice_id)
    before = {"title": notice.title, "room_ids": await room_ids_of(session, notice_id)}
    if title is not None:
        notice.title = title
    if body_html is not None:
        notice.body_html = sanitise(body_html)
    if "room_ids" in fields:
        await _set_rooms(session, notice, room_ids)
    await session.flush()
    after = {"title": notice.title, "room_ids": await room_ids_of(session, notice_id)}
    changes: dict[str, object] = dict(audit.changed(before, after))
    if body_html is not None:
        changes["body_html"] = "changed"  # rich text: the notice itself shows the new one
    audit.record(
        session, action="notice.updated", target_type="notice", target_id=notice.id, changes=changes
    )
    if notice.state is NoticeState.published:
        await _announce(session, notice)
    return notice


async def publish_notice(session: AsyncSession, *, notice_id: int, clock: Clock) -> Notice:
    """Show a notice to its audience now (live, and in ``GET /notices``)."""
    notice = await get_notice(session, notice_id=notice_id)
    if notice.state is NoticeState.published:
        raise Conflict("the notice is already published", code="already_published")
    notice.state, notice.published_at = NoticeState.published, clock.now()
    await session.flush()
    audit.record(session, action="notice.published", target_type="notice", target_id=notice.id)
    await _announce(session, notice)
    return notice


async def unpublish_notice(session: AsyncSession, *, notice_id: int) -> Notice:
    """Take a published notice down."""
    notice = await get_notice(session, notice_id=notice_id)
    if notice.state is not NoticeState.published:
        raise Conflict("the notice is not published", code="not_published")
    notice.state = NoticeState.unpublished
    await session.flush()
    audit.record(session, action="notice.unpublished", target_type="notice", target_id=notice.id)
    await _tell_audience(session, notice, "notice.unpublished", {"notice_id": notice.id})
    return notice


async def delete_notice(session: AsyncSession, *, notice_id: int) -> None:
    """Delete a notice for good (taking it down first if it is published)."""
    notice = await get_notice(session, notice_id=notice_id)
    if notice.state is NoticeState.published:
        # The audience is read now, while the notice's rooms still exist.
        await _tell_audience(session, notice, "notice.unpublished", {"notice_id": notice.id})
    audit.record(
        session,
        action="notice.deleted",
        target_type="notice",
        target_id=notice.id,
        changes={"title": notice.title, "state": notice.state},
    )
    await session.delete(notice)
    await session.flush()


async def _announce(session: AsyncSession, notice: Notice) -> None:
    view = NoticeRead.model_validate(notice).model_dump(mode="json")
    await _tell_audience(session, notice, "notice.published", {"notice": view})


async def _tell_audience(
    session: AsyncSession, notice: Notice, event_type: str, payload: dict[str, object]
) -> None:
    """Queue the notice's event for everyone, or for the members of its rooms."""
    if notice.for_everyone:
        queue_events(
            session, [Published(room_id=EVERYONE, seq=None, type=event_type, payload=payload)]
        )
        return
    members = (
        await session.scalars(
            select(RoomMember.user_id)
            .join(NoticeRoom, NoticeRoom.room_id == RoomMember.room_id)
            .where(NoticeRoom.notice_id == notice.id)
            .distinct()
        )
    ).all()
    if not members:
        return
    queue_events(
        session,
        [
            Published(
                room_id=EVERYONE,
                seq=None,
                type=event_type,
                payload=payload,
                only_user_ids=tuple(sorted(members)),
            )
        ],
    )


async def list_notices(
    session: AsyncSession,
    *,
    state: NoticeState | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[Notice]:
    """Notices for the console, newest first."""
    statement = select(Notice).order_by(Notice.id.desc()).limit(limit)
    if state is not None:
        statement = statement.where(Notice.state == state)
    if before is not None:
        statement = statement.where(Notice.id < before)
    return list((await session.scalars(statement)).all())


async def visible_notices(session: AsyncSession, *, user: User) -> list[Notice]:
    """Published notices for everyone or for a room the user is in, newest first."""
    in_my_rooms = (
        select(NoticeRoom.notice_id)
        .join(RoomMember, RoomMember.room_id == NoticeRoom.room_id)
        .where(RoomMember.user_id == user.id)
    )
    statement = (
        select(Notice)
        .where(
            Notice.state == NoticeState.published,
            or_(Notice.for_everyone.is_(True), Notice.id.in_(in_my_rooms)),
        )
        .order_by(Notice.published_at.desc(), Notice.id.desc())
        .limit(VISIBLE_LIMIT)
    )
    return list((await session.scalars(statement)).all())
