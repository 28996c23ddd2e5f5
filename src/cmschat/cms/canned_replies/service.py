"""Canned replies: admins write them, agents read them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.audit import service as audit
from cmschat.cms.canned_replies.models import CannedReply
from cmschat.errors import Conflict, NotFound


async def list_replies(session: AsyncSession, *, query: str | None = None) -> list[CannedReply]:
    """Every reply, by shortcut (a few hundred at most: no paging)."""
    statement = select(CannedReply).order_by(CannedReply.shortcut)
    if query:
        statement = statement.where(CannedReply.shortcut.startswith(query.lower(), autoescape=True))
    return list((await session.scalars(statement)).all())


async def _save(session: AsyncSession, reply: CannedReply) -> None:
    # A taken shortcut fails the flush; the request then rolls back as a whole. (Read the
    # shortcut first: after a failed flush the object cannot be read.)
    shortcut = reply.shortcut
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"the shortcut /{shortcut} is taken", code="shortcut_taken") from None


async def create_reply(
    session: AsyncSession, *, shortcut: str, title: str, body: str
) -> CannedReply:
    """A new reply; Conflict if the shortcut is taken."""
    reply = CannedReply(shortcut=shortcut, title=title, body=body)
    session.add(reply)
    await _save(session, reply)
    audit.record(
        session,
        action="canned_reply.created",
        target_type="canned_reply",
        target_id=reply.id,
        changes={"shortcut": shortcut, "title": title, "body": audit.text_digest(body)},
    )
    return reply


async def update_reply(
    session: AsyncSession,
    *,
    reply_id: int,
    shortcut: str | None,
    title: str | None,
    body: str | None,
) -> CannedReply:
    """Change a reply."""
    reply = await session.get(CannedReply, reply_id)
    if reply is None:
        raise NotFound("no such canned reply")
    before = {
        "shortcut": reply.shortcut,
        "title": reply.title,
        "body": audit.text_digest(reply.body),
    }
    if shortcut is not None:
        reply.shortcut = shortcut
    if title is not None:
        reply.title = title
    if body is not None:
        reply.body = body
    await _save(session, reply)
    after = {
        "shortcut": reply.shortcut,
        "title": reply.title,
        "body": audit.text_digest(reply.body),
    }
    audit.record(
        session,
        action="canned_reply.updated",
        target_type="canned_reply",
        target_id=reply.id,
        changes=audit.changed(before, after),
    )
    return reply


async def delete_reply(session: AsyncSession, *, reply_id: int) -> None:
    """Remove a reply."""
    reply = await session.get(CannedReply, reply_id)
    if reply is None:
        raise NotFound("no such canned reply")
    audit.record(
        session,
        action="canned_reply.deleted",
        target_type="canned_reply",
        target_id=reply.id,
        changes={"shortcut": reply.shortcut},
    )
    await session.delete(reply)
    await session.flush()
