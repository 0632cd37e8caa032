"""A command on a pseudo-terminal (or on pipes), owned by the agent for one shell session.

The child runs in its own session with the PTY as its controlling terminal, so
job control, ``SIGWINCH`` on resize and ``SIGHUP`` on hang-up behave as in any
terminal. Output is read from the PTY master without blocking the event loop;
input is written as the technician sends it, buffered only while the PTY is
full (the channel window bounds that buffer).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import pty
import pwd
import signal
import struct
import termios
from collections.abc import Mapping, Sequence

READ_SIZE = 64 * 1024
#: Reads queued before the terminal stops being read (the consumer is behind).
MAX_QUEUED_READS = 16


def login_shell() -> str:
    """The agent user's login shell, or /bin/sh."""
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        shell = ""
    return shell if shell and os.path.exists(shell) else "/bin/sh"


def session_environment(term: str, shell: str) -> dict[str, str]:
    """A clean login environment: nothing of the agent's own (tokens, paths) leaks."""
    try:
        entry = pwd.getpwuid(os.getuid())
        home, user = entry.pw_dir, entry.pw_name
    except KeyError:
        home, user = "/", "unknown"
    return {
        "HOME": home,
        "USER": user,
        "LOGNAME": user,
        "SHELL": shell,
        "TERM": term,
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }


def working_directory(home: str) -> str:
    return home if os.path.isdir(home) else "/"


def _set_controlling_terminal() -> None:  # runs in the child, after setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _winsize(cols: int, rows: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


class ShellProcess:
    def __init__(self, process: asyncio.subprocess.Process, master: int | None) -> None:
        self.process = process
        self._master = master
        self._loop = asyncio.get_running_loop()
        # Pipes block their reader on a full queue; the PTY reader pauses itself instead.
        self._output: asyncio.Queue[bytes] = asyncio.Queue(0 if master else MAX_QUEUED_READS)
        self._pending_input = bytearray()
        self._input_done: list[tuple[int, asyncio.Future[None]]] = []
        self._stdin_drain: asyncio.Future[None] | None = None
        self._eof_read = False
        self._reading = master is not None
        self._pipe_reader: asyncio.Task[None] | None = None
        if master is not None:
            os.set_blocking(master, False)
            self._loop.add_reader(master, self._on_readable)

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        cols: int = 80,
        rows: int = 24,
        use_pty: bool = True,
    ) -> ShellProcess:
        if not use_pty:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
            shell = cls(process, None)
            shell._pipe_reader = asyncio.create_task(shell._read_pipe())
            return shell
        master, slave = pty.openpty()
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, _winsize(cols, rows))
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_set_controlling_terminal,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return cls(process, master)

    # -- output ----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: every copy of the slave side is closed
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._eof_read = True
        self._output.put_nowait(data)
        if not data or self._output.qsize() >= MAX_QUEUED_READS:
            self._loop.remove_reader(self._master)
            self._reading = False

    async def _read_pipe(self) -> None:
        assert self.process.stdout is not None
        while True:
            data = await self.process.stdout.read(READ_SIZE)
            await self._output.put(data)
            if not data:
                return

    async def read(self) -> bytes:
        """The next output; ``b""`` once the terminal has no writer left."""
        data = await self._output.get()
        if (
            self._master is not None
            and not self._reading
            and not self._eof_read
            and self._output.qsize() < MAX_QUEUED_READS // 2
        ):
            self._loop.add_reader(self._master, self._on_readable)
            self._reading = True
        return data

    # -- input ------------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Write ``data``; returns once the terminal (or pipe) took all of it."""
        await self.feed(data)

    def feed(self, data: bytes) -> asyncio.Future[None]:
        """Queue ``data`` now, in call order, before any later input or end of input;
        the future resolves once the terminal (or pipe) took all of it."""
        if self._master is None:
            stdin = self.process.stdin
            if stdin is None or stdin.is_closing():
                return self._done()
            stdin.write(data)
            if self._stdin_drain is None or self._stdin_drain.done():
                self._stdin_drain = asyncio.ensure_future(self._drain_stdin(stdin))
            return self._stdin_drain
        if not self._pending_input:
            try:
                written = os.write(self._master, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return self._done()  # the terminal is gone; input is moot
            data = data[written:]
            if not data:
                return self._done()
            self._loop.add_writer(self._master, self._on_writable)
        self._pending_input += data
        done: asyncio.Future[None] = self._loop.create_future()
        self._input_done.append((len(self._pending_input), done))
        return done

    def _done(self) -> asyncio.Future[None]:
        done: asyncio.Future[None] = self._loop.create_future()
        done.set_result(None)
        return done

    @staticmethod
    async def _drain_stdin(stdin: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await stdin.drain()

    def _on_writable(self) -> None:
        assert self._master is not None
        try:
            written = os.write(self._master, self._pending_input)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._pending_input)
        del self._pending_input[:written]
        remaining = []
        for mark, future in self._input_done:
            mark -= written
            if mark <= 0:
                if not future.done():
                    future.set_result(None)
            else:
                remaining.append((mark, future))
        self._input_done = remaining
        if not self._pending_input:
            self._loop.remove_writer(self._master)

    def end_of_input(self) -> None:
        """No more input: close the pipe, or send the terminal's EOF character."""
        if self._master is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            return
        with contextlib.suppress(OSError):
            eof = termios.tcgetattr(self._master)[6][termios.VEOF]
            self.feed(eof if isinstance(eof, bytes) else bytes([eof]))  # after queued input

    def resize(self, cols: int, rows: int) -> None:
        if self._master is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, _winsize(cols, rows))

    # -- ending ------------------------------------------------------------------------------

    async def wait(self) -> tuple[int, str]:
        """Exit code (or -1) and the name of the killing signal, if any."""
        status = await self.process.wait()
        if status < 0:
            return -1, signal.Signals(-status).name
        return status, ""

    async def terminate(self, grace: float = 2.0) -> None:
        """Hang up the whole process group, then kill what is left after ``grace`` seconds."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGHUP)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        self.close()

    def close(self) -> None:
        if self._master is not None:
            self._loop.remove_reader(self._master)
            self._loop.remove_writer(self._master)
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None
            self._eof_read = True
        for _, future in self._input_done:
            if not future.done():
                future.set_result(None)
        self._input_done = []
