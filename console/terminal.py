"""``helpline shell``: the local terminal bridged to a remote shell session.

Interactive use puts the local terminal in raw mode (every key goes to the
remote shell, Ctrl-C included), follows its size (``SIGWINCH``) and restores
it on every way out: normal end, error, signal. With a command, input comes
from stdin (end of input is passed on) and the exit status is the command's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import shutil
import signal
import sys
import termios
import tty
from collections.abc import Iterator

from .sessions import SessionChannel

#: Exit status when the session ended without a command exit status (like ssh's 255).
NO_EXIT_STATUS = 255
#: Signals that end ``helpline shell`` the orderly way (terminal restored, session ended).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode for ``fd`` while inside; the previous mode is restored however we leave."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        with contextlib.suppress(termios.error):  # a hung-up terminal has no mode left
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def terminal_size() -> tuple[int, int]:
    """The size of the terminal we run on, as the terminal says (``TIOCGWINSZ``), like ssh.

    ``COLUMNS``/``LINES`` from the environment are only the fallback: they are stale
    after a resize and often inherited from another terminal.
    """
    for stream in (sys.stdout, sys.stdin, sys.stderr):
        try:
            size = os.get_terminal_size(stream.fileno())
        except (OSError, ValueError, AttributeError):
            continue
        if size.columns and size.lines:
            return size.columns, size.lines
    fallback = shutil.get_terminal_size((80, 24))
    return fallback.columns, fallback.lines


async def _copy_input(channel: SessionChannel, fd: int) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    if not _pollable(fd):
        # A regular file or /dev/null: the event loop cannot watch it, and reading it
        # never waits for long, so a thread reads it.
        while True:
            try:
                data = await asyncio.to_thread(os.read, fd, 65536)
            except OSError:  # e.g. stdin closed (<&-): no input at all
                data = b""
            if not data:
                await channel.send_eof()
                return
            await channel.write(data)

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
        queue.put_nowait(data)

    loop.add_reader(fd, readable)
    try:
        while True:
            data = await queue.get()
            if not data:
                await channel.send_eof()
                return
            await channel.write(data)
    finally:
        loop.remove_reader(fd)


def _pollable(fd: int) -> bool:
    """Whether epoll/select can watch ``fd`` (not so for regular files and /dev/null)."""
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
    except (OSError, ValueError):
        return False
    return True


async def _copy_output(channel: SessionChannel, fd: int) -> None:
    while True:
        data = await channel.read()
        if not data:
            return
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                await asyncio.sleep(0.005)
                continue
            view = view[written:]


async def run_shell(channel: SessionChannel, *, interactive: bool) -> int:
    """Bridge stdin/stdout to ``channel`` until the session ends; return the exit status."""
    loop = asyncio.get_running_loop()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout.flush()
    output = asyncio.create_task(_copy_output(channel, stdout))
    input_task = asyncio.create_task(_copy_input(channel, stdin))
    resize_installed = False
    resizing: set[asyncio.Task[None]] = set()
    if interactive and os.isatty(stdout):

        def on_resize() -> None:
            cols, rows = terminal_size()
            task = asyncio.ensure_future(channel.resize(cols, rows))
            resizing.add(task)
            task.add_done_callback(resizing.discard)

        loop.add_signal_handler(signal.SIGWINCH, on_resize)
        resize_installed = True
    # Terminated (kill, the window closing): leave through the same door as the end of the
    # session, so the terminal is restored and the session is ended, not dropped.
    stopped_by: list[int] = []

    def on_stop(signum: int) -> None:
        if not stopped_by:
            stopped_by.append(signum)
            output.cancel()

    # (not those the caller chose to ignore, as ``nohup`` does SIGHUP)
    stop_signals = [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
    for signum in stop_signals:
        loop.add_signal_handler(signum, on_stop, signum)
    try:
        with raw_terminal(stdin) if interactive and os.isatty(stdin) else contextlib.nullcontext():
            try:
                await output
            except asyncio.CancelledError:
                if not stopped_by or not output.cancelled():
                    raise
    finally:
        for signum in stop_signals:
            loop.remove_signal_handler(signum)
        input_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await input_task
        if resize_installed:
            loop.remove_signal_handler(signal.SIGWINCH)
    if stopped_by:
        await channel.close()
        return 128 + stopped_by[0]
    closed = await channel.wait_closed()
    if channel.exit_status is not None:
        code, signal_name = channel.exit_status
        return 128 + getattr(signal.Signals, signal_name, signal.SIGTERM) if signal_name else code
    print(f"\r\nhelpline: session ended: {closed.message or 'closed'}", file=sys.stderr)
    return NO_EXIT_STATUS
