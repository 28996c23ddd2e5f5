"""Large tables in bounded batches: reading them in id order, deleting from them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import ColumnElement, Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

if TYPE_CHECKING:
    from cmschat.db.session import Database

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


async def delete_in_batches(
    db: Database,
    id_column: InstrumentedAttribute[int],
    condition: ColumnElement[bool],
    *,
    size: int,
    actor: str,
) -> int:
    """Delete the rows matching ``condition``, ``size`` per transaction; how many.

    One short transaction per batch, so a large backlog never holds a long write lock.
    """
    removed = 0
    while True:
        async with db.unit_of_work(actor) as session:
            ids = (await session.scalars(select(id_column).where(condition).limit(size))).all()
            if ids:
                await session.execute(delete(id_column.class_).where(id_column.in_(ids)))
        removed += len(ids)
        if len(ids) < size:
            return removed
