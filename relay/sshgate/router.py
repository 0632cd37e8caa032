"""Which kind of session an SSH ``session`` channel is: a shell or exec, or a file server.

A channel says what it is only with its ``shell``, ``exec`` or ``subsystem``
request. :class:`SessionRouter` is the channel's session object from the start;
until that request (``pty-req``...) it passes everything to the shell leg,
:class:`~relay.sshgate.session.SshSession`, as if file transfer did not exist.
The ``sftp`` subsystem and an exec of ``scp ...`` (the legacy protocol, ``scp
-O``) make it an asyncssh stream session serving
:class:`~relay.sshgate.sftp.GatewaySftpServer` instead (asyncssh's own
``sftp_factory`` and ``allow_scp``, per channel: given to ``listen`` they would
make asyncssh bypass ``session_requested`` for every channel). From then on
every callback goes to the one chosen.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.stream import SSHServerStreamSession

from .session import SshSession
from .sftp import GatewaySftpServer
from .sftp_files import DeviceFiles

if TYPE_CHECKING:
    from .server import SshGateway

__all__ = ["SessionRouter"]


def _receives_preserving(command: str) -> bool:
    """``scp -t -p ...``: legacy scp receiving files whose mode and times it keeps."""
    try:
        words = shlex.split(command)[1:-1]  # the options (the last word is the path)
    except ValueError:
        return False
    flags = "".join(w[1:] for w in words if w.startswith("-") and not w.startswith("--"))
    return "t" in flags and "p" in flags


class SessionRouter(asyncssh.SSHServerSession[bytes]):
    """One SSH ``session`` channel: a shell/exec leg, or the SFTP/SCP file server."""

    def __init__(self, gateway: SshGateway, shell: SshSession) -> None:
        self.gateway = gateway
        self.shell = shell
        self.user = shell.user
        self.device_key = shell.device_key
        self.target: asyncssh.SSHServerSession[bytes] = self.shell
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.files: DeviceFiles | None = None
        self._scp_preserve = False
        self._last_line = ""

    # -- choosing --------------------------------------------------------------------------------

    def _serve_files(self, scp_preserve: bool = False) -> None:
        self._scp_preserve = scp_preserve
        stream: SSHServerStreamSession[bytes] = SSHServerStreamSession(
            None, self._sftp_server, asyncssh.sftp.MIN_SFTP_VERSION, allow_scp=True
        )
        assert self.chan is not None
        stream.connection_made(self.chan)
        self.target = stream

    def _sftp_server(self, chan: SSHChannel[bytes]) -> GatewaySftpServer:
        self.files = DeviceFiles(
            self.gateway,
            self.user,
            self.device_key,
            notify=self._notify,
            close_channel=self._close_channel,
        )
        assert isinstance(chan, asyncssh.SSHServerChannel)
        return GatewaySftpServer(chan, self.files, scp_preserve=self._scp_preserve)

    def _notify(self, line: str) -> None:
        """A line on the channel's stderr (not twice in a row: a client that probes a path
        with stat before it opens it would see each refusal twice)."""
        chan = self.chan
        if chan is not None and not chan.is_closing() and line != self._last_line:
            self._last_line = line
            chan.write_stderr((line + "\n").encode("utf-8", "replace"))

    def _close_channel(self, status: int) -> None:
        chan = self.chan
        if chan is not None and not chan.is_closing():
            chan.exit(status)

    def exec_requested(self, command: str) -> bool:
        if command.startswith("scp "):
            self._serve_files(scp_preserve=_receives_preserving(command))
        return self.target.exec_requested(command)

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem == "sftp":
            self._serve_files()
        return self.target.subsystem_requested(subsystem)

    def shell_requested(self) -> bool:
        return self.target.shell_requested()

    # -- everything else goes to the chosen one ------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan
        self.shell.connection_made(chan)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any
    ) -> bool:
        return self.target.pty_requested(term_type, term_size, term_modes)

    def session_started(self) -> None:
        self.target.session_started()

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.target.data_received(data, datatype)

    def eof_received(self) -> bool:
        if self.files is not None:
            self.files.leaving = True
        return bool(self.target.eof_received())

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.target.terminal_size_changed(width, height, pixwidth, pixheight)

    def break_received(self, msec: int) -> bool:
        return self.target.break_received(msec)

    def signal_received(self, signal: str) -> None:
        self.target.signal_received(signal)

    def soft_eof_received(self) -> None:
        self.target.soft_eof_received()

    def pause_writing(self) -> None:
        self.target.pause_writing()

    def resume_writing(self) -> None:
        self.target.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        files = self.files
        if files is not None:
            files.leaving = True
            files.lost = exc is not None or not self._connection_alive()
            self.gateway.spawn(files.finish(), "end a files session")
        self.target.connection_lost(exc)

    def _connection_alive(self) -> bool:
        if self.chan is None:
            return False
        conn = self.chan.get_extra_info("connection")
        return conn is not None and conn in self.gateway.connections
