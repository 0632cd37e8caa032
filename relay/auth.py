"""Technician authentication: argon2id passwords, TOTP, bearer tokens, throttling, lockout.

* Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second
  recommended profile), off the event loop and bounded (:mod:`relay.passwords`):
  a few at once, a bounded queue, "busy" (429) past it.
* Every login does the same work and gets the same answer whatever failed
  (unknown, disabled or locked account, wrong password or code): one argon2id
  verification (against a dummy hash where nothing could match), one message.
  Only the audit log tells the causes apart.
* An attempt is counted (address and account) before its password or code is
  checked, so parallel guesses cannot get past the lockout; a success takes its
  count back.
* TOTP codes (RFC 6238, 30 s steps, one step of drift either way) are refused
  when their step is not newer than the last accepted one: a code works once.
  The step is recorded by a compare-and-set in the store
  (:meth:`relay.store.Store.claim_totp_step`), so of parallel logins with one
  code, on any path (REST, web, SSH), exactly one wins.
* Bearer tokens are 256 random bits shown once; the store keeps their SHA-256.
* Failures lock the account after ``lockout_threshold`` in a row, and throttle
  the client address after ``address_failures`` within ``address_window`` (the
  address throttle is the one refusal with its own answer, 429: it says nothing
  about any account).

The first admin's ``initial-admin.json`` (its password and TOTP secret, written
by ``helpline-relay init``) is removed after that admin's first successful
login, audited as ``relay.initial_admin_removed``.

Every outcome is an audit entry; the error a client sees never says which of
username, password or code was wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from protocol.errors import AuthError, TooManyAttempts

from .audit import AuditLog
from .config import AuthConfig
from .models import ApiToken, User
from .passwords import DUMMY_HASH, PasswordChecker, hasher
from .store import Store

__all__ = ["USERNAME", "Authenticator", "LoginResult", "hash_token", "new_totp_secret"]

log = logging.getLogger("helpline.auth")

#: What a user name may be (checked when accounts are made and before any login lookup).
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}\Z")

TOKEN_PREFIX = "hl_"
_GENERIC_FAILURE = "invalid username, password or one-time code"
_MAX_TRACKED_ADDRESSES = 100_000


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str, issuer: str = "Helpline") -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(hasher.hash, password)


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

    def forgive(self, address: str, at: float) -> None:
        """Take back the attempt counted at ``at`` (before its check): it succeeded."""
        failures = self._failures.get(address)
        if failures is not None:
            with contextlib.suppress(ValueError):
                failures.remove(at)


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
        self.passwords = PasswordChecker(config.password_checks, config.password_queue)

    def close(self) -> None:
        """Stop the password pool; log how busy it was (peak checks at once, busy refusals)."""
        checker = self.passwords
        log.info(
            "password checks: at most %d at once (bound %d, %d may wait);"
            " %d logins refused as busy",
            checker.peak,
            checker.concurrent,
            checker.queued,
            checker.refused,
        )
        checker.close()

    async def login(self, username: str, password: str, otp: str, address: str) -> LoginResult:
        """Password and code to a bearer token, or AuthError with one message for every
        cause (unknown, disabled or locked account, wrong password or code) after the same
        work: one argon2id verification, against a dummy hash where no password could
        match. The attempt is counted (address and account) before that verification
        starts, so parallel guesses see each other; a success takes its count back."""
        now = self.clock()
        actor = username[:64]
        if self.throttle.blocked(address, now):
            await self.audit.record(actor, "user.login_throttled", actor, address=address)
            raise TooManyAttempts("too many failed attempts from this address; try again later")
        if not USERNAME.match(username):  # no account can have it: not even looked up
            await self.record_failure(actor, address, "user name not allowed", now=now)
            raise AuthError(_GENERIC_FAILURE)
        async with self.passwords.admission():  # or busy (429): nothing counted
            self.throttle.fail(address, now)
            user = await self.store.get_user(username)
            attempt = None if user is None else await self._claim_attempt(user, now)
            usable = user is not None and attempt is not None and not user.disabled
            password_hash = user.password_hash if usable and user is not None else DUMMY_HASH
            password_ok = await self.passwords.verify(password_hash, password)
        if user is None:
            reason = "unknown user"
        elif attempt is None:
            reason = "account locked"
        elif user.disabled:
            reason = "account disabled"
        elif not password_ok:
            reason = "wrong password"
        else:
            reason = await self._code_problem(user, otp, now)
        if reason:
            await self._refused(user, attempt, actor, address, reason, now=now)
            raise AuthError(_GENERIC_FAILURE)
        assert user is not None
        self.throttle.forgive(address, now)
        updates: dict[str, object] = {"failed_attempts": 0, "locked_until": None}
        if hasher.check_needs_rehash(user.password_hash):
            updates["password_hash"] = await hash_password(password)
        await self.store.update_user(user.id, **updates)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires_at = now + self.config.token_lifetime
        await self.store.add_api_token(ApiToken(hash_token(token), user.id, now, expires_at))
        await self.audit.record(user.username, "user.login", user.username, address=address)
        await self._remove_initial_admin_file(user)
        return LoginResult(token, user, expires_at)

    async def _claim_attempt(self, user: User, now: float) -> int | None:
        """Count an attempt against ``user`` before checking it; None: the account is locked."""
        return await self.store.claim_login_attempt(
            user.id, now, self.config.lockout_threshold, self.config.lockout_seconds
        )

    async def _code_problem(self, user: User, otp: str, now: float) -> str:
        """Why ``otp`` does not complete ``user``'s login ("" when it does: then its step is
        recorded, by a compare-and-set, so of parallel logins with one code one wins)."""
        # Every account gets a secret at creation; only those that require it must use it.
        if not user.totp_required:
            return ""
        if user.totp_secret is None:
            return "no TOTP secret enrolled"
        matched = matching_totp_step(user.totp_secret, otp, now)
        if matched is None:
            return "wrong one-time code"
        if not await self.store.claim_totp_step(user.id, matched):
            return "one-time code reused"
        user.totp_last_step = matched
        return ""

    async def _refused(
        self,
        user: User | None,
        attempt: int | None,
        actor: str,
        address: str,
        reason: str,
        *,
        now: float,
        action: str = "user.login_failed",
        **details: Any,
    ) -> None:
        """Audit a refused login (its attempt was counted already); the attempt that
        reached the lockout threshold also audits the lock."""
        if attempt is None and user is not None:
            action = "user.login_refused" if action == "user.login_failed" else action
        await self.audit.record(actor, action, actor, address=address, reason=reason, **details)
        if user is not None and attempt == self.config.lockout_threshold:
            await self.audit.record(
                "relay",
                "user.locked",
                user.username,
                address=address,
                failures=attempt,
                seconds=self.config.lockout_seconds,
            )

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

    async def record_failure(
        self,
        actor: str,
        address: str,
        reason: str,
        *,
        action: str = "user.login_failed",
        now: float | None = None,
        throttle: bool = True,
        **details: Any,
    ) -> None:
        """Audit a failed login that no account's count covers as ``action``, and count it
        against ``address`` (unless ``throttle`` is false)."""
        now = self.clock() if now is None else now
        if throttle:
            self.throttle.fail(address, now)
        await self.audit.record(actor, action, actor, address=address, reason=reason, **details)

    # -- a second step after a first factor proven elsewhere (the SSH gateway's keys) -----

    async def usable_account(
        self, username: str, address: str, *, action: str = "ssh.login_failed", **details: Any
    ) -> User:
        """The account ``username`` once its first factor was proven by other means (an
        SSH key signature): refused when the address is throttled (TooManyAttempts), or
        with :meth:`login`'s one AuthError when the name is not allowed or the account is
        unknown, locked or disabled; each refusal audited as ``action``."""
        now = self.clock()
        actor = username[:64]
        if self.throttle.blocked(address, now):
            await self.audit.record(
                actor, action, actor, address=address, reason="address throttled", **details
            )
            raise TooManyAttempts("too many failed attempts from this address; try again later")
        user = await self.store.get_user(username) if USERNAME.match(username) else None
        if user is None:
            reason = "unknown user" if USERNAME.match(username) else "user name not allowed"
        elif user.locked_until is not None and user.locked_until > now:
            reason = "account locked"
        elif user.disabled:
            reason = "account disabled"
        else:
            return user
        await self.record_failure(actor, address, reason, action=action, now=now, **details)
        raise AuthError(_GENERIC_FAILURE)

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
        attempt is counted toward the lockout (a locked account is refused), then the
        code (current step +-1, never a step already used, recorded by compare-and-set);
        a failure is audited as ``action`` and counts toward the address throttle. On
        success the failure count is cleared. Accounts that do not require TOTP pass
        without a code. Nothing is audited on success: the caller records the login with
        what it knows (the key, the device).
        """
        user = await self.usable_account(username, address, action=action, **details)
        if not user.totp_required:
            return user
        now = self.clock()
        actor = username[:64]
        attempt = await self._claim_attempt(user, now)
        reason = "account locked" if attempt is None else await self._code_problem(user, otp, now)
        if not reason:
            await self.store.update_user(user.id, failed_attempts=0, locked_until=None)
            user.failed_attempts, user.locked_until = 0, None
            return user
        self.throttle.fail(address, now)
        await self._refused(
            user, attempt, actor, address, reason, now=now, action=action, **details
        )
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
