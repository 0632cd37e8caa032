"""relay.passwords: argon2id checks run a bounded number at once; past the queue, busy."""

from __future__ import annotations

import asyncio

import pytest

from protocol.errors import TooManyAttempts
from relay.passwords import BUSY, DUMMY_HASH, PasswordChecker, hasher


async def test_checks_run_at_most_the_bound_at_once_and_answer_right() -> None:
    checker = PasswordChecker(concurrent=2, queued=10)
    good = hasher.hash("right password")
    try:

        async def check(password: str) -> bool:
            async with checker.admission():
                return await checker.verify(good, password)

        results = await asyncio.gather(
            *(check("right password" if n % 2 else "x") for n in range(8))
        )
        assert results == [n % 2 == 1 for n in range(8)]
        assert checker.peak == 2
        assert not await checker.verify(DUMMY_HASH, "right password")
    finally:
        checker.close()


async def test_logins_past_the_queue_are_refused_as_busy_at_once() -> None:
    checker = PasswordChecker(concurrent=1, queued=1)
    try:
        release = asyncio.Event()

        async def hold() -> None:
            async with checker.admission():
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(TooManyAttempts) as busy:
            async with checker.admission():
                pass
        assert busy.value.message == BUSY
        assert checker.refused == 1
        release.set()
        await asyncio.gather(*holders)
        async with checker.admission():  # room again
            pass
    finally:
        checker.close()
