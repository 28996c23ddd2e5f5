"""Search: Korean words inside longer ones, any case, only rooms the caller can read."""

from __future__ import annotations

import httpx

from cmschat.chat.search_index import grams
from tests.support import NamedUser

SENTENCES = [
    "내일 오전 10시에 회의를 진행합니다.",
    "회의에서 결정된 사항을 공유해 주세요",
    "점심은 김치찌개로 할까요?",
    "The Quarterly REPORT is ready",
    "배포는 금요일 오후에 합니다 🚀",
]


async def _room_with(
    client: httpx.AsyncClient,
    owner: dict[str, str],
    members: list[int],
    texts: list[str],
    name: str,
) -> int:
    room = (
        await client.post(
            "/api/v1/rooms",
            headers=owner,
            json={"kind": "group", "name": name, "member_ids": members},
        )
    ).json()["id"]
    for text in texts:
        response = await client.post(
            f"/api/v1/rooms/{room}/messages", headers=owner, json={"content": text}
        )
        assert response.status_code == 201
    return int(room)


async def _search(
    client: httpx.AsyncClient, headers: dict[str, str], q: str, **params: object
) -> list[str]:
    response = await client.get("/api/v1/search", headers=headers, params={"q": q, **params})
    assert response.status_code == 200, response.text
    return [m["content"] for m in response.json()["items"]]


async def test_korean_words_are_found_inside_longer_words(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    headers = await alice.login(client)
    await _room_with(client, headers, [], SENTENCES, "팀")
    assert await _search(client, headers, "회의") == [SENTENCES[1], SENTENCES[0]]
    assert await _search(client, headers, "회의를") == [SENTENCES[0]]
    assert await _search(client, headers, "결정된 사항") == [SENTENCES[1]]
    assert await _search(client, headers, "김치") == [SENTENCES[2]]
    assert await _search(client, headers, "quarterly report") == [SENTENCES[3]]
    assert await _search(client, headers, "금요일 오후") == [SENTENCES[4]]
    assert await _search(client, headers, "오") == [SENTENCES[4], SENTENCES[0]]
    assert await _search(client, headers, "회의록") == []
    assert await _search(client, headers, "100%") == []


async def test_search_never_shows_rooms_the_caller_cannot_read(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    private = await _room_with(client, a, [], ["비밀 회의 안건"], "alice only")
    shared = await _room_with(client, a, [bob.id], ["공개 회의 안건"], "shared")
    assert await _search(client, b, "회의") == ["공개 회의 안건"]
    assert await _search(client, a, "회의") == ["공개 회의 안건", "비밀 회의 안건"]
    assert await _search(client, a, "안건", room_id=private) == ["비밀 회의 안건"]
    assert await _search(client, b, "안건", room_id=private) == []
    # Leaving a room takes its messages out of one's results.
    await client.delete(f"/api/v1/rooms/{shared}/members/{bob.id}", headers=b)
    assert await _search(client, b, "회의") == []


async def test_edited_and_deleted_messages_are_searched_as_they_are_now(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    headers = await alice.login(client)
    room = await _room_with(client, headers, [], ["초안 문서"], "docs")
    message = (await client.get(f"/api/v1/rooms/{room}/messages", headers=headers)).json()["items"][
        0
    ]
    await client.patch(
        f"/api/v1/messages/{message['id']}", headers=headers, json={"content": "최종 문서"}
    )
    assert await _search(client, headers, "초안") == []
    assert await _search(client, headers, "최종") == ["최종 문서"]
    await client.delete(f"/api/v1/messages/{message['id']}", headers=headers)
    assert await _search(client, headers, "문서") == []


async def test_bad_queries_are_422_and_sql_text_is_just_text(
    client: httpx.AsyncClient, alice: NamedUser
) -> None:
    headers = await alice.login(client)
    await _room_with(client, headers, [], ["' OR 1=1 --", 'he said "MATCH" *'], "sql")
    assert (
        await client.get("/api/v1/search", headers=headers, params={"q": ""})
    ).status_code == 422
    assert (
        await client.get("/api/v1/search", headers=headers, params={"q": "x" * 201})
    ).status_code == 422
    assert (await client.get("/api/v1/search", params={"q": "x"})).status_code == 401
    assert await _search(client, headers, "' OR 1=1") == ["' OR 1=1 --"]
    assert await _search(client, headers, '"MATCH" *') == ['he said "MATCH" *']
    assert await _search(client, headers, "AND OR NOT NEAR") == []


def test_grams_are_pairs_of_each_word() -> None:
    assert grams("회의를 해요") == ["x회의", "x의를", "x해요"]
    assert grams("A-B") == []
    assert grams("Straße") == ["xst", "xtr", "xra", "xas", "xss", "xse"]
