"""Messages through the HTTP API: sending, numbering, editing, deleting, history, unread."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cmschat.accounts import service as accounts
from cmschat.accounts.models import Role
from cmschat.chat.models import RoomEvent
from cmschat.context import AppContext
from cmschat.db.actors import SYSTEM_SETUP
from tests.support import PASSWORD, NamedUser, error_of

ROOMS = "/api/v1/rooms"
MESSAGES = "/api/v1/messages"
XSS_PAYLOADS = Path(__file__).resolve().parents[1] / "data" / "xss" / "xss_payloads_quick.txt"
CONTRACT_FIELDS = {
    "id",
    "room_id",
    "seq",
    "author",
    "content",
    "content_html",
    "created_at",
    "updated_at",
    "deleted",
}
Headers = dict[str, str]
Message = dict[str, Any]


async def make_user(context: AppContext, username: str, *, must_change: bool = False) -> NamedUser:
    """A member created straight through the accounts service."""
    async with context.db.unit_of_work(SYSTEM_SETUP) as session:
        user = await accounts.create_user(
            session,
            username=username,
            password=PASSWORD,
            role=Role.member,
            display_name=username.title(),
            must_change_password=must_change,
            bcrypt_rounds=context.settings.auth.bcrypt_rounds,
            clock=context.clock,
        )
    return NamedUser(id=user.id, username=username, password=PASSWORD, role="member")


@pytest.fixture
async def carol(context: AppContext) -> NamedUser:
    """A third member, often the outsider."""
    return await make_user(context, "carol")


async def group(client: httpx.AsyncClient, owner: Headers, *members: NamedUser) -> int:
    """A group owned by the caller with ``members``; its id."""
    response = await client.post(
        ROOMS,
        headers=owner,
        json={"kind": "group", "name": "Team", "member_ids": [m.id for m in members]},
    )
    assert response.status_code == 201, response.text
    room_id: int = response.json()["id"]
    return room_id


async def post(
    client: httpx.AsyncClient, headers: Headers, room_id: int, content: str, **extra: Any
) -> httpx.Response:
    """POST /rooms/{id}/messages."""
    return await client.post(
        f"{ROOMS}/{room_id}/messages", headers=headers, json={"content": content} | extra
    )


async def send(
    client: httpx.AsyncClient, headers: Headers, room_id: int, content: str, **extra: Any
) -> Message:
    """Send a message that must be accepted (201); the message."""
    response = await post(client, headers, room_id, content, **extra)
    assert response.status_code == 201, response.text
    message: Message = response.json()
    return message


async def page(
    client: httpx.AsyncClient, headers: Headers, room_id: int, **params: int
) -> dict[str, Any]:
    """One page of history."""
    response = await client.get(f"{ROOMS}/{room_id}/messages", headers=headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def history(client: httpx.AsyncClient, headers: Headers, room_id: int) -> list[Message]:
    """The whole history (up to 100), newest first."""
    items: list[Message] = (await page(client, headers, room_id, limit=100))["items"]
    return items


async def edit(
    client: httpx.AsyncClient, headers: Headers, message_id: int, content: str
) -> httpx.Response:
    """PATCH /messages/{id}."""
    return await client.patch(
        f"{MESSAGES}/{message_id}", headers=headers, json={"content": content}
    )


async def delete(client: httpx.AsyncClient, headers: Headers, message_id: int) -> httpx.Response:
    """DELETE /messages/{id}."""
    return await client.delete(f"{MESSAGES}/{message_id}", headers=headers)


async def room_in_list(client: httpx.AsyncClient, headers: Headers, room_id: int) -> dict[str, Any]:
    """The room as GET /rooms lists it for the caller."""
    response = await client.get(ROOMS, headers=headers)
    assert response.status_code == 200, response.text
    matches: list[dict[str, Any]] = [r for r in response.json()["items"] if r["id"] == room_id]
    (room,) = matches
    return room


async def read(
    client: httpx.AsyncClient, headers: Headers, room_id: int, message_id: int
) -> httpx.Response:
    """POST /rooms/{id}/read."""
    return await client.post(
        f"{ROOMS}/{room_id}/read", headers=headers, json={"message_id": message_id}
    )


async def event_seqs(context: AppContext, room_id: int) -> list[int]:
    """The room's stored event seqs, in order."""
    async with context.db.unit_of_work(SYSTEM_SETUP) as session:
        seqs = await session.scalars(
            select(RoomEvent.seq).where(RoomEvent.room_id == room_id).order_by(RoomEvent.seq)
        )
        return list(seqs)


# --- sending ----------------------------------------------------------------------------


async def test_a_sent_message_carries_every_field(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    message = await send(client, a, room_id, "hello *world*")
    assert CONTRACT_FIELDS | {"reply_to", "mentions", "edited"} <= set(message)
    assert message["room_id"] == room_id
    assert message["author"] == {"id": alice.id, "username": "alice", "display_name": "Alice"}
    assert message["content"] == "hello *world*"
    assert "<em>world</em>" in message["content_html"]
    assert message["reply_to"] is None and message["mentions"] == []
    assert message["edited"] is False and message["deleted"] is False
    created = datetime.fromisoformat(message["created_at"])
    assert created.utcoffset() is not None
    assert message["updated_at"] == message["created_at"]
    assert await history(client, b, room_id) == [message]
    assert (await room_in_list(client, b, room_id))["last_message"] == message


async def test_content_comes_back_exactly_as_sent(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    contents = [
        "안녕하세요, 반갑습니다! 한국어 메시지 🇰🇷",
        "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "   leading and trailing spaces   ",
        "\ttabs\tand\nnew\nlines\n",
        "**bold** _it_ `code` [link](https://example.com/a?b=1&c=2)\n```\nblock <b>\n```",
        "<b>not bold</b> & <i>\"quoted\"</i> 'single' &amp; &lt;",
        "\\ back\\slash \u00a0 nbsp",
        "windows\r\nline ends\r and NUL-free \u200b zero width",
    ]
    sent = [await send(client, a, room_id, content) for content in contents]
    assert [m["content"] for m in sent] == contents
    stored = await history(client, b, room_id)
    assert [m["content"] for m in reversed(stored)] == contents
    assert "&lt;b&gt;not bold&lt;/b&gt;" in sent[5]["content_html"]
    assert "<strong>bold</strong>" in sent[4]["content_html"]


async def test_seqs_are_gap_free_across_every_kind_of_room_event(
    client: httpx.AsyncClient,
    context: AppContext,
    alice: NamedUser,
    bob: NamedUser,
    carol: NamedUser,
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    first = [await send(client, h, room_id, f"m{n}") for n, h in enumerate([a, b, a, a, b])]
    seqs = [m["seq"] for m in first]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    assert await event_seqs(context, room_id) == list(range(1, seqs[-1] + 1))

    assert (await edit(client, a, first[0]["id"], "m0 edited")).status_code == 200
    assert (await delete(client, b, first[1]["id"])).status_code == 200
    renamed = await client.patch(f"{ROOMS}/{room_id}", headers=a, json={"topic": "t"})
    assert renamed.status_code == 200
    joined = await client.post(
        f"{ROOMS}/{room_id}/members", headers=a, json={"user_ids": [carol.id]}
    )
    assert joined.status_code == 200
    latest = await send(client, b, room_id, "after all that")
    assert latest["seq"] == seqs[-1] + 5  # edit, delete, room update, join, this message
    assert await event_seqs(context, room_id) == list(range(1, latest["seq"] + 1))
    assert (await room_in_list(client, a, room_id))["last_seq"] == latest["seq"]
    assert [m["seq"] for m in await history(client, a, room_id)] == [latest["seq"], *seqs[::-1]]


async def test_a_repeated_client_id_returns_the_first_message(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    other_room = await group(client, a, bob)
    first = await send(client, a, room_id, "only once", client_id="tab-1:42")
    again = await post(client, a, room_id, "only once (retry)", client_id="tab-1:42")
    assert again.status_code == 200, again.text
    assert again.json() == first
    assert [m["id"] for m in await history(client, b, room_id)] == [first["id"]]

    bobs = await send(client, b, room_id, "mine", client_id="tab-1:42")
    elsewhere = await send(client, a, other_room, "there", client_id="tab-1:42")
    assert len({first["id"], bobs["id"], elsewhere["id"]}) == 3
    assert [m["content"] for m in await history(client, a, room_id)] == ["mine", "only once"]
    assert [m["content"] for m in await history(client, a, other_room)] == ["there"]

    bad = await post(client, a, room_id, "x", client_id="has spaces")
    assert bad.status_code == 422 and error_of(bad)["field"] == "client_id"


async def test_concurrent_sends_get_a_contiguous_run_of_seqs(
    client: httpx.AsyncClient, context: AppContext, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    responses = await asyncio.gather(
        *(post(client, a if n % 2 else b, room_id, f"burst {n}") for n in range(20))
    )
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
    seqs = sorted(r.json()["seq"] for r in responses)
    assert seqs == list(range(seqs[0], seqs[0] + 20))
    stored = await history(client, a, room_id)
    assert sorted(m["content"] for m in stored) == sorted(f"burst {n}" for n in range(20))
    assert await event_seqs(context, room_id) == list(range(1, seqs[-1] + 1))


async def test_concurrent_retries_store_one_message(
    client: httpx.AsyncClient, context: AppContext, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    responses = await asyncio.gather(
        *(post(client, a, room_id, "retry storm", client_id="same") for _ in range(10))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 9 + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    (stored,) = await history(client, b, room_id)
    assert stored["id"] == responses[0].json()["id"]
    # No seq was burned by the losers.
    assert await event_seqs(context, room_id) == list(range(1, stored["seq"] + 1))
    assert (await room_in_list(client, b, room_id))["last_seq"] == stored["seq"]


async def test_content_must_be_present_and_within_the_limit(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a = await alice.login(client)
    room_id = await group(client, a, bob)
    longest = await send(client, a, room_id, "가" * 4000)
    assert longest["content"] == "가" * 4000

    too_long = await post(client, a, room_id, "x" * 4001)
    assert too_long.status_code == 422
    assert error_of(too_long)["field"] == "content"
    assert "4000" in error_of(too_long)["message"]
    for blank in ["", " ", "  \n\t  ", "\n"]:
        refused = await post(client, a, room_id, blank)
        assert refused.status_code == 422, (blank, refused.text)
        assert error_of(refused)["field"] == "content"
    assert [m["id"] for m in await history(client, a, room_id)] == [longest["id"]]
    assert (await room_in_list(client, a, room_id))["last_seq"] == longest["seq"]


async def test_a_reply_points_into_the_same_room(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    other_room = await group(client, a, bob)
    question = await send(client, a, room_id, "lunch?")
    answer = await send(client, b, room_id, "yes", reply_to=question["id"])
    assert answer["reply_to"] == question["id"]
    elsewhere = await send(client, a, other_room, "elsewhere")
    for target in (elsewhere["id"], 2**62):
        refused = await post(client, b, room_id, "no", reply_to=target)
        assert refused.status_code == 422, refused.text
        assert error_of(refused)["field"] == "reply_to"
    assert [m["id"] for m in await history(client, a, room_id)] == [answer["id"], question["id"]]


# --- editing and deleting ---------------------------------------------------------------


async def test_only_the_author_edits(
    client: httpx.AsyncClient,
    admin: NamedUser,
    alice: NamedUser,
    bob: NamedUser,
    carol: NamedUser,
) -> None:
    a, b, c = await alice.login(client), await bob.login(client), await carol.login(client)
    room_id = await group(client, a, bob)
    original = await send(client, b, room_id, "typo hre")

    assert (await edit(client, a, original["id"], "owner rewrites")).status_code == 403
    assert (await edit(client, await admin.login(client), original["id"], "x")).status_code == 403
    assert (await edit(client, c, original["id"], "outsider")).status_code == 404
    assert (await edit(client, b, 2**62, "missing")).status_code == 404

    edited = await edit(client, b, original["id"], "typo **here**")
    assert edited.status_code == 200, edited.text
    fixed = edited.json()
    assert fixed["edited"] is True
    assert fixed["content"] == "typo **here**"
    assert "<strong>here</strong>" in fixed["content_html"]
    assert (fixed["id"], fixed["seq"], fixed["author"]) == (
        original["id"],
        original["seq"],
        original["author"],
    )
    assert await history(client, a, room_id) == [fixed]
    blank = await edit(client, b, original["id"], "   ")
    assert blank.status_code == 422 and error_of(blank)["field"] == "content"

    assert (await delete(client, b, original["id"])).status_code == 200
    late = await edit(client, b, original["id"], "too late")
    assert late.status_code == 409, late.text
    assert (await history(client, a, room_id))[0]["content"] == ""


async def test_who_may_delete_and_what_a_tombstone_keeps(
    client: httpx.AsyncClient,
    admin: NamedUser,
    alice: NamedUser,
    bob: NamedUser,
    carol: NamedUser,
) -> None:
    a, b, c = await alice.login(client), await bob.login(client), await carol.login(client)
    room_id = await group(client, a, bob, carol)
    promoted = await client.patch(
        f"{ROOMS}/{room_id}/members/{bob.id}", headers=a, json={"role": "moderator"}
    )
    assert promoted.status_code == 200
    sent = [
        await send(client, h, room_id, f"<i>note</i> {n}") for n, h in enumerate([a, b, c, c, c, a])
    ]

    assert (await delete(client, c, sent[0]["id"])).status_code == 403  # plain member
    assert (await delete(client, c, sent[1]["id"])).status_code == 403
    for headers, message in [
        (a, sent[0]),  # author
        (a, sent[2]),  # room owner
        (b, sent[3]),  # room moderator
        (await admin.login(client), sent[4]),  # admin, not even a member
    ]:
        response = await delete(client, headers, message["id"])
        assert response.status_code == 200, response.text
        tombstone = response.json()
        assert tombstone["deleted"] is True
        assert tombstone["content"] == "" and tombstone["content_html"] == ""
        for key in ("id", "seq", "room_id", "author", "created_at", "reply_to"):
            assert tombstone[key] == message[key]

    stored = await history(client, c, room_id)
    assert [m["id"] for m in stored] == [m["id"] for m in reversed(sent)]
    assert [m["deleted"] for m in stored] == [False, True, True, True, False, True]
    assert all(m["content"] == "" for m in stored if m["deleted"])
    assert stored[0]["content"] == "<i>note</i> 5"


# --- history ----------------------------------------------------------------------------


async def test_history_pages_backward_and_forward_over_every_message(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, carol: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    sent = [await send(client, a if n % 3 else b, room_id, f"#{n}") for n in range(23)]
    all_seqs = [m["seq"] for m in sent]

    whole = await history(client, b, room_id)
    assert [m["seq"] for m in whole] == all_seqs[::-1]

    backward: list[int] = []
    params: dict[str, int] = {"limit": 5}
    while True:
        body = await page(client, b, room_id, **params)
        seqs = [m["seq"] for m in body["items"]]
        assert seqs == sorted(seqs, reverse=True) and len(seqs) <= 5
        backward += seqs
        if body["next_cursor"] is None:
            break
        params = {"limit": 5, "before": body["next_cursor"]}
    assert backward == all_seqs[::-1]

    forward: list[int] = []
    params = {"limit": 4, "after": 0}
    while True:
        body = await page(client, b, room_id, **params)
        seqs = [m["seq"] for m in body["items"]]
        assert seqs == sorted(seqs, reverse=True)
        forward += seqs[::-1]
        if body["next_cursor"] is None:
            break
        params = {"limit": 4, "after": body["next_cursor"]}
    assert forward == all_seqs

    newer = await page(client, b, room_id, after=all_seqs[-3])
    assert [m["seq"] for m in newer["items"]] == all_seqs[:-3:-1]
    assert newer["next_cursor"] is None
    assert (await page(client, b, room_id, before=all_seqs[0]))["items"] == []

    for bad in ({"limit": 101}, {"limit": 0}, {"before": -1}, {"after": "x"}):
        response = await client.get(f"{ROOMS}/{room_id}/messages", headers=b, params=bad)
        assert response.status_code == 422, (bad, response.text)
    outsider = await client.get(f"{ROOMS}/{room_id}/messages", headers=await carol.login(client))
    assert outsider.status_code == 404


# --- read markers, unread counts, mentions ----------------------------------------------


async def test_unread_counts_follow_the_read_marker(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    m1, m2, m3 = [await send(client, a, room_id, f"news {n}") for n in range(3)]
    own = await send(client, b, room_id, "bob's own")
    m4 = await send(client, a, room_id, "news 3")
    assert (await delete(client, a, m3["id"])).status_code == 200

    seen = await room_in_list(client, b, room_id)
    assert seen["unread_count"] == 3  # m1, m2, m4: not bob's own, not the deleted one
    assert seen["last_message"]["id"] == m4["id"]
    assert (await room_in_list(client, a, room_id))["unread_count"] == 1  # bob's message

    moved = await read(client, b, room_id, m2["id"])
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"room_id": room_id, "last_read_seq": m2["seq"]}
    assert (await room_in_list(client, b, room_id))["unread_count"] == 1

    backwards = await read(client, b, room_id, m1["id"])
    assert backwards.status_code == 200
    assert backwards.json()["last_read_seq"] == m2["seq"]
    assert (await room_in_list(client, b, room_id))["unread_count"] == 1

    assert (await read(client, b, room_id, m4["id"])).json()["last_read_seq"] == m4["seq"]
    caught_up = await room_in_list(client, b, room_id)
    assert caught_up["unread_count"] == 0
    (marker,) = [m for m in caught_up["members"] if m["user"]["id"] == bob.id]
    assert marker["last_read_seq"] == m4["seq"]

    assert (await delete(client, a, m4["id"])).status_code == 200
    assert (await room_in_list(client, b, room_id))["last_message"]["id"] == own["id"]

    other_room = await group(client, a, bob)
    stranger = await send(client, a, other_room, "elsewhere")
    wrong = await read(client, b, room_id, stranger["id"])
    assert wrong.status_code == 422 and error_of(wrong)["field"] == "message_id"


async def test_mentions_flag_members_until_they_read_past(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser, carol: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    hello = await send(client, a, room_id, "hello @bob")
    assert hello["mentions"] == [bob.id]
    assert f'<span class="mention" data-user-id="{bob.id}">@bob</span>' in hello["content_html"]
    outsider = await send(client, a, room_id, "and @carol, who is not here")
    assert outsider["mentions"] == []
    assert "mention" not in outsider["content_html"]

    flagged = await room_in_list(client, b, room_id)
    assert (flagged["mention_count"], flagged["unread_count"]) == (1, 2)
    assert (await room_in_list(client, a, room_id))["mention_count"] == 0

    assert (await read(client, b, room_id, hello["id"])).status_code == 200
    cleared = await room_in_list(client, b, room_id)
    assert (cleared["mention_count"], cleared["unread_count"]) == (0, 1)

    joined = await client.post(
        f"{ROOMS}/{room_id}/members", headers=a, json={"user_ids": [carol.id]}
    )
    assert joined.status_code == 200
    assert (await room_in_list(client, await carol.login(client), room_id))["mention_count"] == 0


async def test_editing_a_mention_out_unflags_the_user(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    message = await send(client, a, room_id, "ping @bob")
    assert (await room_in_list(client, b, room_id))["mention_count"] == 1
    edited = await edit(client, a, message["id"], "never mind")
    assert edited.json()["mentions"] == []
    assert (await room_in_list(client, b, room_id))["mention_count"] == 0
    again = await edit(client, a, message["id"], "actually, @BOB")
    assert again.json()["mentions"] == [bob.id]
    assert (await room_in_list(client, b, room_id))["mention_count"] == 1


# --- hostile content --------------------------------------------------------------------

_TAG = re.compile(r"<[^>]*>")
_HANDLER = re.compile(r"[\s/\"']on\w+\s*=", re.IGNORECASE)
_HREF = re.compile(r"""href\s*=\s*["']?\s*(javascript|data|vbscript):""", re.IGNORECASE)
_FORBIDDEN_TAGS = ("<script", "<iframe", "<object", "<svg", "<img", "<embed", "<style")


async def test_xss_payloads_are_kept_verbatim_and_rendered_harmless(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    payloads = [
        line for line in XSS_PAYLOADS.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    assert payloads
    a = await alice.login(client)
    room_id = await group(client, a, bob)
    for payload in payloads:
        for content in (payload, f"[click]({payload})", f"**{payload}** @bob"):
            message = await send(client, a, room_id, content)
            assert message["content"] == content
            rendered = message["content_html"]
            lowered = rendered.lower()
            for tag in _FORBIDDEN_TAGS:
                assert tag not in lowered, (content, rendered)
            for tag in _TAG.findall(rendered):
                assert not _HANDLER.search(tag), (content, rendered)
                assert not _HREF.search(tag), (content, rendered)


# --- who may call at all ----------------------------------------------------------------


def chat_routes(room_id: int, message_id: int, user_id: int) -> list[tuple[str, str, Any]]:
    """Every chat route, with a body that would be valid for a member."""
    room = f"{ROOMS}/{room_id}"
    return [
        ("GET", ROOMS, None),
        ("POST", ROOMS, {"kind": "group", "name": "x"}),
        ("GET", "/api/v1/channels", None),
        ("GET", room, None),
        ("PATCH", room, {"name": "y"}),
        ("POST", f"{room}/members", {"user_ids": [user_id]}),
        ("DELETE", f"{room}/members/{user_id}", None),
        ("PATCH", f"{room}/members/{user_id}", {"role": "moderator"}),
        ("GET", f"{room}/messages", None),
        ("POST", f"{room}/messages", {"content": "hi"}),
        ("PATCH", f"{MESSAGES}/{message_id}", {"content": "edited"}),
        ("DELETE", f"{MESSAGES}/{message_id}", None),
        ("POST", f"{room}/read", {"message_id": message_id}),
    ]


async def test_chat_needs_a_token_and_a_changed_password(
    client: httpx.AsyncClient, context: AppContext, alice: NamedUser, bob: NamedUser
) -> None:
    a = await alice.login(client)
    room_id = await group(client, a, bob)
    message = await send(client, a, room_id, "hi")
    fresh = await make_user(context, "dave", must_change=True)
    fresh_headers = await fresh.login(client)
    bad_token = {"Authorization": "Bearer not-a-real-token"}
    for method, url, body in chat_routes(room_id, message["id"], bob.id):
        anonymous = await client.request(method, url, json=body)
        assert anonymous.status_code == 401, (method, url, anonymous.text)
        assert error_of(anonymous)["code"] == "not_authenticated"
        forged = await client.request(method, url, json=body, headers=bad_token)
        assert forged.status_code == 401, (method, url, forged.text)
        blocked = await client.request(method, url, json=body, headers=fresh_headers)
        assert blocked.status_code == 403, (method, url, blocked.text)
        assert error_of(blocked)["code"] == "password_change_required"
    assert await history(client, a, room_id) == [message]


async def test_many_distinct_mentions_keep_few_statements_and_still_link(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    """The mention lookup's statement is kept per size of its name list: sizes rounded to
    powers of two, so a member sending 1, 2, 3 … 40 distinct ``@names`` cannot make every
    worker compile and keep a statement per count (memory without a bound)."""
    from cmschat.chat.messages import batch_sql

    a = await alice.login(client)
    room_id = await group(client, a, bob)
    batch_sql._NAMED.clear()
    for count in range(1, 41):
        names = " ".join(f"@nobody{n}" for n in range(count - 1))
        sent = await send(client, a, room_id, f"{names} @bob")
        assert sent["mentions"] == [bob.id], count
    assert sorted(batch_sql._NAMED) == [(1, 1), (1, 2), (1, 4), (1, 8), (1, 16), (1, 32), (1, 64)]
