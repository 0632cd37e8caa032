"""Transfers through the SFTP/SCP gateway, as their spool files hold them.

* :class:`Download`: a file pulled from the device into a spool, readable by
  the client as it arrives; the end of the file only once the device's size
  and SHA-256 matched what arrived.
* :class:`Upload`: the bytes a client writes, in a spool, until the file is
  closed and pushed.

:class:`~relay.sshgate.sftp_files.DeviceFiles` moves their bytes;
:mod:`relay.sshgate.sftp` serves them to the client.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque

from protocol.errors import ErrorCode

from .spool import SpoolFile, check_room

__all__ = ["STALL_TIMEOUT", "WRITE_BATCH", "Download", "FilesError", "Upload"]

#: Received bytes written to a spool per step (and how often an upload checks for room).
WRITE_BATCH = 1024 * 1024
#: Seconds a transfer may go without any progress.
STALL_TIMEOUT = 120.0


class FilesError(Exception):
    """An operation failed. ``code`` is a :class:`~protocol.errors.ErrorCode`; ``message`` is
    safe to show. ``session`` marks failures of the session itself (refused, ended)."""

    def __init__(self, code: int, message: str, *, session: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.session = session


class Download:
    """A file pulled from the device into a spool, readable as it arrives.

    ``arrived`` bytes are on disk; the whole file counts only once ``verified``
    (size and SHA-256 match the device's :class:`FileDone`). ``error`` says why
    it will never be.
    """

    def __init__(self, spool: SpoolFile, path: str) -> None:
        self.spool = spool
        self.path = path
        #: The spool is this download's own (not an upload's being filled).
        self.owns_spool = True
        self.size = 0
        self.mode = 0
        self.mtime_ns = 0
        self.arrived = 0
        self.verified = False
        self.error: str | None = None
        #: Nobody reads it any more: what still comes is dropped, the spool is gone.
        self.abandoned = False
        self.hasher = hashlib.sha256()
        self.chunks: deque[bytes] = deque()
        self.pending = 0  # bytes in ``chunks``
        self._progress = asyncio.Event()

    @property
    def over(self) -> bool:
        return self.verified or self.error is not None

    def feed(self, data: bytes) -> None:
        self.chunks.append(data)
        self.pending += len(data)

    def take(self) -> list[bytes]:
        batch: list[bytes] = []
        total = 0
        while self.chunks and total < WRITE_BATCH:
            chunk = self.chunks.popleft()
            batch.append(chunk)
            total += len(chunk)
        self.pending -= total
        return batch

    def changed(self) -> None:
        self._progress.set()

    def fail(self, reason: str) -> None:
        if not self.over:
            self.error = reason
        self.changed()

    async def wait_for(self, end: int) -> None:
        """Until bytes up to ``end`` are readable (the end of the file: once verified).

        Raises :class:`FilesError` when the download failed or stalls.
        """
        while True:
            if self.error is not None:
                raise FilesError(ErrorCode.INTERNAL, self.error)
            if self.verified or (end < self.size and self.arrived >= end):
                return
            self._progress.clear()
            try:
                async with asyncio.timeout(STALL_TIMEOUT):
                    await self._progress.wait()
            except TimeoutError:
                self.fail(f"{self.path}: the transfer stalled")

    async def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the end of the file, none past it)."""
        await self.wait_for(offset + size)
        if offset >= self.size:
            return b""
        return await self.spool.read(offset, min(size, self.size - offset))


class Upload:
    """A file the client writes: its bytes in a spool, what to push when it is closed."""

    def __init__(self, spool: SpoolFile, path: str, mode: int, mtime_ns: int) -> None:
        self.spool = spool
        self.path = path
        self.mode = mode
        self.mtime_ns = mtime_ns
        self._room_checked = 0  # spool size at the last check of the disk's free space

    @property
    def size(self) -> int:
        return self.spool.size

    async def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if end - self._room_checked > WRITE_BATCH * 16:  # every 16 MiB of growth
            await asyncio.to_thread(check_room, self.spool.path.parent, end - self.spool.size)
            self._room_checked = end
        await self.spool.write(offset, data)
