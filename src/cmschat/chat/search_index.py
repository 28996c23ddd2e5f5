"""The search index of messages: bigram tokens, so Korean words are found inside longer ones.

Korean attaches particles to words (회의를, 회의에서), so whole-word indexes miss "회의".
We index overlapping character pairs instead: each letter/digit run is cut into bigrams,
each written as one token ``x<pair>`` (the prefix clears InnoDB's 3-character minimum).
The full-text index finds candidates holding every pair of the query; an exact substring
match on the content then keeps the true hits. The same tokens work with SQLite FTS5
(unicode61) and MariaDB InnoDB FULLTEXT, so both databases answer alike.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Table,
    Text,
    delete,
    insert,
)
from sqlalchemy.ext.asyncio import AsyncSession

from cmschat.chat.models import Message

# A derived index, not a record (so no audit columns), outside the ORM metadata and made
# by migration 0003: on SQLite an FTS5 table whose rowid is the message id, on MariaDB a
# table with a FULLTEXT index whose rows go with their message (ON DELETE CASCADE).
INDEX_TABLE = "message_search"
SQLITE_INDEX = Table(
    INDEX_TABLE, MetaData(), Column("rowid", Integer, key="message_id"), Column("grams", Text)
)
MARIADB_INDEX = Table(
    INDEX_TABLE, MetaData(), Column("message_id", Integer, primary_key=True), Column("grams", Text)
)


def index_table(session: AsyncSession) -> Table:
    return SQLITE_INDEX if session.get_bind().dialect.name == "sqlite" else MARIADB_INDEX


_RUN = re.compile(r"\w+", re.UNICODE)
# Every two adjacent word characters, overlapping: the pairs of each run of ``_RUN`` (two
# adjacent word characters are always in the same run), found in one scan.
_PAIR = re.compile(r"(?=(\w\w))", re.UNICODE)


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def grams(text: str) -> list[str]:
    """The index tokens of a text: ``x`` + each overlapping pair of a word's characters."""
    return [
        "x" + run[i : i + 2]
        for run in _RUN.findall(_normalise(text).replace("_", " "))
        for i in range(len(run) - 1)
    ]


def gram_text(text: str) -> str:
    """An index row's text: the distinct ``grams`` of a text, in order, space-separated
    ("" if none), built without a token string per pair first."""
    pairs = _PAIR.findall(_normalise(text).replace("_", " "))
    return "x" + " x".join(dict.fromkeys(pairs)) if pairs else ""


async def index_message(session: AsyncSession, *, message: Message, new: bool = False) -> None:
    """(Re)index a message's current content (``new``: it has no entry yet)."""
    index = index_table(session)
    if not new:
        await session.execute(delete(index).where(index.c.message_id == message.id))
    text = gram_text(message.content)
    if text:
        await session.execute(insert(index).values(message_id=message.id, grams=text))


async def index_new_messages(session: AsyncSession, messages: Sequence[tuple[int, str]]) -> None:
    """Index new messages, ``(id, content)`` each, in one statement."""
    rows = [
        {"message_id": message_id, "grams": text}
        for message_id, content in messages
        if (text := gram_text(content))
    ]
    if rows:
        await session.execute(insert(index_table(session)), rows)


async def unindex_message(session: AsyncSession, *, message_id: int) -> None:
    """Drop a message from the index (deleted)."""
    await unindex_messages(session, message_ids=[message_id])


async def unindex_messages(session: AsyncSession, *, message_ids: Sequence[int]) -> None:
    """Drop messages from the index (deleted or purged)."""
    index = index_table(session)
    await session.execute(delete(index).where(index.c.message_id.in_(message_ids)))
