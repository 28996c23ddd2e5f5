"""Group commit: the sends that arrive together are written in one transaction, one fsync.

One commit costs the same for one message as for hundreds (fdatasync ~0.2 ms here, and a
transaction's round trips), so a process writes every send waiting for the writer in one
unit of work: reads that check each send (membership, repeats, replies, files), sequence
numbers for each room in one statement, Core inserts for all the rows, the audit events
and the real-time events. Each sender is answered only after that commit (delivery.md,
point 7). A send that fails its checks fails alone; if the batch itself fails (a client id
another process stored meanwhile, a lost connection), every send in it is retried on its
own through ``sending.send_message``, which gives each its own answer.

The batch is whatever queued while the previous commit ran: no timer, so a lone send waits
for nothing.

Traced, a batch of several sends is a trace of its own (``chat.send_batch``, holding the
batch's SQL and publish), linked both ways with the span of each send in it; a batch of one
is traced as part of its send's own span. Each send's span gets the time it queued and the
time its batch took (docs/monitoring.md). The writer runs in an empty context, so neither
its spans nor its log lines borrow the request that happened to start it.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.trace import Span

from cmschat.accounts.models import User
from cmschat.audit import service as audit
from cmschat.chat.caches import HotCaches
from cmschat.chat.messages import batch_writes, sending
from cmschat.chat.messages.batch_writes import SendWithdrawn
from cmschat.chat.messages.prepared import Prepared, prepare
from cmschat.chat.messages.views import Sent
from cmschat.db.actors import SYSTEM_SENDER, user_actor
from cmschat.db.session import Database
from cmschat.observability import instruments, tracing

log = logging.getLogger(__name__)

MAX_BATCH = 256
"""Sends per transaction at most: bounds a transaction's length and its statement sizes."""

MAX_BATCH_BYTES = 2_000_000
"""Most text one batch takes (``_weight``; its first send always): 256 sends of 4,000
emoji made one 23.5 MB INSERT, past MariaDB's default ``max_allowed_packet`` (16 MiB),
and a batch the server refused went out again as 256 lone sends. 2 MB keeps a batch's
largest statement well under 4 MiB, where some operators set the packet limit, and costs
nothing to ordinary sends: 256 of 1,000 ASCII characters weigh ~1.6 MB."""

Outcome = tuple[Sent, bool]
"""A send's answer: the message (its JSON built once), and whether it is new."""

__all__ = ["GroupCommit", "Outcome", "Pending", "SendWithdrawn", "sender_origin"]


@dataclass(slots=True)
class Pending:
    """One send waiting for the writer, with the future its sender awaits."""

    user: User
    user_id: int
    """``user.id``, read once: an ORM attribute costs a Python call each time it is read,
    and a batch reads a send's author id some nine times."""
    room_id: int
    draft: sending.Draft
    origin: audit.Origin
    still_wanted: Callable[[], bool] | None
    prepared: Prepared
    """Its work that needs no database, done in the sender's task (``prepared``)."""
    rate_taken: bool = False
    """The send's token of the rate limit is spent: a retry on its own must not take two."""
    future: asyncio.Future[Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    """The sender's context: a send retried on its own runs in it (its request id, trace)."""
    span: Span | None = field(default_factory=tracing.waiting_span)
    """The sender's span while tracing (its request's or frame's): a batch of one is traced
    in it, a larger batch linked with it."""
    queued_at: float = field(default_factory=time.perf_counter)


def sender_origin(user: User) -> audit.Origin:
    """Who a send's audit event names, with the sender's request context as it is now."""
    return audit.origin_of(user_actor(user.id), user.username)


class GroupCommit:
    """This process's send writer: queue a send, get its answer after its batch commits."""

    def __init__(
        self,
        db: Database,
        rules: Callable[[], sending.SendRules],
        *,
        max_batch: int = MAX_BATCH,
        max_bytes: int = MAX_BATCH_BYTES,
        caches: HotCaches | None = None,
    ) -> None:
        self.db = db
        self.rules = rules
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self.caches = caches
        """The process's memberships and user names (``chat.caches``); None: none kept."""
        self._queue: list[Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0
        """Transactions committed (tests and the bench read it)."""

    async def send(
        self,
        *,
        user: User,
        room_id: int,
        draft: sending.Draft,
        still_wanted: Callable[[], bool] | None = None,
        origin: audit.Origin | None = None,
    ) -> Outcome:
        """Store a message (or find the first with its ``client_id``), as ``send_message``
        does; ``still_wanted``: checked just before the write, False withdraws the send.
        ``origin``: ``sender_origin(user)`` as the caller took it earlier in the same
        context (a WebSocket's, once for all its sends); None: taken now."""
        pending = Pending(
            user=user,
            user_id=user.id,
            room_id=room_id,
            draft=draft,
            origin=origin if origin is not None else sender_origin(user),
            still_wanted=still_wanted,
            prepared=prepare(draft, max_length=self.rules().max_length),
        )
        self._queue.append(pending)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(
                self._write_all(), name="cmschat-group-commit", context=contextvars.Context()
            )
        # A sender that goes away cancels only this future, never the batch: its send is
        # written with the others and its answer dropped (no shield, one wake-up fewer).
        return await pending.future

    async def close(self) -> None:
        """Finish what is queued (a shutdown drains, never drops, accepted sends)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write_all(self) -> None:
        while self._queue:
            taken = _taken(self._queue, self.max_batch, self.max_bytes)
            batch, self._queue = self._queue[:taken], self._queue[taken:]
            try:
                await self._write(batch)
            except BaseException as error:  # the writer must answer everyone, whatever
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                if not isinstance(error, Exception):
                    raise

    async def _write(self, batch: list[Pending]) -> None:
        with tracing.batch_span(
            "chat.send_batch",
            batch,
            **{
                "cmschat.batch.size": len(batch),
                "cmschat.batch.rooms": len({pending.room_id for pending in batch}),
            },
        ) as span:
            began = time.perf_counter()
            try:
                outcomes = await self._commit(batch)
            finally:
                if span is not None:
                    _time_sends(batch, began, len(batch))
        if outcomes is None:
            return
        self.batches += 1
        instruments.SEND_BATCHES.inc()
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.future.done():
                continue  # its sender went away
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    async def _commit(self, batch: list[Pending]) -> list[Outcome | BaseException] | None:
        """Write and commit the batch; None if it failed and each send went on its own (or,
        when its commit failed on the way, each sender was given the error)."""
        transaction = self.db.writer_unit_of_work(SYSTEM_SENDER)
        try:
            async with transaction:
                answers = await batch_writes.write_batch(
                    transaction,
                    batch=batch,
                    rules=self.rules(),
                    now=self.db.clock.now(),
                    caches=self.caches,
                )
        except Exception as error:
            if transaction.outcome_unknown:
                # The COMMIT failed on its way: the batch may be stored. Sent again, every
                # send without a client id could be stored twice; each sender is told the
                # database failed (503), and one with a client id may safely send again.
                log.error("a batch of %d sends failed in its commit", len(batch), exc_info=True)
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                return None
            log.warning(
                "a batch of %d sends failed; sending each on its own", len(batch), exc_info=True
            )
            await asyncio.gather(
                *(
                    asyncio.create_task(self._alone(pending), context=pending.context)
                    for pending in batch
                )
            )
            return None
        # Outside the ``try``: the batch has committed, whatever happens now.
        return answers()

    async def _alone(self, pending: Pending) -> None:
        """The batch failed: this send on its own, in its own unit of work."""
        try:
            async with self.db.unit_of_work(
                pending.origin.actor, actor_name=pending.origin.actor_name
            ) as session:
                rules = self.rules()
                if pending.rate_taken:
                    rules = dataclasses.replace(rules, limiter=None)
                view, created = await sending.send_message(
                    session,
                    user=pending.user,
                    room_id=pending.room_id,
                    draft=pending.draft,
                    rules=rules,
                )
                if pending.still_wanted is not None and not pending.still_wanted():
                    raise SendWithdrawn
            outcome = (Sent.of_model(view), created)
        except Exception as error:
            if not pending.future.done():
                pending.future.set_exception(error)
            return
        if not pending.future.done():
            pending.future.set_result(outcome)


def _taken(queue: list[Pending], most: int, budget: int) -> int:
    """How many of the queue's first sends one batch takes: at most ``most`` and, past the
    first, no more than ``budget`` bytes of text (``_weight``)."""
    size = 0
    for index, pending in enumerate(queue[:most]):
        size += _weight(pending)
        if index and size > budget:
            return index
    return min(len(queue), most)


def _weight(pending: Pending) -> int:
    """A send's share of its batch's SQL, in bytes: its content and HTML, and its stored
    tail, their JSON hex-encoded on MariaDB (twice its size). The JSON's length stands
    for the text's: the same but for escapes, read without encoding anything again."""
    prepared = pending.prepared
    return 3 * (len(prepared.content_json) + len(prepared.html_json))


def _time_sends(batch: list[Pending], began: float, size: int) -> None:
    """On each traced send's span: how long it queued, how long its batch took to commit."""
    ended = time.perf_counter()
    write_ms = round((ended - began) * 1000, 3)
    for pending in batch:
        if pending.span is not None and pending.span.is_recording():
            pending.span.set_attributes(
                {
                    "cmschat.send.queued_ms": round((began - pending.queued_at) * 1000, 3),
                    "cmschat.send.write_ms": write_ms,
                    "cmschat.send.batch_size": size,
                }
            )
