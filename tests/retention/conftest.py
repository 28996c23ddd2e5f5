"""Helpers for retention tests: rooms with messages and files at chosen (fake) times."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from cmschat.clock import FakeClock
from cmschat.context import AppContext
from cmschat.retention.purge import Report, run_purge
from tests.api.test_attachments import upload
from tests.support import NamedUser

RETENTION = "/api/v1/admin/retention"


@dataclass
class Chat:
    """Alice's side of the conversation, and the admin's console."""

    client: httpx.AsyncClient
    context: AppContext
    users: tuple[NamedUser, NamedUser]
    alice: dict[str, str]
    admin: dict[str, str]

    async def advance(self, **delta: float) -> None:
        """Move the fake clock on; sign in again, as sessions idle out meanwhile."""
        clock = self.context.clock
        assert isinstance(clock, FakeClock)
        clock.advance(**delta)
        self.alice = await self.users[0].login(self.client)
        self.admin = await self.users[1].login(self.client)

    async def room(self, name: str) -> int:
        response = await self.client.post(
            "/api/v1/rooms",
            json={"kind": "group", "name": name, "member_ids": []},
            headers=self.alice,
        )
        assert response.status_code == 201, response.text
        room_id: int = response.json()["id"]
        return room_id

    async def send(self, room: int, content: str, *, file: bytes | None = None) -> dict:
        attachment_ids = []
        if file is not None:
            uploaded = await upload(self.client, self.alice, room, "report.pdf", file)
            assert uploaded.status_code == 201, uploaded.text
            attachment_ids.append(uploaded.json()["id"])
        response = await self.client.post(
            f"/api/v1/rooms/{room}/messages",
            json={"content": content, "attachment_ids": attachment_ids},
            headers=self.alice,
        )
        assert response.status_code == 201, response.text
        message: dict = response.json()
        return message

    async def history(self, room: int) -> list[str]:
        response = await self.client.get(f"/api/v1/rooms/{room}/messages", headers=self.alice)
        return [m["content"] for m in reversed(response.json()["items"])]

    async def set_defaults(self, message_days: int | None, attachment_days: int | None) -> None:
        response = await self.client.put(
            f"{RETENTION}/defaults",
            json={"message_days": message_days, "attachment_days": attachment_days},
            headers=self.admin,
        )
        assert response.status_code == 200, response.text

    async def set_room(self, room: int, **policy: object) -> None:
        response = await self.client.put(
            f"{RETENTION}/rooms/{room}", json=policy, headers=self.admin
        )
        assert response.status_code == 200, response.text

    async def purge(self, *, dry_run: bool = False) -> Report:
        return await run_purge(
            self.context.db,
            clock=self.context.clock,
            settings=self.context.settings.retention,
            eraser=self.context.eraser,
            dry_run=dry_run,
        )


@pytest.fixture
async def chat(
    client: httpx.AsyncClient, context: AppContext, alice: NamedUser, admin: NamedUser
) -> Chat:
    return Chat(
        client=client,
        context=context,
        users=(alice, admin),
        alice=await alice.login(client),
        admin=await admin.login(client),
    )
