"""Running a package's install command: its own process group, a timeout, the log's tail.

The command is the argv list from the signed manifest (no shell in between), run in the
directory the payload was unpacked to. Its stdout and stderr go to one log file in the
update's temporary directory; the result carries the last ``TAIL`` characters of it. Past
the timeout the whole process group is killed (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

#: How much of the install log travels back with the result (the protocol's bound).
TAIL = 4000
#: After SIGTERM, how long the command gets before SIGKILL.
KILL_GRACE = 3.0


@dataclass(frozen=True, slots=True)
class InstallRun:
    exit_code: int  # -1: killed or never started
    timed_out: bool
    log_tail: str
    error: str = ""  # why it could not start


def log_tail(path: Path, size: int = TAIL) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            end = log.tell()
            log.seek(max(0, end - size * 4))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return text[-size:]


async def run_install(
    argv: tuple[str, ...], cwd: Path, env: dict[str, str], seconds: float, log_path: Path
) -> InstallRun:
    with open(log_path, "wb") as log:  # noqa: ASYNC230 - creating an empty log file
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return InstallRun(-1, False, "", f"the install command could not start: {exc}")
        try:
            try:
                async with asyncio.timeout(seconds):
                    code = await process.wait()
            except TimeoutError:
                await _kill_group(process)
                return InstallRun(-1, True, log_tail(log_path))
        except asyncio.CancelledError:
            await _kill_group(process)
            raise
    return InstallRun(code if 0 <= code <= 255 else -1, False, log_tail(log_path))


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    for signum, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            async with asyncio.timeout(wait):
                await process.wait()
            return
        except TimeoutError:
            continue
