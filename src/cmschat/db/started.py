"""A coroutine run now up to its first wait, to be awaited later (Python 3.12's eager
task start, without a task).

The writer sends its COMMIT this way and then builds the batch's answers while SQLite's
thread (or MariaDB) commits: a coroutine does nothing until awaited, and a task would
start only at the loop's next turn, behind every frame queued to be written, and cost a
task per batch. ``Started`` steps the coroutine at once (aiosqlite queues the COMMIT on
its thread, asyncmy writes it to the socket), then awaiting it carries on where the
coroutine stopped, as ``await coroutine`` would have.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Started(Generic[T]):
    """``coroutine`` run up to its first wait; await this for its result (once)."""

    __slots__ = ("_coroutine", "_done", "_waiting_on")

    def __init__(self, coroutine: Coroutine[Any, Any, T]) -> None:
        self._coroutine = coroutine
        self._done: tuple[T] | None = None
        self._waiting_on: Any = None
        try:
            self._waiting_on = coroutine.send(None)
        except StopIteration as finished:  # it never waited
            self._done = (finished.value,)

    def __await__(self) -> Generator[Any, Any, T]:
        if self._done is not None:
            return self._done[0]
        coroutine, waiting_on = self._coroutine, self._waiting_on
        # What ``yield from coroutine`` does, from the wait the coroutine stopped at: the
        # awaiting task's answers (and its cancellation) are passed on to the coroutine.
        while True:
            try:
                answer = yield waiting_on
            except BaseException as thrown:  # passed on to the coroutine, not handled here
                try:
                    waiting_on = coroutine.throw(thrown)
                except StopIteration as finished:
                    return finished.value  # type: ignore[no-any-return]
                continue
            try:
                waiting_on = coroutine.send(answer)
            except StopIteration as finished:
                return finished.value  # type: ignore[no-any-return]
