"""Reading a large table in id order, one bounded batch at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

T = TypeVar("T")


async def in_id_order(
    session: AsyncSession,
    statement: Select[T],
    id_column: InstrumentedAttribute[Any],
    *,
    size: int,
) -> AsyncIterator[Sequence[T]]:
    """The rows of ``statement`` in batches of ``size``, by ascending id (keyset paging).

    Each batch is let go before the next is read, so memory stays bounded however many
    rows there are.
    """
    last: Any = None
    while True:
        batch = statement.order_by(id_column).limit(size)
        if last is not None:
            batch = batch.where(id_column > last)
        rows = (await session.scalars(batch)).all()
        if rows:
            yield rows
        if len(rows) < size:
            return
        last = getattr(rows[-1], id_column.key)
        session.expunge_all()
