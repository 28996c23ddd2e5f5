"""A connection's client frames between reading and acting on them: in order, bounded,
and refused at once, cheaply, past a limit (issue 16 point 3).

The reading task hands every frame here and goes back to reading, so keep-alives are
answered whatever the load. One worker task, alive only while frames wait, acts on them
in the order they came. Past the connection's ``frames_in_flight`` any frame is answered
``busy``; while the process has its ``sends_in_flight`` a send is answered ``busy`` when
read, or when the worker reaches it, without being validated (refusals.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from cmschat.context import AppContext
from cmschat.observability import instruments, tracing
from cmschat.realtime.connections import Connection
from cmschat.websocket import refusals
from cmschat.websocket.actions import FrameActions


class Inbox:
    """Frames read from one connection and not yet acted on."""

    __slots__ = (
        "actions",
        "admission",
        "answer",
        "conn",
        "frames",
        "handling",
        "limit",
        "retry_after",
        "stopping",
        "worker",
    )

    def __init__(
        self,
        context: AppContext,
        conn: Connection,
        actions: FrameActions,
        answer: Callable[[str], None],
    ) -> None:
        self.actions = actions
        self.admission = context.admission
        self.answer = answer
        """Writes an answer to the socket now, or queues it behind what is queued."""
        self.conn = conn
        self.frames: deque[str] | None = None
        """Frames read and not yet taken by the worker (None while there are none)."""
        self.handling = 0
        """Frames taken and not yet acted on (0 or 1)."""
        self.limit = context.settings.realtime.frames_in_flight
        self.retry_after = context.settings.chat.busy_retry_after_seconds
        self.worker: asyncio.Task[None] | None = None
        self.stopping = False
        """Set by ``stop``: the worker takes no further frame."""

    def take(self, text: str) -> None:
        """Queue a frame for the worker, or answer ``busy`` at once past the connection's
        bound (any frame) or the process's (a send)."""
        if self.frames is None:
            self.frames = deque()
        if len(self.frames) + self.handling >= self.limit:
            instruments.connection_full()
            busy = refusals.busy(refusals.CONNECTION_FULL, self.retry_after)
            self.answer(busy.frame(refusals.peek(text)[1]))
            return
        if self.admission.full and self._refused(text):
            return
        self.frames.append(text)
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._work())

    def _refused(self, text: str) -> bool:
        """Past the process's limit, answer a send ``busy`` now, unvalidated (True); other
        frames are left to the worker."""
        is_send, client_id = refusals.peek(text)
        if is_send:
            self.admission.refuse("websocket")
            self.answer(refusals.busy(refusals.PROCESS_FULL, self.retry_after).frame(client_id))
        return is_send

    async def _work(self) -> None:
        """Act on the frames one at a time, in the order they came, then stop."""
        while self.frames and not self.conn.close_requested and not self.stopping:
            text = self.frames.popleft()
            if not self.frames:
                self.frames = None
            # A send queued while the process had room may find it full now: refused as
            # cheaply here as when read.
            if self.admission.full and self._refused(text):
                continue
            self.handling = 1
            try:
                if tracing.enabled():
                    await tracing.traced("websocket.frame", self.actions.handle(text))
                else:
                    await self.actions.handle(text)
            finally:
                self.handling = 0

    async def stop(self) -> None:
        """Stop the worker (the connection is closing).

        A frame being acted on is finished, not cancelled: a message being stored is
        stored even if the socket dropped meanwhile, and the client's retry with its
        client_id finds it. (Not ``asyncio.shield`` around each frame: that is a task,
        and a wake-up, per frame.) The worker only ever waits inside a frame's action,
        or has not started yet; then there is nothing to finish and it is cancelled.
        """
        worker = self.worker
        if worker is None or worker.done():
            return
        self.stopping = True
        if self.handling:
            return  # it stops after this frame
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker
