"""Technician authentication: argon2id passwords, TOTP, bearer tokens, throttling, lockout.

* Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second
  recommended profile); hashing runs in a worker thread so a login never stalls
  the event loop.
* TOTP codes (RFC 6238, 30 s steps, one step of drift either way) are refused
  when their step is not newer than the last accepted one: a code works once.
  The step is recorded by a compare-and-set in the store
  (:meth:`relay.store.Store.claim_totp_step`), so of parallel logins with one
  code, on any path (REST, web, SSH), exactly one wins.
* Bearer tokens are 256 random bits shown once; the store keeps their SHA-256.
* Failures lock the account after ``lockout_threshold`` in a row, and throttle
  the client address after ``address_failures`` within ``address_window``.

The first admin's ``initial-admin.json`` (its password and TOTP secret, written
by ``helpline-relay init``) is removed after that admin's first successful
login, audited as ``relay.initial_admin_removed``.

Every outcome is an audit entry; the error a client sees never says which of
username, password or code was wrong.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from protocol.errors import AuthError, TooManyAttempts

from .audit import AuditLog
from .config import AuthConfig
from .models import ApiToken, User
from .store import Store

__all__ = ["USERNAME", "Authenticator", "LoginResult", "hash_token", "new_totp_secret"]

log = logging.getLogger("helpline.auth")

#: What a user name may be (checked when accounts are made and before any login lookup).
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}\Z")

TOKEN_PREFIX = "hl_"
_GENERIC_FAILURE = "invalid username, password or one-time code"
_MAX_TRACKED_ADDRESSES = 100_000

_hasher = PasswordHasher()
# Verified against when the username does not exist, so timing does not tell.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str, issuer: str = "Helpline") -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def matching_totp_step(secret: str, code: str, now: float) -> int | None:
    """The time step ``code`` is valid for (current step +-1), or None."""
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(_utc(now))
    for step in (current, current - 1, current + 1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _utc(now: float) -> datetime:
    return datetime.fromtimestamp(now, tz=UTC)


@dataclass(frozen=True, slots=True)
class LoginResult:
    token: str
    user: User
    expires_at: float


class AddressThrottle:
    """Failures per client address in a sliding window; bounded memory."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def blocked(self, address: str, now: float) -> bool:
        return len(self._recent(address, now)) >= self.limit

    def fail(self, address: str, now: float) -> int:
        failures = self._recent(address, now)
        failures.append(now)
        self._failures[address] = failures
        self._failures.move_to_end(address)
        while len(self._failures) > _MAX_TRACKED_ADDRESSES:
            self._failures.popitem(last=False)
        return len(failures)


class Authenticator:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        config: AuthConfig,
        clock: Callable[[], float] = time.time,
        initial_admin: Path | None = None,
    ) -> None:
        self.store = store
        #: ``initial-admin.json``, until the admin it names has logged in once.
        self.initial_admin = initial_admin
        self.audit = audit
        self.config = config
        self.clock = clock
        self.throttle = AddressThrottle(config.address_failures, config.address_window)
        self._failure_lock = asyncio.Lock()

    async def login(self, username: str, password: str, otp: str, address: str) -> LoginResult:
        now = self.clock()
        actor = username[:64]
        if self.throttle.blocked(address, now):
            await self.audit.record(actor, "user.login_throttled", actor, address=address)
            raise TooManyAttempts("too many failed attempts from this address; try again later")
        if not USERNAME.match(username):  # no account can have it: not even looked up
            await self._fail(None, actor, address, "user name not allowed", now)
            raise AuthError(_GENERIC_FAILURE)
        user = await self.store.get_user(username)
        if user is None:
            await asyncio.to_thread(_verify_password, _DUMMY_HASH, password)
            await self._fail(None, actor, address, "unknown user", now)
            raise AuthError(_GENERIC_FAILURE)
        if user.locked_until is not None and user.locked_until > now:
            await self.audit.record(
                actor, "user.login_refused", actor, address=address, reason="account locked"
            )
            raise TooManyAttempts("account locked after repeated failures; try again later")
        if user.disabled:
            await self._fail(user, actor, address, "account disabled", now)
            raise AuthError(_GENERIC_FAILURE)
        if not await asyncio.to_thread(_verify_password, user.password_hash, password):
            await self._fail(user, actor, address, "wrong password", now)
            raise AuthError(_GENERIC_FAILURE)
        # Every account gets a secret at creation; only those that require it must use it.
        if user.totp_required:
            if user.totp_secret is None:
                await self._fail(user, actor, address, "no TOTP secret enrolled", now)
                raise AuthError(_GENERIC_FAILURE)
            matched = matching_totp_step(user.totp_secret, otp, now)
            if matched is None:
                await self._fail(user, actor, address, "wrong one-time code", now)
                raise AuthError(_GENERIC_FAILURE)
            # Check and record the step in one compare-and-set in the store: of parallel
            # logins with one code (REST, web or SSH), exactly one gets in.
            if not await self.store.claim_totp_step(user.id, matched):
                await self._fail(user, actor, address, "one-time code reused", now)
                raise AuthError(_GENERIC_FAILURE)
            user.totp_last_step = matched
        updates: dict[str, object] = {"failed_attempts": 0, "locked_until": None}
        if _hasher.check_needs_rehash(user.password_hash):
            updates["password_hash"] = await hash_password(password)
        await self.store.update_user(user.id, **updates)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires_at = now + self.config.token_lifetime
        await self.store.add_api_token(ApiToken(hash_token(token), user.id, now, expires_at))
        await self.audit.record(user.username, "user.login", user.username, address=address)
        await self._remove_initial_admin_file(user)
        return LoginResult(token, user, expires_at)

    async def _remove_initial_admin_file(self, user: User) -> None:
        """Delete ``initial-admin.json`` once the admin it names logged in: its password
        and TOTP secret have done their job and must not stay on disk."""
        path = self.initial_admin
        if path is None:
            return
        try:
            recorded = json.loads(await asyncio.to_thread(path.read_text))
        except FileNotFoundError:
            self.initial_admin = None
            return
        except (OSError, ValueError) as error:
            log.warning("cannot read %s: %s", path, error)
            return
        # By id where the file has it (a re-created name is another account), else by name.
        if recorded.get("user_id", user.id) != user.id or recorded.get("username") != user.username:
            return
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return  # a parallel login removed it (and audited that)
        self.initial_admin = None
        await self.audit.record(
            "relay", "relay.initial_admin_removed", path.name, username=user.username
        )

    async def _fail(
        self, user: User | None, actor: str, address: str, reason: str, now: float
    ) -> None:
        await self.record_failure(user, actor, address, reason, now=now)

    async def record_failure(
        self,
        user: User | None,
        actor: str,
        address: str,
        reason: str,
        *,
        action: str = "user.login_failed",
        now: float | None = None,
        throttle: bool = True,
        **details: Any,
    ) -> None:
        """Audit a failed login as ``action``; count it against ``address`` (unless
        ``throttle`` is false) and, when ``user`` is given, toward that account's lockout."""
        now = self.clock() if now is None else now
        if throttle:
            self.throttle.fail(address, now)
        await self.audit.record(actor, action, actor, address=address, reason=reason, **details)
        if user is None:
            return
        # Parallel guesses must all count: read the counter afresh and write it back under
        # one lock, or each would add one to the same stale value and never reach the limit.
        async with self._failure_lock:
            current = await self.store.get_user_by_id(user.id)
            if current is None:
                return
            attempts = current.failed_attempts + 1
            updates: dict[str, object] = {"failed_attempts": attempts}
            already_locked = current.locked_until is not None and current.locked_until > now
            if attempts >= self.config.lockout_threshold and not already_locked:
                updates["locked_until"] = now + self.config.lockout_seconds
            await self.store.update_user(user.id, **updates)
        if "locked_until" in updates:
            await self.audit.record(
                "relay",
                "user.locked",
                user.username,
                address=address,
                failures=attempts,
                seconds=self.config.lockout_seconds,
            )

    # -- a second step after a first factor proven elsewhere (the SSH gateway's keys) -----

    async def usable_account(
        self, username: str, address: str, *, action: str = "ssh.login_failed", **details: Any
    ) -> User:
        """The account ``username`` once its first factor was proven by other means (an
        SSH key signature): refused when the address is throttled, the account unknown,
        locked or disabled, with the same auditing and counting as :meth:`login`.

        Raises :class:`TooManyAttempts` (throttled, locked) or :class:`AuthError`.
        """
        now = self.clock()
        actor = username[:64]
        if self.throttle.blocked(address, now):
            await self.audit.record(
                actor, action, actor, address=address, reason="address throttled", **details
            )
            raise TooManyAttempts("too many failed attempts from this address; try again later")
        if not USERNAME.match(username):
            await self.record_failure(
                None, actor, address, "user name not allowed", action=action, now=now, **details
            )
            raise AuthError(_GENERIC_FAILURE)
        user = await self.store.get_user(username)
        if user is None:
            await self.record_failure(
                None, actor, address, "unknown user", action=action, now=now, **details
            )
            raise AuthError(_GENERIC_FAILURE)
        if user.locked_until is not None and user.locked_until > now:
            await self.audit.record(
                actor, action, actor, address=address, reason="account locked", **details
            )
            raise TooManyAttempts("account locked after repeated failures; try again later")
        if user.disabled:
            await self.record_failure(
                user, actor, address, "account disabled", action=action, now=now, **details
            )
            raise AuthError(_GENERIC_FAILURE)
        return user

    async def second_factor(
        self,
        username: str,
        otp: str,
        address: str,
        *,
        action: str = "ssh.login_failed",
        **details: Any,
    ) -> User:
        """Check the TOTP code of an account whose first factor was proven by other means.

        The rules of :meth:`login` after the password: :meth:`usable_account`, then the
        code (current step +-1, never a step already used); a failure is audited as
        ``action`` and counts toward the address throttle and the account's lockout. On
        success the failure count is cleared and the step recorded. Accounts that do not
        require TOTP pass without a code. Nothing is audited on success: the caller
        records the login with what it knows (the key, the device).
        """
        user = await self.usable_account(username, address, action=action, **details)
        if not user.totp_required:
            return user
        now = self.clock()
        actor = username[:64]
        if user.totp_secret is None:
            reason = "no TOTP secret enrolled"
        else:
            matched = matching_totp_step(user.totp_secret, otp, now)
            if matched is None:
                reason = "wrong one-time code"
            # The same compare-and-set as :meth:`login`: one code, one login, on any path.
            elif await self.store.claim_totp_step(user.id, matched):
                await self.store.update_user(user.id, failed_attempts=0, locked_until=None)
                user.failed_attempts, user.locked_until = 0, None
                user.totp_last_step = matched
                return user
            else:
                reason = "one-time code reused"
        await self.record_failure(user, actor, address, reason, action=action, now=now, **details)
        raise AuthError(_GENERIC_FAILURE)

    async def authenticate(self, token: str) -> tuple[User, str]:
        """The user a bearer token belongs to, and the token's hash. AuthError otherwise."""
        token_hash = hash_token(token)
        record = await self.store.get_api_token(token_hash)
        if record is None:
            raise AuthError("invalid or revoked token; log in again")
        if record.expires_at <= self.clock():
            await self.store.delete_api_token(token_hash)
            raise AuthError("token expired; log in again")
        user = await self.store.get_user_by_id(record.user_id)
        if user is None or user.disabled:
            raise AuthError("account no longer active")
        return user, token_hash

    async def logout(self, user: User, token_hash: str) -> None:
        await self.store.delete_api_token(token_hash)
        await self.audit.record(user.username, "user.logout", user.username)
