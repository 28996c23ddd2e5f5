"""History pages on the lean read path: membership is checked on every page."""

from __future__ import annotations

import httpx

from tests.api.test_messages import ROOMS, group, page, send
from tests.support import NamedUser


async def test_a_removed_member_cannot_read_the_history_at_once(
    client: httpx.AsyncClient, alice: NamedUser, bob: NamedUser
) -> None:
    a, b = await alice.login(client), await bob.login(client)
    room_id = await group(client, a, bob)
    await send(client, a, room_id, "before")
    assert len((await page(client, b, room_id))["items"]) == 1
    removed = await client.delete(f"{ROOMS}/{room_id}/members/{bob.id}", headers=a)
    assert removed.status_code == 204
    answer = await client.get(f"{ROOMS}/{room_id}/messages", headers=b)
    assert answer.status_code == 404
