"""Password checks: argon2id, off the event loop, and bounded.

Checking a password is what an unauthenticated client can make the relay do: each
argon2id verification costs ~64 MiB and tens of milliseconds of a core (argon2-cffi's
defaults, RFC 9106's second recommended profile). :class:`PasswordChecker` runs them
on a pool of its own with at most ``concurrent`` at a time (one per core by default)
and lets at most ``queued`` more wait; past that, a login is refused at once with
:class:`~protocol.errors.TooManyAttempts` (HTTP 429) and a message that says the relay
is busy, and nothing is counted against the account or the address.

Unknown, disabled and locked accounts are verified against :data:`DUMMY_HASH` (same
parameters as real hashes), so every login costs the same whatever the account.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from protocol.errors import TooManyAttempts

__all__ = ["BUSY", "DUMMY_HASH", "PasswordChecker", "hasher", "verify_password"]

hasher = PasswordHasher()
#: Verified against when the account is unknown, disabled or locked.
DUMMY_HASH = hasher.hash(secrets.token_hex(16))
BUSY = "the relay is busy checking other logins; try again in a few seconds"


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class PasswordChecker:
    """At most ``concurrent`` verifications at once, ``queued`` more waiting, no more."""

    def __init__(self, concurrent: int = 0, queued: int = 32) -> None:
        self.concurrent = concurrent if concurrent > 0 else (os.cpu_count() or 1)
        self.queued = max(0, queued)
        self._slots = asyncio.Semaphore(self.concurrent)
        self._pool = ThreadPoolExecutor(self.concurrent, thread_name_prefix="argon2")
        self.admitted = 0  # logins between admission and their answer
        self.running = 0
        self.peak = 0  # most verifications ever running at once
        self.refused = 0  # logins answered "busy"

    @contextlib.asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """A place for one login's check, or TooManyAttempts (busy) at once."""
        if self.admitted >= self.concurrent + self.queued:
            self.refused += 1
            raise TooManyAttempts(BUSY)
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def verify(self, password_hash: str, password: str) -> bool:
        async with self._slots:
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                loop = asyncio.get_running_loop()
                work = loop.run_in_executor(self._pool, verify_password, password_hash, password)
                # A cancelled login still holds its slot until its hash is done: the
                # bound is on work really running, not on requests still waiting.
                try:
                    return await asyncio.shield(work)
                except asyncio.CancelledError:
                    await asyncio.wait([work])
                    raise
            finally:
                self.running -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
