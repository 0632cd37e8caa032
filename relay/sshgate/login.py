"""Who is connecting to the gateway: ``USER:DEVICE``, a registered key, then a TOTP code.

The SSH user name is ``USER:DEVICE`` (the device by name or id). The device is
not looked at here: whether USER may reach it is the broker's decision once the
session is requested, so that the answer ("no device 'x'") reaches a client that
proved who it is, and nothing leaks to one that did not.

The order
---------

1. ``publickey``: the key must be registered to USER (``helpline keys add``) and
   the client must sign the session identifier with it (RFC 4252 section 7).
2. ``keyboard-interactive``, only when the account requires TOTP: one prompt,
   ``One-time code: ``, checked by :meth:`relay.auth.Authenticator.second_factor`
   (the web login's rules: one step of drift, each step used once, failures
   audited and counted toward the address throttle and the account's lockout).

This is OpenSSH's ``AuthenticationMethods publickey,keyboard-interactive``.
asyncssh has no notion of it: a public key whose signature verifies is a
complete login, and the ``SSHServer`` callbacks never learn whether a
signature was checked (``validate_public_key(username, key)`` is asked the same
question for a key offered without a signature and for a signed request). So:

* The first factor is observed where asyncssh verifies it: at connection start
  the connection's own ``validate_public_key(username, key_data, msg,
  signature)`` (which calls ours, then checks the signature over the session
  identifier) is wrapped for that one connection. A signed request that
  verifies for a key of USER is the proof. For an account that needs no TOTP it
  is the login; otherwise the gateway answers "failure, partial success,
  continue with keyboard-interactive" (RFC 4252 section 5.1), as sshd does.
* ``keyboard-interactive`` is offered, and a code is asked for and checked,
  only on a connection that proved a key of that same user name: a client
  cannot start there, and changing the user name starts over (asyncssh calls
  ``begin_auth`` again, which drops every proof). ``publickey`` is no longer
  offered once a key is proven, so the remaining method is the code.
* Fail closed: ``auth_completed`` closes a connection that asyncssh let in
  without the gateway's verdict (which would mean the wrapper was bypassed by a
  changed asyncssh), sessions are refused to it, and :func:`check_asyncssh`
  stops the relay from starting the gateway with an asyncssh whose hooks differ.

What is audited: ``ssh.login`` for each login (key fingerprint, methods, the
device asked for); ``ssh.login_failed`` with a reason for each failed code or
refused account as it happens, and once per connection (and user name) that
ended without a login for any other reason (unknown user, no registered key,
nothing proven). Keys that are not USER's count toward the address throttle but
not the account's lockout: keys cannot be guessed, and anyone could otherwise
lock an account out by offering random keys for its name.
"""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncssh

from protocol.errors import HelplineError, TooManyAttempts

from ..auth import USERNAME
from ..models import SshKey, User
from ..sshkeys import fingerprint_blob, strong_enough
from .session import SshSession

if TYPE_CHECKING:
    from .server import SshGateway

log = logging.getLogger("helpline.sshgate")

#: The keyboard-interactive prompt for the TOTP code.
TOTP_PROMPT = "One-time code: "
#: Refused keys and bad signatures on one connection before nothing is offered any more.
MAX_KEY_FAILURES = 10
#: Wrong codes on one connection before nothing is offered any more.
MAX_CODE_FAILURES = 3
#: Refused key fingerprints kept for the audit entry of a failed connection.
MAX_OFFERED_LISTED = 5


def check_asyncssh() -> None:
    """Refuse to run when asyncssh lacks the hooks the login order relies on."""
    connection = asyncssh.SSHServerConnection
    validate = getattr(connection, "validate_public_key", None)
    parameters = list(inspect.signature(validate).parameters) if callable(validate) else []
    if parameters != ["self", "username", "key_data", "msg", "signature"] or not callable(
        getattr(connection, "send_userauth_failure", None)
    ):
        raise RuntimeError(
            f"asyncssh {asyncssh.__version__} changed the server authentication hooks the SSH"
            " gateway needs (see relay/sshgate/login.py); refusing to start the gateway"
        )


def split_login(username: str) -> tuple[str, str]:
    """``USER:DEVICE``, or ``USER+DEVICE``: scp and sftp read a ``:`` after the user as the
    start of a path, and neither character is allowed in user or device names."""
    for separator in (":", "+"):
        user, found, device = username.partition(separator)
        if found:
            return user, device
    return "", ""


class Stage(enum.Enum):
    KEY = "waiting for a key"
    CODE = "key proven, waiting for the one-time code"
    DONE = "logged in"
    REFUSED = "refused"


class GatewayLogin(asyncssh.SSHServer):
    """One SSH connection's authentication, and the sessions it then asks for."""

    def __init__(self, gateway: SshGateway) -> None:
        self.gateway = gateway
        self.relay = gateway.relay
        self.conn: asyncssh.SSHServerConnection | None = None
        self.address = "unknown"
        self.failures = 0  # refused keys and bad signatures, on this connection
        self.code_failures = 0
        self._start_over("")

    def _start_over(self, login: str) -> None:
        self.login = login  # the SSH user name as sent
        self.username = ""
        self.device_key = ""
        self.user: User | None = None
        self.stage = Stage.KEY
        self.reason = ""  # why this login cannot succeed, for the audit
        self.settled = False  # a failure of this login is already in the audit log
        self.candidates: dict[str, SshKey] = {}  # USER's keys the client offered
        self.refused_keys: list[str] = []
        self.key: SshKey | None = None  # the proven one

    # -- the connection ----------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.gateway.connections.add(conn)
        peer = conn.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "unknown"
        verify = conn.validate_public_key

        async def validate_public_key(
            username: str, key_data: bytes, msg: bytes, signature: bytes
        ) -> bool:
            valid: bool = await verify(username, key_data, msg, signature)
            if not msg:  # a key offered without a signature: "would you take it?"
                return valid
            return await self._signed(username, key_data, valid)

        conn.validate_public_key = validate_public_key  # type: ignore[method-assign]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.gateway.connections.discard(self.conn)
        if self.login and self.stage is not Stage.DONE and not self.settled:
            self.gateway.spawn(self._audit_failed_login(), "audit a failed login")

    # -- the user name ---------------------------------------------------------------------------

    async def begin_auth(self, username: str) -> bool:
        if self.login and self.stage is not Stage.DONE and not self.settled:
            await self._audit_failed_login()  # the user name changed: that one failed
        self._start_over(username)
        user, device = split_login(username)
        if not (user and device):
            self.reason = "user name is not USER:DEVICE"
            self._banner(
                "helpline: log in as USER:DEVICE (or USER+DEVICE for scp and sftp), for example:"
                " ssh -p PORT alice:desk-1@RELAY"
            )
            return True
        self.username, self.device_key = user[:64], device[:255]
        if self.relay.auth.throttle.blocked(self.address, self.relay.auth.clock()):
            self.reason = "address throttled"
            self.stage = Stage.REFUSED
            return True
        if not USERNAME.match(self.username):  # no account has it: not even looked up
            self.reason = "user name not allowed"
            return True
        self.user = await self.relay.store.get_user(self.username)
        if self.user is None:
            self.reason = "unknown user"
        return True

    # -- the first factor: a key of USER, proven by its signature ---------------------------------

    def public_key_auth_supported(self) -> bool:
        return self.stage is Stage.KEY

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Is ``key`` one of USER's? (The signature, if any, is checked after this.)"""
        if self.stage is not Stage.KEY or username != self.login:
            return False
        fingerprint = fingerprint_blob(key.public_data)
        record = await self.relay.store.find_ssh_key(fingerprint)
        if (
            self.user is not None
            and record is not None
            and record.user_id == self.user.id
            and strong_enough(key.public_data)  # a short RSA key from before they were refused
        ):
            self.candidates[fingerprint] = record
            return True
        if fingerprint not in self.refused_keys:
            self.refused_keys.append(fingerprint)
        self._failed()
        return False

    async def _signed(self, username: str, key_data: bytes, valid: bool) -> bool:
        """A signed publickey request, after asyncssh checked the signature (``valid``)."""
        record = self.candidates.get(fingerprint_blob(key_data))
        if self.stage is not Stage.KEY or username != self.login or record is None:
            return False
        if not valid:
            self.reason = "key signature invalid"
            self._failed()
            return False
        self.key = record
        try:
            user = await self.relay.auth.usable_account(
                self.username, self.address, **self._details()
            )
        except HelplineError as error:  # throttled, unknown, locked, disabled: audited
            self._refuse(error)
            return False
        self.user = user
        if user.totp_required:
            self.stage = Stage.CODE
            self._partial_success()
            return False
        self.stage = Stage.DONE
        await self._audit_login("publickey")
        return True

    def _partial_success(self) -> None:
        """Tell the client its key was accepted and a second method is required.

        Sent here, before asyncssh's own plain failure for this request: asyncssh
        drops the request's handler when a failure goes out, so its own is then
        not sent (``ServerAuth.send_failure`` only answers for the current one).
        """
        assert self.conn is not None
        self.conn.send_userauth_failure(True)

    # -- the second factor: the TOTP code by keyboard-interactive --------------------------------

    def kbdint_auth_supported(self) -> bool:
        return self.stage is Stage.CODE

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]] | bool:
        if self.stage is not Stage.CODE or username != self.login:
            return False
        return "", "", "", [(TOTP_PROMPT, False)]

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> bool:
        if self.stage is not Stage.CODE or username != self.login or len(responses) != 1:
            return False
        try:
            user = await self.relay.auth.second_factor(
                self.username, responses[0].strip(), self.address, **self._details()
            )
        except TooManyAttempts as error:
            self._refuse(error)
            return False
        except HelplineError:  # a wrong or reused code: audited, counted
            self.settled = True
            self.code_failures += 1
            if self.code_failures >= MAX_CODE_FAILURES:
                self.stage = Stage.REFUSED
            return False
        self.user = user
        self.stage = Stage.DONE
        await self._audit_login("publickey,keyboard-interactive")
        return True

    # -- after authentication ------------------------------------------------------------------

    def auth_completed(self) -> None:
        if self.stage is not Stage.DONE:  # fail closed: see the module docstring
            log.error("asyncssh accepted a login the SSH gateway did not; closing it")
            if self.conn is not None:
                self.conn.close()

    def session_requested(self) -> SshSession | bool:
        if self.stage is not Stage.DONE or self.user is None:
            return False
        return SshSession(self.gateway, self.user, self.device_key)

    # -- outcomes ---------------------------------------------------------------------------------

    def _details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"device": self.device_key}
        if self.key is not None:
            details["key"] = self.key.fingerprint
        return details

    def _failed(self) -> None:
        self.failures += 1
        if self.failures >= MAX_KEY_FAILURES:
            self.reason = "too many authentication failures"
            self.stage = Stage.REFUSED

    def _refuse(self, error: HelplineError) -> None:
        self.stage = Stage.REFUSED
        self.settled = True
        if isinstance(error, TooManyAttempts):
            self._banner(f"helpline: {error.message}")

    def _banner(self, text: str) -> None:
        if self.conn is not None:
            self.conn.send_auth_banner(text + "\r\n")

    async def _audit_login(self, methods: str) -> None:
        assert self.user is not None
        assert self.key is not None
        await self.relay.audit.record(
            self.user.username,
            "ssh.login",
            self.user.username,
            address=self.address,
            methods=methods,
            key=self.key.fingerprint,
            key_name=self.key.name,
            device=self.device_key,
        )

    async def _audit_failed_login(self) -> None:
        """Once per failed login that was not audited as it happened."""
        self.settled = True
        if self.reason:
            reason = self.reason
        elif self.stage is Stage.CODE:
            reason = "no one-time code given"
        elif self.candidates:
            reason = "key not proven (no signature)"
        elif self.refused_keys:
            reason = "no registered key offered"
        else:
            reason = "no key offered"
        await self.relay.auth.record_failure(
            (self.username or self.login)[:64],
            self.address,
            reason,
            action="ssh.login_failed",
            throttle=reason != "address throttled",
            login=self.login[:300],
            refused_keys=self.refused_keys[:MAX_OFFERED_LISTED],
        )
