"""The writes of one group commit: each send checked as ``send_message`` checks it, then
all of them stored with a few Core statements.

Checks run in ``send_message``'s order (membership, repeat, archived room, content, reply,
rate, files), so a send gets the same answer in a batch as alone (the content was checked
in the sender's task, ``prepared``: its verdict is raised in its place). Checks only read; a
send that fails them fails alone and writes nothing, so no savepoint is needed.

The stored messages' JSON and events are built while the COMMIT is on its way
(``WriterTransaction.while_committing``): nothing in them waits for it, and the loop is
otherwise idle while SQLite's thread writes and syncs the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cmschat import jsonbytes
from cmschat.attachments import service as attachments
from cmschat.attachments.models import Attachment
from cmschat.chat import hot_reads
from cmschat.chat.caches import HotCaches, Shown
from cmschat.chat.messages import batch_audit, batch_reads, batch_sql, page_tail
from cmschat.chat.messages.batch_reads import ClientKey
from cmschat.chat.messages.sending import SendRules, link_mentions
from cmschat.chat.messages.views import ATTACHMENT_FIELDS, Sent, sent_event
from cmschat.chat.models import EventType
from cmschat.chat.ratelimit import check_send_rate
from cmschat.db.writer import WriterTransaction
from cmschat.errors import CmschatError, Conflict, Invalid, NotFound

if TYPE_CHECKING:
    from cmschat.chat.messages.group_commit import Outcome, Pending

log = logging.getLogger(__name__)


Answers = Callable[[], "list[Outcome | BaseException]"]
"""Per send, its answer or the error it gets: to ask once the batch's transaction ended."""


class SendWithdrawn(Exception):
    """The sender no longer wants the send (its session ended): nothing was stored."""


@dataclass(slots=True)
class _New:
    """A send that passed its checks, ready to store (its mentions linked in place)."""

    index: int
    pending: Pending
    html: str
    mentioned: list[Any]
    """The usernames it mentions, until ``_link_mentions`` makes them member ids."""
    files: list[Attachment]


async def write_batch(
    transaction: WriterTransaction,
    *,
    batch: Sequence[Pending],
    rules: SendRules,
    now: datetime,
    caches: HotCaches | None = None,
) -> Answers:
    """Check and store a batch of sends; its answers, to ask for once ``transaction`` has
    committed.

    ``caches``: the process's memberships and user names (``chat.caches``)."""
    outcomes: list[Outcome | BaseException | None] = [None] * len(batch)
    members = await hot_reads.memberships(
        transaction, caches, {(pending.room_id, pending.user_id) for pending in batch}
    )
    repeats, known = await batch_reads.reads(transaction, batch, members)
    parents = await batch_reads.parents(transaction, batch)
    accepted: list[_New] = []
    firsts: dict[ClientKey, int] = {}
    duplicates: list[tuple[int, int]] = []
    claimed: set[int] = set()
    for index, pending in enumerate(batch):
        draft, room_id = pending.draft, pending.room_id
        key = batch_reads.key_of(pending)
        try:
            member = members.get((room_id, pending.user_id))
            if member is None:
                raise NotFound("no such room")
            if key is not None and key in repeats:
                outcomes[index] = (repeats[key], False)
                continue
            if key is not None and key in firsts:
                duplicates.append((index, firsts[key]))
                continue
            if member.archived:
                raise Conflict("the room is archived", code="room_archived")
            prepared = pending.prepared
            if prepared.refused is not None:  # checked in the sender's task, raised here
                raise prepared.refused
            if draft.reply_to is not None and parents.get(draft.reply_to) != room_id:
                raise Invalid("reply_to must be a message of this room", field="reply_to")
            # Neither await below is entered when it has nothing to do: a coroutine per
            # send each, for nothing, on every send of every batch.
            if not pending.rate_taken:
                if rules.limiter is not None:
                    await check_send_rate(rules.limiter, user_id=pending.user_id)
                pending.rate_taken = True
            file_ids = list(dict.fromkeys(draft.attachment_ids))
            taken = claimed.intersection(file_ids)
            if taken:  # another send of this batch carries it
                raise attachments.not_linkable(min(taken))
            files = (
                await attachments.linkable(
                    await transaction.orm(),
                    user=pending.user,
                    room_id=room_id,
                    attachment_ids=file_ids,
                )
                if file_ids
                else []
            )
            if pending.still_wanted is not None and not pending.still_wanted():
                raise SendWithdrawn
        except (CmschatError, SendWithdrawn) as error:
            outcomes[index] = error
            continue
        claimed.update(file_ids)
        if key is not None:
            firsts[key] = index
        accepted.append(_New(index, pending, prepared.html, prepared.mentioned, files))
    _link_mentions(known, accepted)
    sents = await _store(transaction, accepted, now, caches)

    def answers() -> list[Outcome | BaseException]:
        for index, view in sents.items():
            outcomes[index] = view if isinstance(view, Exception) else (view, True)
        for index, first in duplicates:
            outcome = outcomes[first]
            outcomes[index] = (outcome[0], False) if isinstance(outcome, tuple) else outcome
        return [outcome for outcome in outcomes if outcome is not None]

    return answers


def _link_mentions(known: Mapping[tuple[int, str], int], accepted: list[_New]) -> None:
    """Each send's mentions of its room's members linked (its names become member ids)."""
    if not any(new.mentioned for new in accepted):
        return
    linked = link_mentions(
        known, [(new.pending.room_id, new.pending.draft.content, new.mentioned) for new in accepted]
    )
    # In place: a copy of each send (``dataclasses.replace``) cost more than the linking.
    for new, (html, mentioned) in zip(accepted, linked, strict=True):
        if new.mentioned:
            new.mentioned = mentioned
            if html:
                new.html = html


async def _store(
    transaction: WriterTransaction,
    accepted: Sequence[_New],
    now: datetime,
    caches: HotCaches | None,
) -> dict[int, Sent | Exception]:
    """Number, insert, link, index and audit the accepted sends in one trip; their messages
    (by index), built and their events queued while the COMMIT is on its way.

    A message whose answer cannot be built (a bug) is stored all the same: its sender gets
    the error, logged, and the others their answers; nothing is written again."""
    if not accepted:
        return {}
    # Authors as shown now: a socket's user object dates from its sign-in (renamed since?).
    authors = await hot_reads.shown(transaction, caches, {new.pending.user_id for new in accepted})
    driver = await transaction.driver()
    stamped = {
        actor: batch_sql.stamps(driver, now, actor)
        for actor in {new.pending.origin.actor for new in accepted}
    }
    last = page_tail.ending(now)
    created = batch_audit.CreatedEvents(
        transaction,
        driver,
        [
            (
                new.pending.room_id,
                new.pending.prepared.digest,
                [file.id for file in new.files],
                new.pending.origin,
            )
            for new in accepted
        ],
        now,
    )
    stored = await batch_sql.store(
        driver,
        [
            (
                new.pending.room_id,
                new.pending.user_id,
                new.pending.draft.client_id,
                new.pending.draft.reply_to,
                new.pending.draft.content,
                new.html,
                stamped[new.pending.origin.actor],
                new.mentioned,
                [file.id for file in new.files],
                new.pending.prepared.grams,
                None if new.files else _tail(new, last, sqlite=driver.sqlite),
            )
            for new in accepted
        ],
        audit=created.steps,
        run=transaction.steps_then_commit,
    )
    created.stored()
    sents: dict[int, Sent | Exception] = {}

    def build() -> None:
        events = []
        for new, (seq, message_id) in zip(accepted, stored, strict=True):
            try:
                sent = _sent(new, seq, message_id, now, authors.get(new.pending.user_id))
                event = sent_event(EventType.message_created, seq, sent)
            except Exception as error:  # stored, committing: only this answer is lost
                log.error("message %d stored, its answer not built", message_id, exc_info=True)
                sents[new.index] = error
                continue
            events.append(event)
            sents[new.index] = sent
        transaction.queue_events(events)

    transaction.while_committing(build)
    return sents


def _tail(new: _New, last: bytes, *, sqlite: bool) -> str:
    """The stored history tail of a send without files, as the insert binds it."""
    prepared = new.pending.prepared
    html = prepared.html_json if new.html is prepared.html else jsonbytes.dumps(new.html)
    made = page_tail.tail(
        prepared.content_json, html, new.pending.draft.reply_to, new.mentioned, last
    )
    return page_tail.bound(made, sqlite=sqlite)


def _sent(new: _New, seq: int, message_id: int, now: datetime, shown: Shown | None) -> Sent:
    """The stored message's API shape, from what is at hand (nothing read back), built as
    ``MessageRead`` would dump it, key for key (no model on the hot path)."""
    pending = new.pending
    draft = pending.draft
    if shown is None:
        shown = Shown(username=pending.user.username, display_name=pending.user.display_name)
    files = [
        {**{name: getattr(file, name) for name in ATTACHMENT_FIELDS}, "message_id": message_id}
        for file in new.files
    ]
    return Sent.of(
        {
            "id": message_id,
            "room_id": pending.room_id,
            "seq": seq,
            "author": {
                "id": pending.user_id,
                "username": shown.username,
                "display_name": shown.display_name,
            },
            "content": draft.content,
            "content_html": new.html,
            "reply_to": draft.reply_to,
            "mentions": sorted(new.mentioned),
            "created_at": now,
            "updated_at": now,
            "edited": False,
            "deleted": False,
            "attachments": files,
        }
    )
