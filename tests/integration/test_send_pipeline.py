"""The group commit's writer does less in the event loop while it holds the batch's turn.

A send's database-free work (its content checked, rendered, its search text and audit
digest) is done in the sender's task before it queues; the batch's answers (the messages'
JSON and events) are built while the COMMIT is on its way. What must not change: each send
gets the answer it gets alone, in ``send_message``'s order of checks; nothing is answered
before the commit, nor stored twice when something fails after it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import asyncmy.connection
import httpx
import pytest
from sqlalchemy import select

from cmschat.accounts.models import User
from cmschat.audit import chain
from cmschat.audit import service as audit
from cmschat.chat import rendering, search_index
from cmschat.chat.messages import batch_writes, sending
from cmschat.chat.schemas import MessageCreate
from cmschat.context import AppContext
from cmschat.db import sqlite_driver, write_lock
from tests.api.test_messages import group, make_user
from tests.integration.test_batch_trips import sender_of
from tests.integration.test_lean_writer import stored
from tests.support import NamedUser

WRITER = "cmschat-group-commit"


def _where(calls: list[str], real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, noting the name of the task that calls it."""

    def noted(*args: Any, **kwargs: Any) -> Any:
        task = asyncio.current_task()
        calls.append(task.get_name() if task is not None else "")
        return real(*args, **kwargs)

    return noted


async def test_the_writer_renders_digests_and_indexes_no_send_itself(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)
    calls: list[str] = []
    monkeypatch.setattr(rendering, "render_unlinked", _where(calls, rendering.render_unlinked))
    monkeypatch.setattr(search_index, "gram_text", _where(calls, search_index.gram_text))
    monkeypatch.setattr(audit, "text_digest", _where(calls, audit.text_digest))
    answers = await asyncio.gather(
        *(
            context.sends.send(
                user=sender, room_id=room, draft=MessageCreate(content=f"hi @bob {n}")
            )
            for n in range(3)
        )
    )
    assert all(created for _sent, created in answers)
    assert len(calls) == 9 and WRITER not in calls, calls
    assert answers[0][0].data["mentions"] == [bob.id]
    assert answers[0][0].data["content_html"] == rendering.render(
        "hi @bob 0", known_users={"bob": bob.id}
    )


async def _alone(context: AppContext, user: User, room: int, draft: MessageCreate) -> Any:
    """``send_message`` on its own: its answer, or the error it raises."""
    try:
        async with context.db.unit_of_work() as session:
            view, created = await sending.send_message(
                session, user=user, room_id=room, draft=draft, rules=context.send_rules
            )
    except Exception as error:
        return error
    return json.loads(view.model_dump_json()), created


def _answer(outcome: Any) -> Any:
    """What a sender learns from an answer: the error's kind and fields, or the message."""
    if isinstance(outcome, Exception):
        return (type(outcome), str(outcome), getattr(outcome, "code", None))
    sent, created = outcome
    return (sent if isinstance(sent, dict) else json.loads(sent.json)), created


async def test_a_send_refused_in_a_batch_gets_what_it_gets_alone(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, context: AppContext
) -> None:
    """Membership, then the repeat of a client id, then the content, then the reply: the
    content's verdict, reached in the sender's task, is given in its place."""
    a = await alice.login(client)
    room, other = await group(client, a, bob), await group(client, a, bob)
    sender = await sender_of(context, alice)
    outsider = await sender_of(context, await make_user(context, "carol"))
    elsewhere, _ = await context.sends.send(
        user=sender, room_id=other, draft=MessageCreate(content="there")
    )
    first, _ = await context.sends.send(
        user=sender, room_id=room, draft=MessageCreate(content="first", client_id="k1")
    )
    too_long = "x" * (context.settings.chat.max_message_length + 1)
    cases = [
        (outsider, MessageCreate(content=too_long)),  # not a member: not found
        (sender, MessageCreate(content="   ", client_id="k1")),  # a repeat: the first
        (sender, MessageCreate(content=too_long, reply_to=elsewhere.data["id"])),  # too long
        (sender, MessageCreate(content=" \n ")),  # empty
    ]
    batched = await asyncio.gather(
        *(context.sends.send(user=user, room_id=room, draft=draft) for user, draft in cases),
        return_exceptions=True,
    )
    alone = [await _alone(context, user, room, draft) for user, draft in cases]
    assert [_answer(outcome) for outcome in batched] == [_answer(outcome) for outcome in alone]
    assert batched[1][0].data["id"] == first.data["id"]  # type: ignore[index]
    assert await stored(context) == ["there", "first"]


async def test_the_answers_are_built_once_the_commit_is_sent(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)
    await context.sends.send(user=sender, room_id=room, draft=MessageCreate(content="warm"))
    seen: list[str] = []
    real_sent = batch_writes._sent
    if context.db.engine.dialect.name == "sqlite":
        # The COMMIT goes in the store's trip: SQLite's thread does not wait for the loop
        # between the statements and the COMMIT; the answers are built once it is back.
        real_in_thread = sqlite_driver.commit_in_thread

        def in_thread(connection: Any) -> None:
            seen.append("COMMIT sent")
            real_in_thread(connection)
            seen.append("COMMIT answered")

        monkeypatch.setattr(sqlite_driver, "commit_in_thread", in_thread)
        expected = ["COMMIT sent", "COMMIT answered", "message built", "message built"]
    else:
        # MariaDB: the answers are built while the COMMIT is on its way to the server.
        owner: Any = asyncmy.connection.Connection
        real_commit = owner.commit

        async def commit(self: Any) -> None:
            seen.append("COMMIT sent")
            await real_commit(self)
            seen.append("COMMIT answered")

        monkeypatch.setattr(owner, "commit", commit)
        expected = ["COMMIT sent", "message built", "message built", "COMMIT answered"]

    def sent(*args: Any) -> Any:
        seen.append("message built")
        return real_sent(*args)

    monkeypatch.setattr(batch_writes, "_sent", sent)
    answers = await asyncio.gather(
        *(
            context.sends.send(user=sender, room_id=room, draft=MessageCreate(content=f"m{n}"))
            for n in range(2)
        )
    )
    assert seen == expected
    assert [sent.data["seq"] for sent, _ in answers] == [
        answers[0][0].data["seq"],
        answers[0][0].data["seq"] + 1,
    ]


async def test_an_answer_failing_while_the_commit_is_on_its_way_loses_only_itself(
    client: httpx.AsyncClient,
    alice: NamedUser,
    bob: NamedUser,
    context: AppContext,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The COMMIT went out before the answers were built: the batch is stored, so its
    sends must not be written again one by one (no client id to find them by), and the
    batch is not reported failed. The send whose answer broke gets the error (logged); the
    other its stored message; the next send works."""
    room = await group(client, await alice.login(client), bob)
    sender = await sender_of(context, alice)
    await context.sends.send(user=sender, room_id=room, draft=MessageCreate(content="warm"))
    real_sent = batch_writes._sent

    def broken(new: Any, *args: Any) -> Any:
        if new.pending.draft.content == "m1":
            raise RuntimeError("the answer could not be built")
        return real_sent(new, *args)

    with monkeypatch.context() as patch:
        patch.setattr(batch_writes, "_sent", broken)
        answers = await asyncio.gather(
            *(
                context.sends.send(user=sender, room_id=room, draft=MessageCreate(content=f"m{n}"))
                for n in range(2)
            ),
            return_exceptions=True,
        )
    good, bad = answers
    assert isinstance(bad, RuntimeError), answers
    assert not isinstance(good, BaseException) and good[0].data["content"] == "m0", answers
    assert good[1] is True
    assert "stored, its answer not built" in caplog.text
    _sent, created = await context.sends.send(
        user=sender, room_id=room, draft=MessageCreate(content="next")
    )
    assert created
    assert await stored(context) == ["warm", "m0", "m1", "next"]
    lock = write_lock.lock_of(context.db.engine)
    assert lock is None or lock.holder is None
    async with context.db.unit_of_work() as session:
        assert (await chain.verify(session)).ok
        assert (await session.scalars(select(User.id).where(User.id == sender.id))).one()
