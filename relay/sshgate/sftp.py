"""``sftp`` and ``scp`` through the gateway: an asyncssh SFTP server backed by a files session.

``sftp -P 2222 USER:DEVICE@RELAY`` and ``scp -P 2222`` (both directions; the
SFTP-based scp of OpenSSH 9 and the legacy ``scp -O``, which asyncssh serves
with the same SFTP server) reach the device's files through
:class:`~relay.sshgate.sftp_files.DeviceFiles`: one ``files`` session per SSH
channel, with the consent, authorisation, limits, audit and resume rules of
every files session. Nothing here touches the relay's own file system except
the spool (:mod:`relay.sshgate.spool`): every method of asyncssh's
:class:`~asyncssh.SFTPServer` that would is overridden, and what the device
cannot do is refused with "operation not supported".

Paths are the device's, as the ``files`` protocol takes them: a relative path
starts at the device's first allowed root (so ``realpath(".")``, where sftp
starts, is ``.``), an absolute one must lie under a root. Anything that
escapes the roots is refused by the device ("path escapes the allowed roots").

What the operations become:

=========================  =================================================================
SFTP                       files protocol
=========================  =================================================================
stat, lstat                ``stat`` (the device never follows a symbolic link)
opendir/readdir            ``list``, page after page (``more``)
realpath                   lexical normalisation, checked with ``stat``
mkdir, rmdir, remove       ``mkdir``; ``stat`` then ``remove`` (a directory for rmdir only,
                           anything else for remove: sftp's rules, not ``rm -r``)
rename, posix-rename       ``rename`` (an existing target is refused, never replaced)
open for reading           ``pull`` into a spool; reads are served from it as bytes arrive
open for writing           writes into a spool; ``close`` pushes it (``push``, ``write``,
                           data, :class:`~protocol.files.FileDone`); a failure is the
                           status of ``close``. Without truncation an existing file is
                           pulled into the spool first (partial rewrites, ``reput``).
fstat, fsetstat            the open file's attributes; mode and mtime of a file being
                           written are kept for its push
setstat                    mode and mtime of a file being written; otherwise unsupported
=========================  =================================================================

Refusals from the device reach the client as the SFTP status with the device's
message, and, because OpenSSH's sftp shows only the status code of most
failures, the message is also written on the channel's stderr
("helpline: path escapes the allowed roots: '/etc'"), which ssh shows.

Which channels are file servers is decided by
:class:`~relay.sshgate.router.SessionRouter`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import posixpath
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncssh

from protocol.errors import ErrorCode, HelplineError
from protocol.files import FileOp, FileReply

from .session import clean_line
from .sftp_files import DeviceFiles
from .spool import SpoolFull
from .transfers import Download, FilesError, Upload

__all__ = ["GatewaySftpServer", "attrs_of", "normalize", "sftp_error"]

log = logging.getLogger("helpline.sshgate")

#: The longest path the files protocol carries.
MAX_PATH = 4096
#: Permission bits a file or directory created without explicit ones gets masked with
#: (what sshd's default umask does).
UMASK = 0o022

_TYPES = {
    "file": asyncssh.FILEXFER_TYPE_REGULAR,
    "dir": asyncssh.FILEXFER_TYPE_DIRECTORY,
    "link": asyncssh.FILEXFER_TYPE_SYMLINK,
    "other": asyncssh.FILEXFER_TYPE_SPECIAL,
}
_UNSUPPORTED = "not supported through the Helpline gateway"


def normalize(path: str) -> str:
    """``path`` lexically normalised as the device reads it ("./a/../b" is "b", "" is ".").

    The device resolves ``..`` the same way (and refuses any that climbs out of
    a root); normalising here only makes the audit show one name per file.
    """
    normal = posixpath.normpath(path or ".")
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal


def attrs_of(kind: str, size: int, mode: int, mtime_ns: int) -> asyncssh.SFTPAttrs:
    """SFTP attributes for what the device reported (mode with its file type bits)."""
    seconds, nanoseconds = divmod(max(0, mtime_ns), 1_000_000_000)
    return asyncssh.SFTPAttrs(
        type=_TYPES.get(kind, asyncssh.FILEXFER_TYPE_UNKNOWN),
        size=size,
        permissions=mode or None,
        atime=seconds,
        atime_ns=nanoseconds,
        mtime=seconds,
        mtime_ns=nanoseconds,
    )


def _reply_attrs(reply: FileReply) -> asyncssh.SFTPAttrs:
    return attrs_of(reply.kind, reply.size, reply.mode, reply.mtime_ns)


def _mtime_ns(attrs: asyncssh.SFTPAttrs) -> int | None:
    if attrs.mtime is None:
        return None
    return max(0, int(attrs.mtime)) * 1_000_000_000 + int(attrs.mtime_ns or 0)


def sftp_error(error: FilesError) -> asyncssh.SFTPError:
    """The SFTP status for a failed files operation (its message kept)."""
    code, message = error.code, error.message
    if error.session and code != ErrorCode.CONSENT_DENIED:
        return asyncssh.SFTPConnectionLost(message)
    if code == ErrorCode.NOT_FOUND:
        return asyncssh.SFTPNoSuchFile(message)
    if code in (ErrorCode.NOT_PERMITTED, ErrorCode.CONSENT_DENIED):
        return asyncssh.SFTPPermissionDenied(message)
    if code == ErrorCode.CONFLICT:
        if message.startswith("already exists") or "target already exists" in message:
            return asyncssh.SFTPFileAlreadyExists(message)
        if message.startswith("directory not empty"):
            return asyncssh.SFTPDirNotEmpty(message)
        if message.startswith("not a directory"):
            return asyncssh.SFTPNotADirectory(message)
        if message.startswith("is a directory"):
            return asyncssh.SFTPFileIsADirectory(message)
    return asyncssh.SFTPFailure(message)


class ReadHandle:
    """A file open for reading: a download."""

    def __init__(self, download: Download) -> None:
        self.download = download

    def seek(self, *args: Any) -> int:  # asyncssh's "ranges" extension probes this
        raise OSError(errno.EOPNOTSUPP, "sparse ranges are not reported")


class WriteHandle:
    """A file open for writing: an upload, pushed on close."""

    def __init__(self, upload: Upload, *, append: bool, readable: bool) -> None:
        self.upload = upload
        self.append = append
        self.readable = readable

    def seek(self, *args: Any) -> int:
        raise OSError(errno.EOPNOTSUPP, "sparse ranges are not reported")


Handle = ReadHandle | WriteHandle


class GatewaySftpServer(asyncssh.SFTPServer):
    """The device's files, for one SFTP (or SCP) channel."""

    def __init__(
        self,
        chan: asyncssh.SSHServerChannel[bytes],
        files: DeviceFiles,
        *,
        scp_preserve: bool = False,
    ) -> None:
        super().__init__(chan)
        self.files = files
        self._uploads: dict[str, WriteHandle] = {}  # open for writing, by path
        #: Legacy ``scp -p`` receiving: asyncssh sets a file's mode and times by path right
        #: after closing it, so its push waits for that setstat (see :meth:`close`).
        self.scp_preserve = scp_preserve
        self._held: WriteHandle | None = None

    # -- helpers ----------------------------------------------------------------------------------

    def _path(self, path: bytes) -> str:
        try:
            text = path.decode("utf-8")
        except UnicodeDecodeError:
            raise asyncssh.SFTPInvalidFilename("file names must be UTF-8") from None
        if len(text) > MAX_PATH or "\0" in text:
            raise asyncssh.SFTPInvalidFilename("invalid file name")
        return normalize(text)

    @contextlib.contextmanager
    def _errors(self, quiet_missing: bool = True) -> Iterator[None]:
        """Turn what went wrong into an SFTP status (and a line on stderr for refusals)."""
        try:
            yield
        except asyncssh.SFTPError:
            raise
        except FilesError as error:
            if not error.session and not (quiet_missing and error.code == ErrorCode.NOT_FOUND):
                self.files.notify(f"helpline: {clean_line(error.message)}")
            raise sftp_error(error) from None
        except HelplineError as error:  # a request the protocol refuses (too long a path...)
            self.files.notify(f"helpline: {clean_line(error.message)}")
            raise asyncssh.SFTPFailure(error.message) from None
        except SpoolFull as full:
            self.files.notify(f"helpline: {full}")
            raise asyncssh.SFTPNoSpaceOnFilesystem(str(full)) from None
        except (OSError, ValueError) as exc:  # a spool closed under us, a full disk...
            log.warning("gateway file operation failed: %r", exc)
            raise asyncssh.SFTPFailure("the relay could not complete the operation") from None

    async def _lookup(self, path: str) -> FileReply | None:
        """The path's status, or None if it does not exist."""
        try:
            return await self.files.call(FileOp.STAT, path)
        except FilesError as error:
            if error.code == ErrorCode.NOT_FOUND and not error.session:
                return None
            raise

    @staticmethod
    def _handle(file_obj: object) -> Handle:
        if not isinstance(file_obj, ReadHandle | WriteHandle):
            raise asyncssh.SFTPInvalidHandle("invalid file handle")
        return file_obj

    # -- looking -----------------------------------------------------------------------------------

    async def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        name = self._path(path)
        with self._errors():
            return _reply_attrs(await self.files.call(FileOp.STAT, name))

    async def lstat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return await self.stat(path)

    async def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs:
        handle = self._handle(file_obj)
        if isinstance(handle, ReadHandle):
            d = handle.download
            return attrs_of("file", d.size, d.mode, d.mtime_ns)
        upload = handle.upload
        return attrs_of("file", upload.size, 0o100000 | upload.mode, upload.mtime_ns)

    async def realpath(self, path: bytes) -> bytes:
        name = self._path(path)
        if name == ".." or name.startswith("../"):
            self.files.notify("helpline: path escapes the allowed roots")
            raise asyncssh.SFTPPermissionDenied("path escapes the allowed roots")
        with self._errors():
            try:  # a refused path is refused here already (a missing one is fine)
                await self.files.call(FileOp.STAT, name)
            except FilesError as error:
                if error.session or error.code not in (ErrorCode.NOT_FOUND, ErrorCode.CONFLICT):
                    raise
        return name.encode("utf-8")

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        name = self._path(path)
        with self._errors(quiet_missing=False):
            reply = await self.files.call(FileOp.LIST, name)
        here = _reply_attrs(reply)
        yield asyncssh.SFTPName(b".", attrs=here)
        yield asyncssh.SFTPName(b"..", attrs=here)
        offset = 0
        while True:
            for entry in reply.entries:
                yield asyncssh.SFTPName(entry[0].encode("utf-8"), attrs=attrs_of(*entry[1:]))
            offset += len(reply.entries)
            if not reply.more:
                return
            if not reply.entries:
                raise asyncssh.SFTPFailure("the device sent an empty listing page")
            with self._errors(quiet_missing=False):
                reply = await self.files.call(FileOp.LIST, name, offset=offset)

    async def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPOpUnsupported("symbolic links are not followed by the gateway")

    # -- changing ---------------------------------------------------------------------------------

    async def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        name = self._path(path)
        await self._push_held()
        mode = 0o777 if attrs.permissions is None else attrs.permissions & 0o777
        with self._errors():
            await self.files.call(FileOp.MKDIR, name, mode=mode & ~UMASK)

    async def rmdir(self, path: bytes) -> None:
        name = self._path(path)
        with self._errors(quiet_missing=False):
            found = await self.files.call(FileOp.STAT, name)
            if found.kind != "dir":
                raise FilesError(ErrorCode.CONFLICT, f"not a directory: {name!r}")
            await self.files.call(FileOp.REMOVE, name)

    async def remove(self, path: bytes) -> None:
        name = self._path(path)
        with self._errors(quiet_missing=False):
            found = await self.files.call(FileOp.STAT, name)
            if found.kind == "dir":
                raise FilesError(ErrorCode.CONFLICT, f"is a directory: {name!r}")
            await self.files.call(FileOp.REMOVE, name)

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        old, new = self._path(oldpath), self._path(newpath)
        with self._errors(quiet_missing=False):
            await self.files.call(FileOp.RENAME, old, target=new)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self.rename(oldpath, newpath)

    async def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        name = self._path(path)
        handle = self._uploads.get(name)
        if handle is not None:
            await self.fsetstat(handle, attrs)
            return
        held = self._held
        if held is not None and held.upload.path == name:
            await self.fsetstat(held, attrs)
            await self._push_held()
            return
        if any(
            value is not None
            for value in (attrs.size, attrs.permissions, attrs.uid, attrs.gid, attrs.mtime)
        ):
            raise asyncssh.SFTPOpUnsupported(f"changing attributes is {_UNSUPPORTED}")

    async def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        await self.setstat(path, attrs)

    async def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        handle = self._handle(file_obj)
        if not isinstance(handle, WriteHandle):
            raise asyncssh.SFTPOpUnsupported(
                f"changing the attributes of a file opened for reading is {_UNSUPPORTED}"
            )
        if attrs.uid is not None or attrs.gid is not None or attrs.owner or attrs.group:
            raise asyncssh.SFTPOpUnsupported(f"changing the owner is {_UNSUPPORTED}")
        upload = handle.upload
        if attrs.permissions is not None:
            upload.mode = attrs.permissions & 0o7777
        mtime_ns = _mtime_ns(attrs)
        if mtime_ns is not None:
            upload.mtime_ns = mtime_ns
        if attrs.size is not None:
            with self._errors():
                await upload.spool.truncate(attrs.size)

    # -- files ------------------------------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> Handle:
        name = self._path(path)
        await self._push_held()
        if not pflags & asyncssh.FXF_WRITE:
            with self._errors(quiet_missing=False):
                return ReadHandle(await self.files.download(name))
        with self._errors(quiet_missing=False):
            return await self._open_for_writing(name, pflags, attrs)

    async def _open_for_writing(self, name: str, pflags: int, attrs: asyncssh.SFTPAttrs) -> Handle:
        if name in self._uploads:
            raise FilesError(ErrorCode.CONFLICT, f"already open for writing: {name!r}")
        existing = await self._lookup(name)
        if existing is not None:
            if pflags & asyncssh.FXF_CREAT and pflags & asyncssh.FXF_EXCL:
                raise FilesError(ErrorCode.CONFLICT, f"already exists: {name!r}")
            if existing.kind == "dir":
                raise FilesError(ErrorCode.CONFLICT, f"is a directory: {name!r}")
            if existing.kind != "file":
                raise FilesError(ErrorCode.NOT_PERMITTED, f"not a regular file: {name!r}")
            mode = existing.mode & 0o7777
        else:
            if not pflags & asyncssh.FXF_CREAT:
                raise FilesError(ErrorCode.NOT_FOUND, f"no such file: {name!r}")
            parent = posixpath.dirname(name.rstrip("/")) or ("/" if name.startswith("/") else ".")
            folder = await self.files.call(FileOp.STAT, parent)
            if folder.kind != "dir":
                raise FilesError(ErrorCode.CONFLICT, f"not a directory: {parent!r}")
            wanted = 0o666 if attrs.permissions is None else attrs.permissions
            mode = wanted & 0o777 & ~UMASK
        upload = await self.files.new_upload(name, mode, _mtime_ns(attrs) or 0)
        try:
            if existing is not None and existing.size and not pflags & asyncssh.FXF_TRUNC:
                await self.files.fill(upload)
        except BaseException:
            self.files.discard(upload)
            raise
        handle = WriteHandle(
            upload,
            append=bool(pflags & asyncssh.FXF_APPEND),
            readable=bool(pflags & asyncssh.FXF_READ),
        )
        self._uploads[name] = handle
        return handle

    async def open56(
        self, path: bytes, desired_access: int, flags: int, attrs: asyncssh.SFTPAttrs
    ) -> Handle:
        """SFTP v5/v6 opens, as the v3 flags they mean."""
        pflags = 0
        if desired_access & asyncssh.ACE4_READ_DATA:
            pflags |= asyncssh.FXF_READ
        if desired_access & (asyncssh.ACE4_WRITE_DATA | asyncssh.ACE4_APPEND_DATA):
            pflags |= asyncssh.FXF_WRITE
        if desired_access & asyncssh.ACE4_APPEND_DATA or flags & asyncssh.FXF_APPEND_DATA:
            pflags |= asyncssh.FXF_APPEND
        disposition = flags & asyncssh.FXF_ACCESS_DISPOSITION
        if disposition == asyncssh.FXF_CREATE_NEW:
            pflags |= asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
        elif disposition == asyncssh.FXF_CREATE_TRUNCATE:
            pflags |= asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC
        elif disposition == asyncssh.FXF_OPEN_OR_CREATE:
            pflags |= asyncssh.FXF_CREAT
        elif disposition == asyncssh.FXF_TRUNCATE_EXISTING:
            pflags |= asyncssh.FXF_TRUNC
        return await self.open(path, pflags, attrs)

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        handle = self._handle(file_obj)
        with self._errors():
            if isinstance(handle, ReadHandle):
                return await handle.download.read(offset, size)
            if not handle.readable:
                raise asyncssh.SFTPPermissionDenied("the file is not open for reading")
            upload = handle.upload
            if offset >= upload.size:
                return b""
            return await upload.spool.read(offset, min(size, upload.size - offset))

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        handle = self._handle(file_obj)
        if not isinstance(handle, WriteHandle):
            raise asyncssh.SFTPPermissionDenied("the file is not open for writing")
        with self._errors():
            upload = handle.upload
            await upload.write(upload.size if handle.append else offset, data)
        return len(data)

    async def close(self, file_obj: object) -> None:
        handle = self._handle(file_obj)
        if isinstance(handle, ReadHandle):
            self.files.close_download(handle.download)
            return
        upload = handle.upload
        if self._uploads.get(upload.path) is handle:
            del self._uploads[upload.path]
        if self.files.leaving:  # closed because the client went away: not a finished file
            log.info("gateway upload of %r abandoned: the client left", upload.path)
            self.files.discard(upload)
            return
        await self._push_held()
        if self.scp_preserve:  # pushed by the setstat that follows (or the next open)
            self._held = handle
            return
        try:
            with self._errors(quiet_missing=False):
                await self.files.push(upload)
        finally:
            self.files.discard(upload)

    async def _push_held(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        try:
            with self._errors(quiet_missing=False):
                await self.files.push(held.upload)
        finally:
            self.files.discard(held.upload)

    async def exit(self) -> None:
        """The client is done: end the session, and the channel with exit status 0 (as
        sshd's sftp-server; OpenSSH's scp counts a missing status as a failure)."""
        if self._held is not None and not self.files.leaving:
            with contextlib.suppress(asyncssh.SFTPError):  # (written on stderr)
                await self._push_held()
        for handle in [*self._uploads.values(), *filter(None, [self._held])]:
            self.files.discard(handle.upload)
        self._uploads.clear()
        self._held = None
        await self.files.finish()
        if not self.channel.is_closing():
            self.channel.exit(0)

    # -- what the device cannot do ----------------------------------------------------------------

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported(f"symbolic links are {_UNSUPPORTED}")

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported(f"hard links are {_UNSUPPORTED}")

    async def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported(f"file system statistics are {_UNSUPPORTED}")

    async def fstatvfs(self, file_obj: object) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported(f"file system statistics are {_UNSUPPORTED}")

    async def fsync(self, file_obj: object) -> None:
        raise asyncssh.SFTPOpUnsupported(
            "fsync is not supported: an upload is written and synced by the device on close"
        )

    async def lock(self, file_obj: object, offset: int, length: int, flags: int) -> None:
        raise asyncssh.SFTPOpUnsupported(f"byte range locks are {_UNSUPPORTED}")

    async def unlock(self, file_obj: object, offset: int, length: int) -> None:
        raise asyncssh.SFTPOpUnsupported(f"byte range locks are {_UNSUPPORTED}")

    def map_path(self, path: bytes) -> bytes:  # never a path on the relay
        raise asyncssh.SFTPOpUnsupported(_UNSUPPORTED)

    def reverse_map_path(self, path: bytes) -> bytes:
        raise asyncssh.SFTPOpUnsupported(_UNSUPPORTED)
