"""Files the SFTP/SCP gateway keeps on the relay's disk while a transfer passes through.

SFTP lets a client read and write any range of a file in any order, while a
``files`` channel moves whole files front to back. The gateway bridges the two
with one spool file per open file, under ``DATA/spool/``:

* a download is pulled from the device into its spool as fast as the channel
  allows, and the client's reads are served from it;
* an upload's writes land in its spool, which is pushed to the device when
  the client closes the file.

Memory stays bounded (bytes wait on disk, not in RAM). Each spool file is
created 0600 in a 0700 directory, belongs to one open file of one SSH
channel, and is deleted when that file is closed, when the channel ends
(however it ends), and, for leftovers of a relay that died, when the gateway
starts (:func:`purge`). Every blocking call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["PREFIX", "SPOOL_DIR", "SpoolFile", "SpoolFull", "check_room", "purge", "spool_dir"]

log = logging.getLogger("helpline.sshgate")

#: The spool's directory under the relay's data directory.
SPOOL_DIR = "spool"
#: The name every gateway spool file starts with.
PREFIX = "sftp-"
#: Free space on the spool's file system that the gateway never takes (bytes).
RESERVE = 256 * 1024 * 1024
#: Bytes read per step when hashing a spool file.
HASH_STEP = 1024 * 1024

#: A running SHA-256 (``hashlib`` has no public class name for it).
Hasher = Any
T = TypeVar("T")


class SpoolFull(Exception):
    """Holding this file would leave the relay's disk short of its reserve."""

    def __init__(self) -> None:
        super().__init__("the relay has no room to hold this file")


def spool_dir(data_dir: Path) -> Path:
    return data_dir / SPOOL_DIR


def check_room(directory: Path, more: int) -> None:
    """Raise :class:`SpoolFull` unless ``more`` bytes fit beside the reserve."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.statvfs(directory)
    if info.f_bavail * info.f_frsize - max(0, more) < RESERVE:
        raise SpoolFull


def purge(data_dir: Path) -> int:
    """Delete the spool files a previous run left behind (the gateway is not serving yet)."""
    directory = spool_dir(data_dir)
    removed = 0
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(PREFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / name)
                removed += 1
    if removed:
        log.info("removed %d spool file(s) left by a previous run", removed)
    return removed


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        offset += written
        view = view[written:]


def _close_created(future: asyncio.Future[SpoolFile]) -> None:
    """A spool file made for a caller that stopped waiting: delete it."""
    if not future.cancelled() and future.exception() is None:
        future.result().close()


class SpoolFile:
    """One 0600 file under ``DATA/spool/``; :meth:`close` deletes it (idempotent).

    Reads and writes run in worker threads; the descriptor is closed only once
    none of them uses it any more (a number reused meanwhile would point at
    another file), even when the coroutine that started one was cancelled.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        self.closed = False
        #: The highest offset written so far (the file's size).
        self.size = 0
        self._busy = 0  # calls running in worker threads
        self._released = False

    @classmethod
    async def create(cls, directory: Path) -> SpoolFile:
        def make() -> SpoolFile:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=PREFIX, dir=directory)  # 0600, O_EXCL
            return cls(fd, Path(name))

        future = asyncio.ensure_future(asyncio.to_thread(make))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_close_created)
            raise

    def __repr__(self) -> str:
        return f"SpoolFile({self.path.name!r}, {self.size} bytes)"

    async def _run(self, function: Callable[[], T]) -> T:
        if self.closed:
            raise ValueError("the spool file is closed")
        self._busy += 1
        future = asyncio.ensure_future(asyncio.to_thread(function))
        future.add_done_callback(self._finished)
        return await asyncio.shield(future)

    def _finished(self, future: asyncio.Future[Any]) -> None:
        self._busy -= 1
        if not future.cancelled():
            future.exception()  # retrieved: the caller may have stopped waiting
        if self.closed and not self._busy:
            self._release()

    async def append(self, chunks: Sequence[bytes], hasher: Hasher | None = None) -> int:
        """Write ``chunks`` at the end (hashing them into ``hasher``); the bytes written."""
        start = self.size

        def write() -> int:
            offset = start
            for chunk in chunks:
                _write_all(self.fd, chunk, offset)
                offset += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
            return offset - start

        written = await self._run(write)
        self.size = max(self.size, start + written)
        return written

    async def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (a hole before it reads as zeros)."""
        await self._run(lambda: _write_all(self.fd, data, offset))
        self.size = max(self.size, offset + len(data))

    async def read(self, offset: int, size: int, hasher: Hasher | None = None) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer only at the end), hashed if asked."""

        def read() -> bytes:
            pieces: list[bytes] = []
            got = 0
            while got < size:
                piece = os.pread(self.fd, size - got, offset + got)
                if not piece:
                    break
                pieces.append(piece)
                got += len(piece)
            data = b"".join(pieces)
            if hasher is not None:
                hasher.update(data)
            return data

        return await self._run(read)

    async def truncate(self, size: int) -> None:
        await self._run(lambda: os.ftruncate(self.fd, size))
        self.size = size

    async def hash_prefix(self, length: int) -> Hasher | None:
        """SHA-256 of the first ``length`` bytes; None if the file is shorter."""
        if length > self.size:
            return None
        hasher = hashlib.sha256()
        position = 0
        while position < length:
            data = await self.read(position, min(HASH_STEP, length - position), hasher)
            if not data:
                return None
            position += len(data)
        return hasher

    def close(self) -> None:
        """Delete the file now; close its descriptor once no worker thread uses it."""
        if self.closed:
            return
        self.closed = True
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not delete the spool file %s: %s", self.path.name, exc)
        if not self._busy:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            with contextlib.suppress(OSError):
                os.close(self.fd)
