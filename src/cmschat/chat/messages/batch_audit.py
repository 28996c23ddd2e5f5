"""The ``message.created`` audit events of a send batch, chained in the batch's store trip.

An event's target is its message's id, known only once the message is inserted; so the
events are described before the trip and finished in the driver's thread, right after
the insert, then chained after the audit head in the same trip (``batch_sql.store``).
They are in the batch's transaction as any recorded event is: committed with the
messages or rolled back with them, the head exported only after the commit
(``WriterTransaction.on_commit``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cmschat.audit import service as audit
from cmschat.audit.append import Chained
from cmschat.db.driver_sql import Driver
from cmschat.db.writer import WriterTransaction

_ENCODE_STRING = json.encoder.encode_basestring

Created = tuple[int, str, Sequence[int], audit.Origin]
"""A stored send as its event describes it: room, content's digest (``audit.text_digest``),
uploads' ids, who asked."""


_CHANGES = '{"attachment_ids":[%s],"content":%s,"room_id":%s}'
"""A send's changes as canonical JSON (keys sorted, no spaces), its values to fill in."""


def changes_json(changes: dict[str, Any]) -> str | None:
    """The canonical JSON of a send's changes, written into ``_CHANGES`` (what
    ``canonical_json`` writes, for a fifth of its cost); None if a value is not of the types
    a send's are (exact ints, a str), for the encoder to decide."""
    room_id, digest, file_ids = changes["room_id"], changes["content"], changes["attachment_ids"]
    if type(room_id) is not int or type(digest) is not str:
        return None
    if any(type(file_id) is not int for file_id in file_ids):
        return None
    return _CHANGES % (",".join(map(str, file_ids)), _ENCODE_STRING(digest), room_id)


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
        described = []
        for room_id, digest, file_ids, origin in sends:
            changes = {
                "room_id": room_id,
                "content": digest,
                "attachment_ids": list(file_ids),
            }
            described.append(
                audit.event_fields(
                    transaction.info,
                    action="message.created",
                    target_type="message",
                    changes=changes,
                    origin=origin,
                    now=now,
                    changes_json=(
                        None if origin.client_request_id is not None else changes_json(changes)
                    ),
                )
            )
        self._described = described
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
