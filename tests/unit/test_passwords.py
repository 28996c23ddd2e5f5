"""Password policy and hashing: bcrypt cost 12, every character counts, off the event loop."""

from __future__ import annotations

import asyncio

import pytest

from cmschat.accounts.passwords import (
    bcrypt_cost,
    check_password_policy,
    hash_password,
    verify_password,
)
from cmschat.errors import Invalid
from cmschat.settings import Settings


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short1!", "at least 10"),
        ("x" * 129, "at most 128"),
        ("my-name-is-minji!", "username"),
        ("MINJI-rules-2026", "username"),
        ("1234567890", "common"),
        ("qwertyuiop", "common"),
        ("aaaaaaaaaaaa", "common"),
    ],
)
def test_policy_refuses_weak_passwords(password: str, reason: str) -> None:
    with pytest.raises(Invalid, match=reason) as caught:
        check_password_policy(password, username="minji")
    assert caught.value.field == "password"


@pytest.mark.parametrize("password", ["Seoul-tower-2026", "비밀번호는길어야합니다", "Ab1-" * 32])
def test_policy_accepts_good_passwords(password: str) -> None:
    check_password_policy(password, username="minji")


async def test_default_cost_is_12_and_hash_verifies() -> None:
    rounds = Settings(_env_file=None).auth.bcrypt_rounds  # type: ignore[call-arg]
    stored = await hash_password("Seoul-tower-2026", rounds=rounds)
    assert rounds == 12 and bcrypt_cost(stored) == 12
    assert await verify_password("Seoul-tower-2026", stored)
    assert not await verify_password("Seoul-tower-2027", stored)


async def test_characters_past_72_bytes_still_count() -> None:
    # 30 Korean characters are 90 bytes: plain bcrypt would ignore the last 6.
    base = "가" * 29
    stored = await hash_password(base + "나", rounds=4)
    assert await verify_password(base + "나", stored)
    assert not await verify_password(base + "다", stored)


async def test_hashing_does_not_block_the_event_loop() -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await hash_password("Seoul-tower-2026", rounds=12)  # about a quarter second of CPU
    done.set()
    await task
    assert ticks > 10


async def test_overlong_guess_is_refused_not_truncated() -> None:
    stored = await hash_password("x" * 128, rounds=4)
    assert not await verify_password("x" * 128 + "tail", stored)
