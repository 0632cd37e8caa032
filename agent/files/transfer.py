"""The blocking halves of pull and push: open, hash, read, write, verify, rename into place.

All of it runs in worker threads, driven by :class:`~agent.files.service.FileService`.

A pull opens the file with ``O_NOFOLLOW`` relative to its verified parent
directory and reads it in chunks, hashing as it goes (the resumed prefix
included), so the ``FileDone`` digest covers the whole file.

A push never writes the target name: bytes go to ``.<name>.helpline-partial``
beside it (created 0600, never through a symbolic link, locked against a
second transfer to the same file, refused if it has other hard links or
another owner). That partial file is what a later push resumes from. Only
when the whole file has arrived and its size and SHA-256 match what the
sender announced is it fsynced, given its mode and mtime, and renamed over
the target.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import Conflict, InvalidMessage, NotPermitted
from protocol.files import FileRequest

from .operations import LINK_REFUSED
from .roots import ESCAPE, FileRoots, close_fd, lstat_at

__all__ = [
    "CHUNK",
    "PARTIAL_SUFFIX",
    "Source",
    "Upload",
    "open_source",
    "open_upload",
    "partial_name",
]

log = logging.getLogger("helpline.agent.files")

#: Bytes read (or hashed) per step.
CHUNK = 256 * 1024
PARTIAL_SUFFIX = ".helpline-partial"
_NAME_MAX = 255
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

Stopped = Callable[[], bool]
#: A running SHA-256 (``hashlib`` has no public class name for it).
Hasher = Any


def partial_name(name: str) -> str:
    """Where the upload of ``name`` accumulates: a hidden name in the same directory."""
    candidate = f".{name}{PARTIAL_SUFFIX}"
    if len(os.fsencode(candidate)) <= _NAME_MAX:
        return candidate
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:32]
    return f".{digest}{PARTIAL_SUFFIX}"


def _read_exactly(fd: int, size: int, position: int) -> bytes:
    """Up to ``size`` bytes at ``position`` (fewer only at the end of the file)."""
    data = os.pread(fd, size, position)
    if len(data) == size or not data:
        return data
    pieces = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, position + got)
        if not more:
            break
        pieces.append(more)
        got += len(more)
    return b"".join(pieces)


def hash_prefix(fd: int, length: int, stopped: Stopped) -> Hasher | None:
    """SHA-256 of the first ``length`` bytes; None if the file is shorter or we were stopped."""
    hasher = hashlib.sha256()
    position = 0
    while position < length:
        if stopped():
            return None
        data = _read_exactly(fd, min(CHUNK, length - position), position)
        if not data:
            return None
        hasher.update(data)
        position += len(data)
    return hasher


# -- pull ------------------------------------------------------------------------------------


@dataclass
class Source:
    """A file being pulled: its descriptor, its status when opened, where data starts."""

    fd: int
    size: int
    info: os.stat_result
    offset: int
    hasher: Hasher

    def read(self, position: int, size: int) -> bytes:
        """The next chunk, hashed (short or empty if the file shrank meanwhile)."""
        data = _read_exactly(self.fd, size, position)
        self.hasher.update(data)
        return data

    def close(self) -> None:
        close_fd(self.fd)


def open_source(roots: FileRoots, request: FileRequest, stopped: Stopped) -> Source:
    """Open the file to pull and decide where it resumes.

    It resumes at ``request.offset`` when the requester's ``prefix_sha256``
    matches this file's first ``offset`` bytes, and starts over otherwise.
    """
    resolved = roots.locate(request.path)
    if resolved.is_root:
        raise Conflict("is a directory")
    parent, name = roots.open_parent(resolved)
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC
        fd = os.open(name, flags, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise NotPermitted(LINK_REFUSED) from None
        raise
    finally:
        close_fd(parent)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise Conflict("is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise Conflict("not a regular file")
        size = info.st_size
        offset = 0
        hasher: Hasher | None = None
        wanted = request.prefix_sha256.lower()
        if 0 < request.offset <= size and wanted:
            hasher = hash_prefix(fd, request.offset, stopped)
            if hasher is not None and hasher.hexdigest() == wanted:
                offset = request.offset
            else:
                hasher = None
        return Source(fd, size, info, offset, hasher or hashlib.sha256())
    except BaseException:
        close_fd(fd)
        raise


# -- push ------------------------------------------------------------------------------------


@dataclass
class Upload:
    """A push in progress: the partial file, what was announced, what has arrived."""

    id: int
    path: str
    parent: int
    name: str
    partial: str
    fd: int
    size: int
    mode: int
    mtime_ns: int
    #: Bytes of a partial file found at ``push`` time (0 when none, or when stale).
    existing: int
    #: SHA-256 of those ``existing`` bytes.
    prefix: Hasher
    #: Owner of the file being replaced (kept when the agent runs as root).
    owner: tuple[int, int] | None = None
    #: Set by ``write``: data is arriving; ``position`` is where the next byte goes.
    receiving: bool = False
    position: int = 0
    hasher: Hasher = field(default_factory=hashlib.sha256)

    def start(self, offset: int, stopped: Stopped) -> bool:
        """``write``: keep the partial's first ``offset`` bytes and hash them. False if stopped."""
        if offset > self.existing:
            raise InvalidMessage("write offset beyond the partial file")
        if offset > self.size:
            raise InvalidMessage("write offset beyond the announced size")
        os.ftruncate(self.fd, offset)
        if offset == self.existing:
            hasher = self.prefix
        else:
            hasher = hash_prefix(self.fd, offset, stopped)
            if hasher is None:
                return False
        self.hasher = hasher
        self.position = offset
        self.receiving = True
        return True

    def write(self, chunks: Sequence[bytes]) -> None:
        """Append ``chunks`` to the partial file (in order) and hash them."""
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = os.pwrite(self.fd, view, self.position)
                self.position += written
                view = view[written:]
            self.hasher.update(chunk)

    def commit(self) -> os.stat_result:
        """Give the verified partial file its mode and mtime, flush it, rename it into place."""
        os.fchmod(self.fd, self.mode & 0o777)
        if self.owner is not None:
            # keep ours rather than fail a verified transfer
            with contextlib.suppress(OSError):
                os.fchown(self.fd, *self.owner)
        if self.mtime_ns:
            os.utime(self.fd, ns=(time.time_ns(), self.mtime_ns))
        os.fsync(self.fd)
        info = os.fstat(self.fd)
        os.replace(self.partial, self.name, src_dir_fd=self.parent, dst_dir_fd=self.parent)
        # fails on a lookup-only descriptor (no read permission on the directory)
        with contextlib.suppress(OSError):
            os.fsync(self.parent)
        return info

    def discard(self) -> None:
        """Delete the partial file (a failed verification: it cannot be resumed from)."""
        try:
            os.unlink(self.partial, dir_fd=self.parent)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not delete the partial file of %r: %s", self.path, exc)

    def close(self) -> None:
        """Let go of the descriptors; the partial file stays for a later resume."""
        close_fd(self.fd)
        close_fd(self.parent)


def _open_partial(parent: int, name: str) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o600, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            message = f"{ESCAPE}: a symbolic link stands at the partial file's name"
            raise NotPermitted(message) from None
        if exc.errno == errno.EISDIR:
            raise Conflict("a directory stands at the partial file's name") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Conflict("something other than a file stands at the partial file's name")
        if info.st_nlink != 1 or info.st_uid != os.geteuid():
            raise NotPermitted("the partial file is not this agent's own (other owner or links)")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict("another transfer to this file is in progress") from None
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        return fd
    except BaseException:
        close_fd(fd)
        raise


def _open_parent_for_writing(roots: FileRoots, request: FileRequest) -> tuple[int, str]:
    resolved = roots.locate(request.path)
    if resolved.is_root:
        raise Conflict("is a directory")
    try:
        return roots.open_parent(resolved, readable=True)
    except PermissionError:
        return roots.open_parent(resolved)  # search and write permission suffice


def open_upload(roots: FileRoots, request: FileRequest, stopped: Stopped) -> Upload | None:
    """``push``: check the target, open (or find) its partial file and hash what it holds.

    None if stopped meanwhile.
    """
    parent, name = _open_parent_for_writing(roots, request)
    try:
        target = lstat_at(parent, name)
        owner: tuple[int, int] | None = None
        if target is not None:
            if stat.S_ISLNK(target.st_mode):
                raise NotPermitted(LINK_REFUSED)
            if stat.S_ISDIR(target.st_mode):
                raise Conflict("is a directory")
            if not stat.S_ISREG(target.st_mode):
                raise Conflict("not a regular file")
            if os.geteuid() == 0:
                owner = (target.st_uid, target.st_gid)
        partial = partial_name(name)
        fd = _open_partial(parent, partial)
    except BaseException:
        close_fd(parent)
        raise
    upload = Upload(
        id=request.id,
        path=request.path,
        parent=parent,
        name=name,
        partial=partial,
        fd=fd,
        size=request.size,
        mode=request.mode,
        mtime_ns=request.mtime_ns,
        existing=0,
        prefix=hashlib.sha256(),
        owner=owner,
    )
    try:
        existing = os.fstat(fd).st_size
        if 0 < existing <= request.size:
            prefix = hash_prefix(fd, existing, stopped)
            if prefix is not None:
                upload.existing, upload.prefix = existing, prefix
            elif stopped():
                upload.close()
                return None
        return upload
    except BaseException:
        upload.close()
        raise
