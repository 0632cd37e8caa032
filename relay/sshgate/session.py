"""One SSH session channel as the technician's leg of a broker session.

A ``shell`` or ``exec`` request asks the broker for a ``shell`` session on the
device named in the login, with the client's terminal type and size and its
command, and a PTY only when the client asked for one. The technician sees on
stderr that the customer is being asked; a refusal (no such device, no grant,
consent denied) is a clear line on stderr and exit status 1; a session that
ends without the device's exit status (the customer, an admin, a lost device,
relay shutdown) is a line on stderr and exit status 255, like ``ssh`` itself
uses for "no status from the remote side".

Flow control, both ways bounded:

* Output: :meth:`credit` is what the SSH channel takes before its buffer (what
  the client's window does not yet admit) passes ``WRITE_HIGH``; asyncssh's
  ``pause_writing``/``resume_writing`` tell when that happens and when the
  buffer is back under ``WRITE_LOW``, and ``resume_writing`` asks the broker
  for more.
* Input: bytes from the client are handed to the broker in order; once
  ``READ_HIGH`` of them are not yet passed on to the agent, reading from the
  channel pauses (the client's SSH window then stops it) until
  :meth:`consumed` brings that under ``READ_LOW``.

Every callback from asyncssh only queues an event; one task per session hands
them to the broker in order, so input, resizes and end of input reach the
device in the order the client sent them, and never before consent is given.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import asyncssh

from protocol.errors import ErrorCode

from ..broker import Session
from ..legs import TechnicianLeg
from ..models import User

if TYPE_CHECKING:
    from .server import SshGateway

log = logging.getLogger("helpline.sshgate")

#: Output held in the SSH channel beyond the client's window before the broker must wait.
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024
#: Input given to the broker but not yet to the agent before reading from the client pauses.
READ_HIGH = 256 * 1024
READ_LOW = 64 * 1024
#: After the device's exit status, how long its close may take before the leg ends it.
END_GRACE = 10.0
#: Window changes are passed on at most this often (seconds); a burst becomes the last one.
RESIZE_INTERVAL = 0.05
#: What the agent gets when the client sent no terminal type; the longest it takes.
DEFAULT_TERM = "xterm-256color"
MAX_TERM = 64
#: The longest command a session request carries (the protocol's limit for a parameter).
MAX_COMMAND = 1024
#: Exit statuses for "the session was refused" and "it ended without a status".
EXIT_REFUSED = 1
EXIT_NO_STATUS = 255
#: The longest message from the relay or the device shown to the technician.
MAX_MESSAGE = 300


def clean_line(text: str) -> str:
    """``text`` without control characters (it may come from a device), cut short."""
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    return cleaned[:MAX_MESSAGE]


def _dimension(value: int) -> int | None:
    return min(value, 1000) if value > 0 else None


class SshSession(asyncssh.SSHServerSession[bytes], TechnicianLeg):
    """An SSH ``session`` channel bridged to the broker."""

    via = "ssh"

    def __init__(self, gateway: SshGateway, user: User, device_key: str) -> None:
        self.gateway = gateway
        self.broker = gateway.relay.broker
        self.user = user
        self.device_key = device_key
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.pty = False
        self.term = DEFAULT_TERM
        self.cols = 80
        self.rows = 24
        self.command: str | None = None
        self.session: Session | None = None
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._decided = False  # the broker opened or refused the session
        self._opened = False  # consent given and the broker told we take output
        self._over = False  # an exit (status, refusal or end) went to the client
        self._device_exited = False
        self._ended = asyncio.Event()  # the broker closed this leg
        self._write_paused = False
        self._read_paused = False
        self._outstanding = 0  # input bytes given to the broker, not yet to the agent
        self._size = (self.cols, self.rows)  # the latest window size from the client
        self._resize_queued = False
        self._last_resize = 0.0

    # -- asyncssh's side --------------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan
        chan.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any
    ) -> bool:
        self.pty = True
        self.term = (clean_line(term_type).strip() or DEFAULT_TERM)[:MAX_TERM]
        self.cols = _dimension(term_size[0]) or self.cols
        self.rows = _dimension(term_size[1]) or self.rows
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return False  # no sftp (yet)

    def session_started(self) -> None:
        self.gateway.spawn(self._run(), f"ssh session for {self.user.username}")

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if datatype is not None or not data:
            return
        self._outstanding += len(data)
        self._events.put_nowait(("data", data))
        if self._outstanding >= READ_HIGH and not self._read_paused and self.chan is not None:
            self._read_paused = True
            self.chan.pause_reading()

    def eof_received(self) -> bool:
        self._events.put_nowait(("eof", None))
        return True  # half-close: the device's output still comes

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        cols, rows = _dimension(width), _dimension(height)
        if not (self.pty and cols and rows):
            return
        self._size = (cols, rows)
        if not self._resize_queued:  # a burst of changes is one resize, at most 20 a second
            self._resize_queued = True
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._last_resize + RESIZE_INTERVAL - loop.time())
            loop.call_later(delay, self._events.put_nowait, ("resize", None))

    def break_received(self, msec: int) -> bool:
        return False

    def signal_received(self, signal: str) -> None:
        log.debug("ignored signal %r from an SSH client", signal[:32])

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._events.put_nowait(("credit", None))

    def connection_lost(self, exc: Exception | None) -> None:
        self._events.put_nowait(("lost", exc))

    # -- the session's task ----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._serve()
        except Exception:
            log.exception("SSH session of %s failed", self.user.username)
            self._finish_with("helpline: internal error in the relay", EXIT_REFUSED)
            if self.session is not None and not self.session.ended:
                await self.broker.tech_closed(self.session)

    async def _serve(self) -> None:
        problem = self._unusable_request()
        user = await self.gateway.relay.store.get_user_by_id(self.user.id)
        if user is None or user.disabled:
            problem = "this account is no longer active"
        if problem:
            self._finish_with(f"helpline: {problem}", EXIT_REFUSED)
            return
        assert user is not None
        self.user = user
        params = {"pty": "1" if self.pty else "0"}
        if self.pty:
            params.update(term=self.term, cols=str(self.cols), rows=str(self.rows))
        if self.command:
            params["command"] = self.command
        session = await self.broker.request(
            user, self.device_key, "shell", "ssh gateway", params, self
        )
        if session is None:
            return  # refused: the client was told
        self.session = session
        held: list[tuple[str, Any]] = []
        while True:
            kind, value = await self._events.get()
            if kind == "lost":
                await self._client_gone(session, value)
                return
            if kind == "opened":
                self._opened = True
                await self.broker.tech_accepted(session)
                for item in held:
                    await self._forward(session, *item)
                held.clear()
            elif kind == "done":
                continue  # wait for the channel to close ("lost")
            elif self._opened:
                await self._forward(session, kind, value)
            elif kind != "credit":
                held.append((kind, value))

    def _unusable_request(self) -> str:
        if self.command is not None and len(self.command) > MAX_COMMAND:
            return f"the command is longer than {MAX_COMMAND} characters"
        if self.command is not None and "\x00" in self.command:
            return "the command holds a NUL character"
        return ""

    async def _forward(self, session: Session, kind: str, value: Any) -> None:
        if session.ended:
            return
        if kind == "data":
            await self.broker.tech_data(session, value)
        elif kind == "eof":
            await self.broker.tech_eof(session)
        elif kind == "resize":
            self._resize_queued = False
            self._last_resize = asyncio.get_running_loop().time()
            await self.broker.tech_resize(session, *self._size)
        elif kind == "credit":
            await self.broker.tech_credit(session)

    async def _client_gone(self, session: Session, exc: Exception | None) -> None:
        """The channel closed: after the device's exit, or because the client left."""
        if session.ended:
            return
        if self._device_exited:  # the device's close follows its exit status
            try:
                await asyncio.wait_for(self._ended.wait(), END_GRACE)
            except TimeoutError:
                await self.broker.tech_closed(session)
            return
        # A channel closed on a live connection is the technician ending the session;
        # a connection that dropped is a technician lost.
        await self.broker.tech_closed(session, lost=exc is not None or self._connection_gone())

    def _connection_gone(self) -> bool:
        if self.chan is None:
            return True
        conn = self.chan.get_extra_info("connection")
        return conn is None or conn not in self.gateway.connections

    # -- writing to the client ------------------------------------------------------------------

    def _writable(self) -> bool:
        return self.chan is not None and not self._over and not self.chan.is_closing()

    def _stderr(self, line: str) -> None:
        if self._writable():
            assert self.chan is not None
            ending = "\r\n" if self.pty else "\n"
            self.chan.write_stderr((line + ending).encode("utf-8", "replace"))

    def _finish_with(self, line: str, status: int) -> None:
        """A last line on stderr, then the exit status (which closes the channel)."""
        self._stderr(line)
        if self._writable():
            assert self.chan is not None
            self._over = True
            self.chan.exit(status)
        self._events.put_nowait(("done", None))

    # -- the broker's side (TechnicianLeg) -------------------------------------------------------

    def credit(self) -> int:
        if not self._opened or self._write_paused or not self._writable():
            return 0
        assert self.chan is not None
        return max(0, WRITE_HIGH + 1 - self.chan.get_write_buffer_size())

    async def waiting(self, session: Session) -> None:
        self.session = session
        if not self._decided:  # the agent may answer before the broker tells us it asked
            device = clean_line(session.device.name)
            self._stderr(f"helpline: waiting for the customer on {device} to accept...")

    async def refused(self, session: Session | None, state: str, code: int, message: str) -> None:
        self._decided = True
        what = "session denied" if code == ErrorCode.CONSENT_DENIED else "cannot open a session"
        self._finish_with(f"helpline: {what}: {clean_line(message)}", EXIT_REFUSED)

    async def opened(self, session: Session) -> None:
        self._decided = True
        self.session = session
        self._events.put_nowait(("opened", None))

    async def send(self, data: bytes) -> None:
        if self._writable():
            assert self.chan is not None
            self.chan.write(data)

    async def consumed(self, size: int) -> None:
        self._outstanding = max(0, self._outstanding - size)
        if self._read_paused and self._outstanding <= READ_LOW and self.chan is not None:
            self._read_paused = False
            self.chan.resume_reading()

    async def exit_status(self, code: int, signal: str) -> None:
        self._device_exited = True
        if not self._writable():
            return
        assert self.chan is not None
        self._over = True
        if signal:
            self.chan.exit_with_signal(signal.removeprefix("SIG")[:32])
        else:
            self.chan.exit(code)

    async def eof(self) -> None:
        if self._writable():
            assert self.chan is not None
            self.chan.write_eof()

    async def close(self, code: int, message: str) -> None:
        self._ended.set()
        self._finish_with(f"helpline: session ended: {clean_line(message)}", EXIT_NO_STATUS)
