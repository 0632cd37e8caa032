"""Helpers for the shell-session tests: technicians with a logged-in CLI, reading a
session's output up to a marker, programs run on a real pseudo-terminal (the
interactive ``helpline shell``, ``asciinema cat``), an agent with nobody at it,
audit look-ups by session, and the remote processes still alive."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from console.client import HelplineClient
from console.sessions import SessionChannel
from protocol import Event
from protocol.messages import Message

from .conftest import BIN, AgentProcess, RelayProcess, async_wait_for, enroll_agent, totp_now
from .helpers import NewUser, RawLink, cli_login, new_user

#: Bounds for waiting on output and processes (seconds). Never assertions on time.
WITHIN = 20.0


# -- people and devices -----------------------------------------------------------------------


async def wait_online(client: HelplineClient, *names: str) -> None:
    async def online() -> bool:
        return set(names) <= {d["name"] for d in await client.devices() if d["online"]}

    await async_wait_for(online, what=f"{names} online")


async def staff(admin: HelplineClient, username: str, role: str = "technician") -> NewUser:
    """A new account without a second factor: these tests log the same person in more
    than once within one TOTP step, and a code works only once."""
    return await new_user(
        admin, username, role=role, full_name=f"{username.title()} Doe", totp_required=False
    )


async def technician(
    admin: HelplineClient, username: str, *, group: str | None = "default"
) -> NewUser:
    """A new technician, granted ``group`` (None: no grant at all)."""
    user = await staff(admin, username)
    if group is not None:
        await admin.add_grant(username, group)
    return user


def cli_as(relay: RelayProcess, config: Path, user: NewUser) -> Path:
    """``helpline login`` as ``user`` into ``config`` (a fresh HELPLINE_CONFIG dir)."""
    cli_login(relay, config, user.username, user.password, user.code())
    return config


def cli_as_admin(relay: RelayProcess, config: Path) -> Path:
    """The first admin's CLI. The ``admin_client`` fixture used this step's code: take the
    next step's (one step of drift is accepted), as someone typing a fresh code would."""
    admin = relay.admin
    otp = totp_now(admin["totp_secret"], step_offset=1)
    cli_login(relay, config, admin["username"], admin["password"], otp)
    return config


@contextlib.contextmanager
def headless_agent(
    relay: RelayProcess, directory: Path, name: str, consent: dict[str, str]
) -> Iterator[AgentProcess]:
    """An agent with nobody at the machine: no DISPLAY/WAYLAND_DISPLAY, stdin not a tty."""
    agent = enroll_agent(relay, directory, name, consent=consent)
    env = {
        k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY")
    }
    with agent.log_path.open("ab") as log:
        agent.process = subprocess.Popen(
            [BIN / "helpline-agent", "-v", "run", "--config", agent.config_dir],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield agent
    finally:
        agent.stop()


# -- session output -----------------------------------------------------------------------------


async def read_until(
    channel: SessionChannel,
    needle: bytes,
    *,
    seconds: float = WITHIN,
    seen: bytearray | None = None,
) -> bytes:
    """Read ``channel`` until ``needle`` appears; everything read so far (and in ``seen``)."""
    buffer = bytearray() if seen is None else seen
    try:
        async with asyncio.timeout(seconds):
            while needle not in buffer:
                data = await channel.read()
                if not data:
                    break
                buffer += data
    except TimeoutError:
        pass
    assert needle in buffer, f"{needle!r} not in the session's output: {bytes(buffer[-2000:])!r}"
    return bytes(buffer)


async def read_to_end(channel: SessionChannel, *, seconds: float = WITHIN) -> bytes:
    """All output until the session closes."""
    buffer = bytearray()
    async with asyncio.timeout(seconds):
        while data := await channel.read():
            buffer += data
    return bytes(buffer)


def marker_command(name: str, expression: str) -> bytes:
    """A shell line printing ``<name[value]>``: its echo holds no ``<name[`` so the
    output is told apart from the terminal echoing what was typed."""
    return f"printf '<%s[%s]>\\n' {name} \"{expression}\"\r".encode()


def marker(name: str, value: str) -> bytes:
    return f"<{name}[{value}]>".encode()


# -- a console spoken by hand ----------------------------------------------------------------


class RawConsole:
    """A console WebSocket driven event by event with a real protocol Connection, so a test
    chooses when to accept a channel (the library accepts at once)."""

    def __init__(self, link: RawLink) -> None:
        self.link = link
        self.pending: deque[Event] = deque()
        self.seen: list[Event] = []  # every event, in order

    async def flush(self) -> None:
        for frame in self.link.conn.data_to_send():
            await self.link.ws.send_bytes(frame)

    async def send(self, message: Message) -> None:
        self.link.conn.send(message)
        await self.flush()

    async def next_event(self, within: float = WITHIN) -> Event:
        while not self.pending:
            received = await self.link.ws.receive(timeout=within)
            if received.type is aiohttp.WSMsgType.BINARY:
                self.link.conn.receive_data(received.data)
            else:
                self.link.conn.receive_eof()
            events = self.link.conn.events_received()
            self.pending.extend(events)
            self.seen.extend(events)
            await self.flush()
        return self.pending.popleft()

    async def expect(self, wanted: Callable[[Event], bool], within: float = WITHIN) -> Event:
        """The next event ``wanted`` accepts; others before it are dropped."""
        async with asyncio.timeout(within):
            while not wanted(event := await self.next_event()):
                pass
        return event


# -- audit --------------------------------------------------------------------------------------


async def session_entries(
    client: HelplineClient, session_id: str, action: str | None = None
) -> list[dict[str, Any]]:
    page = await client.audit(limit=5000, action=action)
    return [e for e in page["entries"] if e["details"].get("session") == session_id]


async def session_end(client: HelplineClient, session_id: str) -> dict[str, Any]:
    """The session.end audit entry of ``session_id``, waiting (bounded) for it."""

    async def found() -> dict[str, Any] | None:
        entries = await session_entries(client, session_id, "session.end")
        return entries[0] if entries else None

    entry: dict[str, Any] = await async_wait_for(found, what=f"session.end of {session_id}")
    return entry


async def session_record(client: HelplineClient, session_id: str) -> dict[str, Any]:
    records = [s for s in await client.sessions(limit=1000) if s["id"] == session_id]
    assert len(records) == 1, f"session {session_id} listed {len(records)} times"
    return records[0]


async def ended_record(client: HelplineClient, session_id: str) -> dict[str, Any]:
    """The session's row once it has ended (bounded wait)."""

    async def ended() -> dict[str, Any] | None:
        record = await session_record(client, session_id)
        return None if record["live"] or record["ended_at"] is None else record

    record: dict[str, Any] = await async_wait_for(ended, what=f"session {session_id} ended")
    return record


# -- processes ----------------------------------------------------------------------------------


def agent_sessions(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``helpline-agent sessions ARGS --config DIR``: the customer's side."""
    return subprocess.run(
        [BIN / "helpline-agent", "sessions", *args, "--config", agent.config_dir],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def run_cli_with_stdin(
    config: Path, stdin: Path | str, *args: str
) -> subprocess.CompletedProcess[bytes]:
    """``helpline ARGS`` with stdin opened from a file (e.g. /dev/null), not a pipe."""
    with open(stdin, "rb") as source:
        return subprocess.run(
            [BIN / "helpline", *args],
            stdin=source,
            capture_output=True,
            env=helpline_env(config),
            check=False,
            timeout=60,
        )


def spawn_cli(config: Path, *args: str) -> subprocess.Popen[bytes]:
    """``helpline ARGS`` in the background, stdin a pipe kept open, output discarded."""
    return subprocess.Popen(
        [BIN / "helpline", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=helpline_env(config),
    )


def pgrep(pattern: str) -> list[int]:
    result = subprocess.run(
        ["pgrep", "-f", pattern], capture_output=True, text=True, check=False, timeout=10
    )
    return [int(pid) for pid in result.stdout.split()]


# -- programs on a pseudo-terminal ------------------------------------------------------------


def _winsize(cols: int, rows: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


def _controlling_terminal() -> None:  # in the child, after setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@dataclass
class PtyProcess:
    """A program whose stdin (and controlling terminal) is a fresh pseudo-terminal.

    ``stdout``/``stderr`` go to the terminal too unless ``capture_stdout`` is set,
    then stdout is a pipe (byte-exact, no line discipline in the way).
    """

    process: subprocess.Popen[bytes]
    master: int
    slave: int
    output: bytearray

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str | Path],
        *,
        env: dict[str, str] | None = None,
        cols: int = 80,
        rows: int = 24,
        capture_stdout: bool = False,
    ) -> PtyProcess:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, _winsize(cols, rows))
        os.set_blocking(master, False)
        process = subprocess.Popen(
            [str(a) for a in argv],
            stdin=slave,
            stdout=subprocess.PIPE if capture_stdout else slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=_controlling_terminal,
        )
        return cls(process, master, slave, bytearray())

    def attributes(self) -> list[Any]:
        return termios.tcgetattr(self.slave)

    def is_raw(self) -> bool:
        return not self.attributes()[3] & (termios.ICANON | termios.ECHO)

    def wait_raw(self, seconds: float = WITHIN) -> None:
        """Until the program has put its terminal in raw mode (bounded)."""
        deadline = time.monotonic() + seconds
        while not self.is_raw() and time.monotonic() < deadline:
            self._pump(0.05)
        assert self.is_raw(), f"never went raw; terminal: {bytes(self.output)!r}"

    def read_marker(self, name: str, *, seconds: float = WITHIN) -> str:
        """The value of the first ``<name[value]>`` printed (see :func:`marker_command`)."""
        pattern = re.compile(rb"<" + re.escape(name.encode()) + rb"\[([^\]]*)\]>")
        deadline = time.monotonic() + seconds
        while not pattern.search(self.output) and time.monotonic() < deadline:
            self._pump(0.05)
        found = pattern.search(self.output)
        assert found, f"no <{name}[...]> on the terminal: {bytes(self.output)!r}"
        return found.group(1).decode()

    def _pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            with contextlib.suppress(BlockingIOError, OSError):
                self.output += os.read(self.master, 65536)

    def read_until(self, needle: bytes, *, seconds: float = WITHIN) -> bytes:
        deadline = time.monotonic() + seconds
        while needle not in self.output and time.monotonic() < deadline:
            self._pump(0.05)
        assert needle in self.output, f"{needle!r} not on the terminal: {bytes(self.output)!r}"
        return bytes(self.output)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                select.select([], [self.master], [], 0.05)

    def resize(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, _winsize(cols, rows))
        self.process.send_signal(signal.SIGWINCH)

    def wait(self, seconds: float = WITHIN) -> int:
        """Exit status, draining the terminal meanwhile (a full pty would block it)."""
        deadline = time.monotonic() + seconds
        while self.process.poll() is None and time.monotonic() < deadline:
            self._pump(0.05)
        self._pump(0)
        assert self.process.poll() is not None, f"still running; terminal: {bytes(self.output)!r}"
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def on_pty(argv: Sequence[str | Path], **kwargs: Any) -> Iterator[PtyProcess]:
    terminal = PtyProcess.spawn(argv, **kwargs)
    try:
        yield terminal
    finally:
        terminal.close()


def helpline_env(config: Path) -> dict[str, str]:
    return {**os.environ, "HELPLINE_CONFIG": str(config), "TERM": "xterm-256color"}


def asciinema_cat(path: Path) -> str:
    """``asciinema cat FILE`` (it opens /dev/tty, so it gets a terminal of its own)."""
    if shutil.which("asciinema") is None:
        pytest.fail("the real asciinema is needed: apt-get install asciinema (Debian)")
    with on_pty(["asciinema", "cat", path], capture_stdout=True) as terminal:
        out, _ = terminal.process.communicate(timeout=WITHIN)
        status = terminal.wait()
    errors = terminal.output.decode(errors="replace")
    assert status == 0, f"asciinema cat failed ({status}): {errors}"
    return out.decode("utf-8", errors="replace")


def cast_lines(path: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    """A .cast file's header and events."""
    header, *events = path.read_text().splitlines()
    return json.loads(header), [json.loads(line) for line in events]
