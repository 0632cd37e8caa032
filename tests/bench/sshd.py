"""The OpenSSH reference for the session benchmarks: a throw-away ``sshd`` on loopback.

:class:`ReferenceSshd` starts Debian's ``/usr/sbin/sshd`` (package ``openssh-server``)
in the foreground (``-D -e``) with its own ``sshd_config`` in a temporary directory: a
fresh Ed25519 host key and user key, public-key authentication only, no PAM, listening
on a free port of 127.0.0.1. The client side gets its own ``ssh_config`` (passed with
``-F``, which ``ssh -J`` hands on to the jump connection) that pins the host key.

:meth:`ReferenceSshd.command` builds ``ssh -J USER@127.0.0.1:PORT -p PORT USER@127.0.0.2``:
the client goes through the same sshd twice (a ``direct-tcpip`` forward, then the
session), as a technician's traffic goes console -> relay -> device. (The second hop
names 127.0.0.2, where the same sshd also listens: ssh refuses a jump to the very
host, port and user it jumps through.)
:class:`SshEcho` runs that on a local pseudo-terminal with a remote ``cat`` in raw mode
and times one byte's round trip, the same measurement the Helpline side makes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import getpass
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import IO

import psutil

from .idle_agents import BenchError, free_port

SSHD = Path("/usr/sbin/sshd")
SSH = shutil.which("ssh") or "/usr/bin/ssh"
HOST = "127.0.0.1"
#: The "device" address: ssh refuses a jump whose host, port and user equal the
#: target's ("jumphost loop"), so the second hop goes to the same sshd on another
#: loopback address.
TARGET = "127.0.0.2"
#: The remote side of the echo: raw terminal (one echo per byte, by cat alone),
#: then a marker so the caller knows the terminal is ready.
ECHO_COMMAND = "stty raw -echo; printf R; exec cat"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # in the child, between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _obscures_keystrokes() -> bool:
    """Whether this ssh pads keystrokes into 20 ms ticks (OpenSSH 9.5+, on by default).

    The reference measures ssh's data path, as Helpline's is measured: that padding is
    turned off where the client has it (Debian 12's 9.2 does not)."""
    result = subprocess.run(
        [SSH, "-G", "-F", "/dev/null", HOST], capture_output=True, text=True, timeout=30
    )
    return "obscurekeystroketiming" in result.stdout.lower()


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "helpline-bench", "-f", path],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return path.with_suffix(".pub").read_text().strip()


class ReferenceSshd:
    """One ``sshd -D -e -f CONFIG`` on a free loopback port, and the matching client config."""

    def __init__(self, directory: Path) -> None:
        if not SSHD.exists():
            raise BenchError(
                f"{SSHD} is missing: install Debian's openssh-server"
                " (apt-get install openssh-server) for the OpenSSH reference"
            )
        self.directory = directory
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.port = free_port()
        self.log_path = directory / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None
        host_key = directory / "host_ed25519"
        user_key = directory / "user_ed25519"
        host_public = _keygen(host_key)
        (directory / "authorized_keys").write_text(_keygen(user_key) + "\n")
        self.sshd_config = directory / "sshd_config"
        self.sshd_config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {HOST}\n"
            f"ListenAddress {TARGET}\n"
            f"HostKey {host_key}\n"
            "PidFile none\n"
            f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
            "AuthenticationMethods publickey\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PermitRootLogin prohibit-password\n"
            "AllowTcpForwarding yes\n"
            "PermitTTY yes\n"
            "PrintMotd no\n"
            "PrintLastLog no\n"
            "UseDNS no\n"
            "MaxStartups 64\n"
            "LogLevel ERROR\n"
        )
        self.ssh_config = directory / "ssh_config"
        known_hosts = directory / "known_hosts"
        known_hosts.write_text(
            f"[{HOST}]:{self.port} {host_public}\n[{TARGET}]:{self.port} {host_public}\n"
        )
        self.ssh_config.write_text(
            "Host *\n"
            f"  User {self.user}\n"
            f"  IdentityFile {user_key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  UpdateHostKeys no\n"
            "  BatchMode yes\n"
            "  ControlMaster no\n"
            "  ControlPath none\n"
            "  ConnectTimeout 10\n"
            "  LogLevel ERROR\n"
            + ("  ObscureKeystrokeTiming no\n" if _obscures_keystrokes() else "")
        )

    def start(self) -> None:
        if os.geteuid() == 0:
            # sshd's privilege separation directory; the package's init script makes it.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run(
            [SSHD, "-t", "-f", self.sshd_config], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise BenchError(f"sshd refused its configuration: {check.stderr.strip()}")
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", self.sshd_config],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"sshd exited at start: {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.5):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"sshd did not listen on {HOST}:{self.port}: {self.log_tail()}")
            time.sleep(0.05)
        # One real login through the jump, so a broken setup fails here, clearly.
        result = self.run("true", timeout=30)
        if result.returncode != 0:
            raise BenchError(
                f"ssh -J through the reference sshd failed: {result.stderr.decode().strip()}"
                f"\n{self.log_tail()}"
            )

    def command(self, remote: str, *, tty: bool = False) -> list[str]:
        """``ssh -J USER@127.0.0.1:PORT -p PORT USER@127.0.0.2 REMOTE``: through this sshd
        to itself."""
        return [
            SSH, "-F", str(self.ssh_config), *(["-tt"] if tty else ["-T"]),
            "-J", f"{self.user}@{HOST}:{self.port}", "-p", str(self.port),
            f"{self.user}@{TARGET}", remote,
        ]  # fmt: skip

    def run(
        self,
        remote: str,
        *,
        timeout: float,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = subprocess.PIPE,
    ) -> subprocess.CompletedProcess[bytes]:
        """``remote`` through the jump, stderr captured; bounded by ``timeout``."""
        return subprocess.run(
            self.command(remote), stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
            timeout=timeout, check=False,
        )  # fmt: skip

    def log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            children = []
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for child in children:  # per-connection sshd processes of this sshd only
            with contextlib.suppress(psutil.Error):
                child.kill()
        self.process = None


class SshEcho:
    """``ssh -tt -J ... 'stty raw -echo; cat'`` on a local pseudo-terminal.

    The ssh client sees a real terminal (it puts it in raw mode, as for a person);
    one byte written to the terminal's master side travels client -> sshd (jump) ->
    sshd (session) -> the remote pty -> ``cat`` and back the same way.
    """

    def __init__(self, sshd: ReferenceSshd) -> None:
        self.master, slave = pty.openpty()
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            self.process = subprocess.Popen(
                sshd.command(ECHO_COMMAND, tty=True),
                stdin=slave, stdout=slave, stderr=slave,
                start_new_session=True, preexec_fn=_controlling_terminal,
            )  # fmt: skip
        except BaseException:
            os.close(self.master)
            raise
        finally:
            os.close(slave)
        self.seen = bytearray()
        try:
            self._read_until(b"R", 30.0)
        except BaseException:
            self.close()
            raise

    def _read_until(self, needle: bytes, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while needle not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise BenchError(f"ssh echo session did not start: {bytes(self.seen[-500:])!r}")
            if select.select([self.master], [], [], left)[0]:
                self.seen += self._read()

    def _read(self) -> bytes:
        try:
            data = os.read(self.master, 4096)
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            raise BenchError("the ssh client's terminal closed")
        return data

    def round_trip(self, byte: bytes = b"x", timeout: float = 5.0) -> float:
        """Seconds from writing one byte to reading its echo."""
        start = time.perf_counter()
        os.write(self.master, byte)
        got = b""
        while len(got) < len(byte):
            if not select.select([self.master], [], [], timeout)[0]:
                raise BenchError(f"no echo through ssh within {timeout} s")
            got += self._read()
        elapsed = time.perf_counter() - start
        if got != byte:
            raise BenchError(f"ssh echoed {got!r}, not {byte!r}")
        return elapsed

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)  # the group this ssh leads
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        with contextlib.suppress(OSError):
            os.close(self.master)


def _controlling_terminal() -> None:  # in the child, after setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    _die_with_parent()
