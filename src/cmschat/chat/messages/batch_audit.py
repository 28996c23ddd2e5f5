"""The ``message.created`` audit events of a send batch, chained in the batch's store trip.

An event's target is its message's id, known only once the message is inserted; so the
events are described before the trip and finished in the driver's thread, right after
the insert, then chained after the audit head in the same trip (``batch_sql.store``).
They are in the batch's transaction as any recorded event is: committed with the
messages or rolled back with them, the head exported only after the commit
(``WriterTransaction.on_commit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cmschat.audit import service as audit
from cmschat.audit.append import Chained
from cmschat.db.driver_sql import Driver
from cmschat.db.writer import WriterTransaction

Created = tuple[int, str, Sequence[int], audit.Origin]
"""A stored send as its event describes it: room, content, uploads' ids, who asked."""


class CreatedEvents:
    """The events of a batch's new messages: ``steps`` for ``batch_sql.store``'s ``audit``,
    then ``stored`` once the trip ran."""

    def __init__(
        self,
        transaction: WriterTransaction,
        driver: Driver,
        sends: Sequence[Created],
        now: datetime,
    ) -> None:
        self._transaction = transaction
        self._driver = driver
        self._described = [
            audit.event_fields(
                transaction.info,
                action="message.created",
                target_type="message",
                changes={
                    "room_id": room_id,
                    "content": audit.text_digest(content),
                    "attachment_ids": list(file_ids),
                },
                origin=origin,
                now=now,
            )
            for room_id, content, file_ids, origin in sends
        ]
        self._chain: Chained | None = None

    def steps(self, ids: Sequence[int]) -> Chained:
        """The chaining steps; ``ids``: the messages' ids, in order, once inserted."""

        described = self._described  # not ``self``: a cycle through it would wait for the GC

        def events() -> list[dict[str, Any]]:
            return [
                {**fields, "target_id": str(message_id)}
                for fields, message_id in zip(described, ids, strict=True)
            ]

        self._chain = audit.chain_steps(self._transaction.session_class, self._driver, events)
        return self._chain

    def stored(self) -> None:
        """The trip ran: the new head is exported once the transaction commits."""
        if self._chain is not None:
            self._transaction.on_commit(audit.exported(self._chain))
