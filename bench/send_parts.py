"""Instructions (or CPU) per send of the per-send pieces of a send batch, each alone.

The pieces of ``v`` (a send's share of a full batch, ``batch_sql.py``) that are cmschat's
own: the checks, the rendering, the search row, the audit event and its link in the hash
chain, the message's JSON and event, for sends like ``batch_sql.py``'s (``hello @admin N``,
the mention unknown). Run against a commit's ``src`` to compare::

    PYTHONPATH=<commit>/src .venv/bin/python bench/send_parts.py --instructions
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from observability_overhead import Callgrind, figures_of
from sqlalchemy.dialects import sqlite

from cmschat.audit import service as audit
from cmschat.audit.append import Chained
from cmschat.chat import rendering, search_index
from cmschat.chat.caches import Shown
from cmschat.chat.messages import batch_audit, batch_writes
from cmschat.chat.messages.sending import check_content
from cmschat.chat.messages.views import sent_event
from cmschat.chat.models import EventType

NOW = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)


class _Session:
    """What ``event_fields`` reads of a session (the actor's name is given)."""

    sync_session = type("SyncSession", (), {"info": {}})()


class _Driver:
    dialect = sqlite.dialect()

    def bound(self, column: Any, value: Any) -> Any:
        processor = column.type._cached_bind_processor(self.dialect)
        return value if processor is None else processor(value)


class _User:
    id = 1
    username = "benchadmin"
    display_name = "Bench"


class _Draft:
    content = "hello @admin 5"
    client_id = "c1"
    reply_to = None
    attachment_ids = ()


class _Pending:
    user = _User
    user_id = _User.id
    draft = _Draft
    room_id = 1


ORIGIN = audit.origin_of("user:1", "benchadmin")


def _event(text: str) -> dict[str, Any]:
    changes = {"room_id": 1, "content": audit.text_digest(text), "attachment_ids": []}
    written = getattr(batch_audit, "changes_json", None)
    extra = {} if written is None else {"changes_json": written(changes)}
    return audit.event_fields(
        _Session,  # type: ignore[arg-type]
        action="message.created",
        target_type="message",
        changes=changes,
        origin=ORIGIN,
        now=NOW,
        **extra,
    )


_EVENTS: dict[int, list[dict[str, Any]]] = {}
"""The events to chain, per count of texts: made before the chain's stretch is counted."""


def _chained(texts: list[str]) -> None:
    events = _EVENTS[len(texts)]
    Chained(_Driver(), lambda: events)._rows([[(1, "0" * 64)]])  # type: ignore[arg-type]


def _row_text(text: str) -> str:
    made = getattr(search_index, "gram_text", None)
    return made(text) if made else " ".join(dict.fromkeys(search_index.grams(text)))


def _sent(_text: str) -> Any:
    new = batch_writes._New(0, _Pending, "hello @admin 5", [], [])  # type: ignore[arg-type]
    sent = batch_writes._sent(new, 5, 7, NOW, Shown(username="benchadmin", display_name="B"))
    return sent_event(EventType.message_created, 5, sent)


PIECES: dict[str, Callable[[list[str]], Any]] = {
    "checks (check_content)": lambda texts: [check_content(t, limit=4000) for t in texts],
    "rendering (render_unlinked)": lambda texts: [rendering.render_unlinked(t) for t in texts],
    "search row text": lambda texts: [_row_text(t) for t in texts],
    "audit event (event_fields, text digest)": lambda texts: [_event(t) for t in texts],
    "audit chain link (hash, row; driver thread)": _chained,
    "message JSON and its event": lambda texts: [_sent(t) for t in texts],
}


async def run(args: argparse.Namespace, probe: Callgrind | None) -> dict[str, Any]:
    """Each piece over ``--sends`` texts, counted (or timed) on its own."""
    texts = [f"hello @admin {n}" for n in range(args.sends)]
    figures: dict[str, Any] = {}
    for some in (texts[:50], texts):
        _EVENTS[len(some)] = [{**_event(t), "target_id": str(n)} for n, t in enumerate(some)]
    for name, piece in PIECES.items():
        piece(texts[:50])  # warm: compiled regexes, memos
        if probe is not None:
            probe.start()
        started = time.process_time()
        piece(texts)
        spent = time.process_time() - started
        if probe is not None:
            probe.stop(name)
            figures[name] = round(probe.counts[name] / args.sends)
        else:
            figures[name] = round(spent / args.sends * 1e6, 2)
    return figures


def main(argv: list[str]) -> dict[str, Any]:
    """One measurement, or (``--instructions``) this script again under callgrind."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--dump-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    figures = figures_of(__file__, argv, args.dump_dir, partial(run, args))
    unit = "instructions" if args.instructions else "cpu_us"
    result = {"unit": unit, **figures}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
