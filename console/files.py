"""File transfer from the console: the requesting side of a ``files`` channel.

:class:`FilesClient` speaks :mod:`protocol.files` over a granted
:class:`~console.sessions.SessionChannel`: listings (followed page by page),
stat, mkdir, remove, rename, and pulls and pushes of files and whole trees.

Every transfer is verified end to end: both sides hash the whole file and the
result counts only when size and SHA-256 agree. A pull writes into
``.<name>.helpline-partial`` beside its target (0600) and renames it into
place only once verified; a cut leaves the partial for the next pull, which
resumes after it when the device confirms the prefix's hash. A push resumes
the same way from what the device already holds.

One request runs at a time. Each operation has one request id, carried by
every message of that operation (``push`` + ``write`` + :class:`FileDone`, or
``pull`` + its reply + :class:`FileDone`); a listing asks one id per page.

Also here: :class:`ProgressBar`, the one-line display ``helpline files``
draws on a terminal.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import hashlib
import hmac
import itertools
import logging
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from protocol.errors import (
    Conflict,
    ErrorCode,
    HelplineError,
    NotFound,
    ProtocolError,
    error_from_code,
)
from protocol.files import FileDone, FileOp, FileReply, FileRequest
from protocol.messages import Message

from .sessions import SessionChannel

__all__ = [
    "CHUNK_SIZE",
    "Entry",
    "FilesClient",
    "Result",
    "SessionEnded",
    "TransferError",
    "TransferInterrupted",
    "partial_path",
]

log = logging.getLogger("helpline.files")

#: Bytes read from a local file at a time for a push (in a thread, hashed as read).
CHUNK_SIZE = 256 * 1024
#: Received bytes gathered before they are hashed and written (in a thread).
WRITE_BATCH = 1024 * 1024
PARTIAL_SUFFIX = ".helpline-partial"

_T = TypeVar("_T")
ProgressCallback = Callable[[int, int], None]
WarningCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Entry:
    """A directory entry or stat result on the device. ``kind``: file, dir, link, other."""

    name: str
    kind: str
    size: int
    mode: int
    mtime_ns: int

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"


@dataclass(frozen=True, slots=True)
class Result:
    """A verified transfer: the whole file's SHA-256 and size, and where it resumed."""

    sha256: str
    size: int
    resumed_from: int = 0
    #: Where the file now is (local for a pull, on the device for a push).
    path: str = ""


class TransferError(HelplineError):
    """The bytes received do not match the size or SHA-256 the sender announced."""

    default_message = "transfer verification failed"


class SessionEnded(HelplineError):
    """The files session closed (the device, the relay or an admin ended it)."""

    default_message = "the files session ended"


class TransferInterrupted(SessionEnded):
    """The session closed mid-transfer; what arrived is kept so the next attempt resumes."""

    def __init__(self, message: str, done: int = 0, total: int = 0) -> None:
        super().__init__(message)
        self.done = done
        self.total = total


def partial_path(target: Path) -> Path:
    """Where a pull into ``target`` keeps its bytes until verified."""
    name = f".{target.name}{PARTIAL_SUFFIX}"
    if len(os.fsencode(name)) > 255:  # keep within NAME_MAX, still unique per target
        digest = hashlib.sha256(os.fsencode(target.name)).hexdigest()[:16]
        name = f".{os.fsdecode(os.fsencode(target.name)[:200])}.{digest}{PARTIAL_SUFFIX}"
    return target.with_name(name)


def _safe_name(name: str) -> bool:
    """A remote listing's name that stays inside the local directory it is written to."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


class FilesClient:
    """Files on one device, over one granted ``files`` session channel."""

    def __init__(self, channel: SessionChannel, *, on_warning: WarningCallback | None = None):
        self.channel = channel
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._inbox: asyncio.Task[bytes | Message | None] | None = None
        self._broken: str | None = None
        #: Called with each warning (a symlink skipped...); the CLI prints them.
        self.on_warning: WarningCallback = on_warning or log.warning

    async def close(self) -> None:
        """End the session."""
        if self._inbox is not None:
            self._inbox.cancel()
        await self.channel.close()

    # -- simple operations ------------------------------------------------------------

    async def list(self, path: str) -> builtins.list[Entry]:
        """Every entry of the directory ``path``, across as many pages as it takes."""
        entries: builtins.list[Entry] = []
        async with self._lock:
            while True:
                reply = await self._call(FileOp.LIST, path, offset=len(entries))
                entries.extend(Entry(*entry) for entry in reply.entries)
                if not reply.more:
                    return entries
                if not reply.entries:
                    raise self._fail(ProtocolError("an empty listing page announced more"))

    async def stat(self, path: str) -> Entry:
        async with self._lock:
            reply = await self._call(FileOp.STAT, path)
        name = posixpath.basename(path.rstrip("/")) or path
        return Entry(name, reply.kind, reply.size, reply.mode, reply.mtime_ns)

    async def mkdir(self, path: str, parents: bool = False) -> None:
        async with self._lock:
            await self._call(FileOp.MKDIR, path, recursive=parents)

    async def remove(self, path: str, recursive: bool = False) -> None:
        async with self._lock:
            await self._call(FileOp.REMOVE, path, recursive=recursive)

    async def rename(self, src: str, dst: str) -> None:
        async with self._lock:
            await self._call(FileOp.RENAME, src, target=dst)

    # -- pull ---------------------------------------------------------------------------

    async def pull(
        self, remote: str, local: str | os.PathLike[str], progress: ProgressCallback | None = None
    ) -> Result:
        """Copy the device's ``remote`` file to ``local``, resuming a partial copy."""
        target = Path(local)
        if await asyncio.to_thread(target.is_dir):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
        partial = partial_path(target)
        async with self._lock:
            self._check_usable()
            try:
                fd, hasher, have = await _settled(_open_partial, partial, abandon=_close_first)
            except (FileNotFoundError, NotADirectoryError) as error:
                # name the directory the technician gave, not our hidden partial file
                raise type(error)(error.errno, error.strerror, str(target.parent)) from None
            try:
                return await self._pull_into(remote, target, partial, fd, hasher, have, progress)
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    if partial.stat().st_size == 0:
                        partial.unlink()  # nothing worth resuming

    async def _pull_into(
        self,
        remote: str,
        target: Path,
        partial: Path,
        fd: int,
        hasher: Any,
        have: int,
        progress: ProgressCallback | None,
    ) -> Result:
        request_id = next(self._ids)
        await self._send(
            FileRequest(
                id=request_id,
                op=FileOp.PULL,
                path=remote,
                offset=have,
                prefix_sha256=hasher.hexdigest() if have else "",
            )
        )
        reply = await self._reply(request_id)
        if reply.offset not in (0, have):
            raise self._fail(
                ProtocolError(f"the device resumes at {reply.offset}, not 0 or {have}")
            )
        start = reply.offset
        if start != have:  # the device did not recognise our prefix: start over
            os.ftruncate(fd, 0)
            hasher = hashlib.sha256()
        os.lseek(fd, start, os.SEEK_SET)
        if progress is not None:
            progress(start, reply.size)
        done, received = await self._receive(request_id, fd, hasher, start, reply.size, progress)
        size, digest = start + received, hasher.hexdigest()
        if size != done.size or not hmac.compare_digest(digest, done.sha256):
            with contextlib.suppress(OSError):
                await asyncio.to_thread(partial.unlink)
            what = "size" if size != done.size else "SHA-256"
            raise TransferError(
                f"{remote}: {what} mismatch (received {size} bytes, sha256 {digest};"
                f" the device sent {done.size} bytes, sha256 {done.sha256}); nothing kept"
            )
        await _settled(_finish_pull, fd, partial, target, reply.mode, reply.mtime_ns)
        return Result(digest, size, start, str(target))

    async def _receive(
        self,
        request_id: int,
        fd: int,
        hasher: Any,
        start: int,
        total: int,
        progress: ProgressCallback | None,
    ) -> tuple[FileDone, int]:
        """Data frames into ``fd`` until the device's FileDone (which comes after its data)."""
        received = 0
        batch: builtins.list[bytes] = []
        batched = 0
        try:
            while True:
                # wait() rather than await: a cancelled caller leaves the read pending, not lost
                await asyncio.wait({self._inbox_task()})
                item = self._take_inbox()
                if item is None:
                    raise self._cut(f"pull of {total} bytes", start + received, total)
                if isinstance(item, bytes):
                    received += len(item)
                    batch.append(item)
                    batched += len(item)
                    if batched >= WRITE_BATCH:
                        full, batch, batched = batch, [], 0
                        await _settled(_write_all, fd, hasher, full)
                    if progress is not None:
                        progress(start + received, max(total, start + received))
                elif isinstance(item, FileDone) and item.id == request_id:
                    if received != item.size - start:  # the caller reports the mismatch
                        self._broken = "the device sent other than it announced"
                    full, batch = batch, []
                    await _settled(_write_all, fd, hasher, full)
                    return item, received
                elif isinstance(item, FileReply) and item.id == request_id:
                    # The device gave up mid-way (a read error...); what it sent before
                    # saying so is kept for the next pull to resume.
                    self._broken = "a pull was abandoned mid-way"
                    raise error_from_code(
                        item.code or ErrorCode.INTERNAL, item.message or "the device gave up"
                    )
                else:
                    raise self._fail(self._unexpected(item, request_id))
        finally:
            if batch:  # leaving early: keep what arrived for the next pull to resume
                with contextlib.suppress(OSError):
                    _write_all(fd, None, batch)

    # -- push ---------------------------------------------------------------------------

    async def push(
        self, local: str | os.PathLike[str], remote: str, progress: ProgressCallback | None = None
    ) -> Result:
        """Copy the local file ``local`` to ``remote`` on the device, resuming its partial."""
        if not await asyncio.to_thread(os.path.isfile, local):  # a FIFO would block open()
            if await asyncio.to_thread(os.path.isdir, local):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(local))
            raise FileNotFoundError(errno.ENOENT, "no such regular file", str(local))
        source: IO[bytes] = await _settled(open, local, "rb", abandon=_close)
        try:
            info = os.fstat(source.fileno())
            async with self._lock:
                self._check_usable()
                return await self._push_from(source, info, remote, progress)
        finally:
            source.close()

    async def _push_from(
        self,
        source: IO[bytes],
        info: os.stat_result,
        remote: str,
        progress: ProgressCallback | None,
    ) -> Result:
        size, mode, mtime_ns = info.st_size, info.st_mode & 0o7777, info.st_mtime_ns
        request_id = next(self._ids)
        fields: dict[str, Any] = {"path": remote, "size": size, "mode": mode, "mtime_ns": mtime_ns}
        await self._send(FileRequest(id=request_id, op=FileOp.PUSH, **fields))
        reply = await self._reply(request_id)
        start, hasher = 0, hashlib.sha256()
        if 0 < reply.offset <= size and reply.prefix_sha256:
            prefix = await _settled(_hash_prefix, source, reply.offset)
            if prefix is not None and hmac.compare_digest(prefix.hexdigest(), reply.prefix_sha256):
                start, hasher = reply.offset, prefix
        await _settled(source.seek, start)
        await self._send(FileRequest(id=request_id, op=FileOp.WRITE, offset=start, **fields))
        if progress is not None:
            progress(start, size)

        position = [start]
        sender = asyncio.create_task(self._send_data(source, hasher, position, size, progress))
        try:
            inbox = self._inbox_task()
            await asyncio.wait({sender, inbox}, return_when=asyncio.FIRST_COMPLETED)
            if not sender.done():  # the device spoke (or went) before we finished
                message = self._take_inbox()
                if message is None:
                    raise self._cut(f"push of {size} bytes", position[0], size)
                if isinstance(message, FileReply) and message.id == request_id and not message.ok:
                    self._broken = "a push was refused mid-way"
                    raise error_from_code(message.code or ErrorCode.INTERNAL, message.message)
                raise self._fail(self._unexpected(message, request_id))
            sent = sender.result() - start
        except BaseException:
            if self._broken is None and not self.channel.closed.done():
                self._broken = "a push was abandoned mid-way"
            raise
        finally:
            if not sender.done():
                sender.cancel()
                await asyncio.wait({sender})  # its read must end before the file is closed
            if not sender.cancelled():
                sender.exception()  # retrieved: an error after we stopped listening is moot
        total, digest = start + sent, hasher.hexdigest()
        await self._send(FileDone(id=request_id, size=total, sha256=digest))
        final = await self._reply(request_id)
        if not hmac.compare_digest(final.sha256, digest):
            raise TransferError(
                f"{remote}: the device stored sha256 {final.sha256 or '(none)'}, we sent {digest}"
            )
        return Result(digest, total, start, remote)

    async def _send_data(
        self,
        source: IO[bytes],
        hasher: Any,
        position: builtins.list[int],
        size: int,
        progress: ProgressCallback | None,
    ) -> int:
        """The file from ``position[0]`` on, kept up to date; returns where it ended."""
        while True:
            chunk = await _settled(_read_chunk, source, hasher)
            if not chunk:
                return position[0]
            await self.channel.write(chunk)
            if self.channel.closed.done():
                raise self._cut(f"push of {size} bytes", position[0], size)
            position[0] += len(chunk)
            if progress is not None:
                progress(position[0], max(size, position[0]))

    # -- trees ----------------------------------------------------------------------------

    async def pull_tree(
        self,
        remote_dir: str,
        local_dir: str | os.PathLike[str],
        progress: ProgressCallback | None = None,
        *,
        on_file: Callable[[Result], None] | None = None,
    ) -> builtins.list[Result]:
        """The device's directory ``remote_dir`` into ``local_dir`` (created), recursively.

        Symbolic links and special files are skipped with a warning, never followed;
        so are names that could step out of ``local_dir``.
        """
        root = Path(local_dir)
        top = await self.stat(remote_dir)
        if not top.is_dir:
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), remote_dir)
        dirs: builtins.list[Path] = [root]
        files: builtins.list[tuple[str, Path, int]] = []
        pending = [(remote_dir, root)]
        while pending:
            remote, local = pending.pop()
            for entry in sorted(await self.list(remote), key=lambda e: e.name):
                child = posixpath.join(remote, entry.name)
                if not _safe_name(entry.name):
                    self.on_warning(f"skipped {child!r}: not a safe file name")
                elif entry.kind == "dir":
                    dirs.append(local / entry.name)
                    pending.append((child, local / entry.name))
                elif entry.kind == "file":
                    files.append((child, local / entry.name, entry.size))
                else:
                    self.on_warning(f"skipped {child}: a {_kind_name(entry.kind)}, not followed")
        skipped: set[Path] = set()
        for directory in dirs:
            if any(parent in skipped for parent in directory.parents):
                skipped.add(directory)
            elif not await asyncio.to_thread(_make_local_dir, directory):
                self.on_warning(f"skipped {directory}: exists and is not a directory")
                skipped.add(directory)
        results: builtins.list[Result] = []
        tracker = _TreeProgress(sum(size for _, _, size in files), progress)
        for remote, local, size in files:
            if local.parent in skipped:
                continue
            result = await self.pull(remote, local, tracker.file(size))
            tracker.finished(size)
            results.append(result)
            if on_file is not None:
                on_file(result)
        return results

    async def push_tree(
        self,
        local_dir: str | os.PathLike[str],
        remote_dir: str,
        progress: ProgressCallback | None = None,
        *,
        on_file: Callable[[Result], None] | None = None,
    ) -> builtins.list[Result]:
        """The local directory ``local_dir`` into ``remote_dir`` (created), recursively.

        Symbolic links and special files are skipped with a warning, never followed.
        """
        root = Path(local_dir)
        if await asyncio.to_thread(root.is_symlink):
            self.on_warning(f"skipped {root}: a symbolic link, not followed")
            return []
        dirs, files, skipped = await asyncio.to_thread(_walk_local, root)
        for path in skipped:
            self.on_warning(f"skipped {path}: not a regular file or directory, not followed")
        for relative in dirs:
            await self._ensure_remote_dir(posixpath.join(remote_dir, *relative))
        results: builtins.list[Result] = []
        tracker = _TreeProgress(sum(size for _, size in files), progress)
        for relative, size in files:
            result = await self.push(
                root.joinpath(*relative), posixpath.join(remote_dir, *relative), tracker.file(size)
            )
            tracker.finished(size)
            results.append(result)
            if on_file is not None:
                on_file(result)
        return results

    async def _ensure_remote_dir(self, path: str) -> None:
        try:
            entry = await self.stat(path)
        except NotFound:
            await self.mkdir(path)
            return
        if not entry.is_dir:
            raise Conflict(f"{path} exists on the device and is not a directory")

    # -- the request/reply machinery -----------------------------------------------------

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise SessionEnded(
                f"this files session is out of step ({self._broken}); open a new one"
            )

    async def _send(self, message: Message) -> None:
        if self.channel.closed.done():
            raise self._ended()
        await self.channel.send_message(message)

    async def _call(self, op: FileOp, path: str, **fields: Any) -> FileReply:
        """One request, its one reply (the caller holds the lock)."""
        self._check_usable()
        request_id = next(self._ids)
        await self._send(FileRequest(id=request_id, op=op, path=path, **fields))
        return await self._reply(request_id)

    async def _reply(self, request_id: int) -> FileReply:
        # wait() rather than await: a cancelled caller leaves the read pending, not lost
        await asyncio.wait({self._inbox_task()})
        message = self._take_inbox()
        if message is None:
            raise self._ended()
        if not isinstance(message, FileReply) or message.id != request_id:
            raise self._fail(self._unexpected(message, request_id))
        if not message.ok:
            raise error_from_code(message.code or ErrorCode.INTERNAL, message.message or "refused")
        return message

    def _inbox_task(self) -> asyncio.Task[bytes | Message | None]:
        """The pending read of what the device sends next (one at a time, kept across waits)."""
        if self._inbox is None:
            self._inbox = asyncio.create_task(self.channel.receive())
        return self._inbox

    def _take_inbox(self) -> bytes | Message | None:
        assert self._inbox is not None
        item = self._inbox.result()
        self._inbox = None
        return item

    def _fail(self, error: HelplineError) -> HelplineError:
        """``error`` left the channel out of step: later operations are refused."""
        self._broken = error.message
        return error

    @staticmethod
    def _unexpected(message: bytes | Message, request_id: int) -> ProtocolError:
        if isinstance(message, bytes):
            got = f"{len(message)} bytes of data"
        else:
            got = f"{message.TYPE} for request {getattr(message, 'id', '?')}"
        return ProtocolError(f"unexpected {got} while waiting on request {request_id}")

    def _closed_reason(self) -> tuple[int, str]:
        if self.channel.closed.done():
            closed = self.channel.closed.result()
            return closed.code, closed.message
        return 0, ""

    def _ended(self) -> HelplineError:
        code, message = self._closed_reason()
        if code >= 4000:
            return error_from_code(code, message or "the files session ended")
        return SessionEnded(f"the files session ended: {message}" if message else None)

    def _cut(self, what: str, done: int, total: int) -> TransferInterrupted:
        self._broken = "the session ended"
        _, reason = self._closed_reason()
        because = f" ({reason})" if reason else ""
        return TransferInterrupted(
            f"the {what} was cut at {done}{because}; run it again to resume", done, total
        )


# -- local file work (run in threads) -----------------------------------------------------


async def _settled(
    func: Callable[..., _T], *args: Any, abandon: Callable[[_T], object] | None = None
) -> _T:
    """``func(*args)`` in a thread. If we are cancelled meanwhile, the thread is still let
    finish before the cancellation goes on (it may be using a file we are about to close),
    and ``abandon`` disposes of its result."""
    work = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            result = await work
            if abandon is not None:
                abandon(result)
        raise


def _close(file: IO[bytes]) -> None:
    file.close()


def _close_first(opened: tuple[int, Any, int]) -> None:
    os.close(opened[0])


def _open_partial(partial: Path) -> tuple[int, Any, int]:
    """The partial file (created 0600, never through a symlink), its hash and size."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(partial, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        hasher = hashlib.sha256()
        size = 0
        while block := os.read(fd, WRITE_BATCH):
            hasher.update(block)
            size += len(block)
        return fd, hasher, size
    except BaseException:
        os.close(fd)
        raise


def _write_all(fd: int, hasher: Any, chunks: builtins.list[bytes]) -> None:
    for chunk in chunks:
        if hasher is not None:
            hasher.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _finish_pull(fd: int, partial: Path, target: Path, mode: int, mtime_ns: int) -> None:
    """Durable, with the device's permissions and time, then in place under its real name."""
    os.fsync(fd)
    # Permission bits only: set-id and sticky bits do not come along from a device.
    os.fchmod(fd, (mode & 0o777) or 0o600)
    if mtime_ns:
        os.utime(fd, ns=(time.time_ns(), mtime_ns))
    os.replace(partial, target)
    with contextlib.suppress(OSError):
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _hash_prefix(source: IO[bytes], length: int) -> Any:
    """SHA-256 of the first ``length`` bytes, or None when the file is shorter."""
    source.seek(0)
    hasher = hashlib.sha256()
    left = length
    while left:
        block = source.read(min(left, WRITE_BATCH))
        if not block:
            return None
        hasher.update(block)
        left -= len(block)
    return hasher


def _read_chunk(source: IO[bytes], hasher: Any) -> bytes:
    chunk = source.read(CHUNK_SIZE)
    hasher.update(chunk)
    return chunk


def _make_local_dir(path: Path) -> bool:
    """Create ``path`` as a directory; False if something else (a symlink too) is there."""
    try:
        path.mkdir()
        return True
    except FileExistsError:
        return path.is_dir() and not path.is_symlink()


def _walk_local(
    root: Path,
) -> tuple[
    builtins.list[tuple[str, ...]], builtins.list[tuple[tuple[str, ...], int]], builtins.list[Path]
]:
    """Directories (parents first), regular files with sizes, and what was skipped."""
    if not root.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(root))
    dirs: builtins.list[tuple[str, ...]] = [()]
    files: builtins.list[tuple[tuple[str, ...], int]] = []
    skipped: builtins.list[Path] = []
    index = 0
    while index < len(dirs):
        relative = dirs[index]
        index += 1
        with os.scandir(root.joinpath(*relative)) as scan:
            for entry in sorted(scan, key=lambda e: e.name):
                if entry.is_symlink():
                    skipped.append(Path(entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    dirs.append((*relative, entry.name))
                elif entry.is_file(follow_symlinks=False):
                    files.append(
                        ((*relative, entry.name), entry.stat(follow_symlinks=False).st_size)
                    )
                else:
                    skipped.append(Path(entry.path))
    return dirs, files, skipped


def _kind_name(kind: str) -> str:
    return "symbolic link" if kind == "link" else "special file"


class _TreeProgress:
    """One progress line for a whole tree: each file's progress offset by those before it."""

    def __init__(self, total: int, progress: ProgressCallback | None) -> None:
        self.total = total
        self.base = 0
        self.progress = progress

    def file(self, size: int) -> ProgressCallback | None:
        if self.progress is None:
            return None
        report, base = self.progress, self.base

        def on_progress(done: int, total: int) -> None:
            report(base + min(done, size), self.total)

        return on_progress

    def finished(self, size: int) -> None:
        self.base += size
        if self.progress is not None:
            self.progress(self.base, self.total)
