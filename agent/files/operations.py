"""The one-shot file operations: stat, list, mkdir, remove, rename.

Each is a blocking function (run in a worker thread) that takes a
:class:`~protocol.files.FileRequest` and returns the ``FileReply`` to send, or
raises (``OSError`` or a :class:`~protocol.errors.HelplineError`) for the
service to turn into an error reply. Every path goes through
:class:`~agent.files.roots.FileRoots`: resolved under a root, walked without
following symbolic links, acted upon relative to its parent's descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
from dataclasses import dataclass, field

from protocol.errors import Conflict, InvalidMessage, NotPermitted
from protocol.files import FileEntry, FileReply, FileRequest

from .roots import ESCAPE, FileRoots, lstat_at, open_directory_at

__all__ = [
    "LINK_REFUSED",
    "ListingCache",
    "info_reply",
    "kind_of",
    "list_directory",
    "make_directory",
    "remove",
    "rename",
    "stat_path",
]

log = logging.getLogger("helpline.agent.files")

LINK_REFUSED = f"{ESCAPE}: symbolic links are not followed"
#: What one listing entry costs in a msgpack body besides its name (kind, three integers).
_ENTRY_OVERHEAD = 48


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def _entry(name: str, info: os.stat_result) -> FileEntry:
    return (
        name,
        kind_of(info.st_mode),
        max(0, info.st_size),
        info.st_mode,
        max(0, info.st_mtime_ns),
    )


def info_reply(request_id: int, info: os.stat_result, **extra: object) -> FileReply:
    """A success reply describing ``info`` (mode is the whole ``st_mode``, type bits included)."""
    return FileReply(
        id=request_id,
        ok=True,
        kind=kind_of(info.st_mode),
        size=max(0, info.st_size),
        mode=info.st_mode & 0o177777,
        mtime_ns=max(0, info.st_mtime_ns),
        **extra,  # type: ignore[arg-type]
    )


def _missing(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


# -- stat ------------------------------------------------------------------------------------


def stat_path(roots: FileRoots, request: FileRequest) -> FileReply:
    """The path's own status (``lstat``: a symbolic link is reported as ``link``)."""
    resolved = roots.locate(request.path)
    parent, name = roots.open_parent(resolved)
    try:
        info = lstat_at(parent, name)
    finally:
        os.close(parent)
    if info is None:
        raise _missing(request.path)
    return info_reply(request.id, info)


# -- list ------------------------------------------------------------------------------------


@dataclass
class ListingCache:
    """The last directory read, so that paging through it does not re-read it each page."""

    key: tuple[object, ...] = ()
    entries: list[FileEntry] = field(default_factory=list)


def _read_entries(fd: int) -> list[FileEntry]:
    entries: list[FileEntry] = []
    with os.scandir(fd) as iterator:
        for item in iterator:
            try:
                info = item.stat(follow_symlinks=False)
                item.name.encode("utf-8")
            except FileNotFoundError:
                continue  # gone while we looked
            except UnicodeEncodeError:
                log.info("listing: skipped a name that is not valid UTF-8")
                continue
            entries.append(_entry(item.name, info))
    entries.sort(key=lambda entry: entry[0])
    return entries


def list_directory(
    roots: FileRoots,
    request: FileRequest,
    cache: ListingCache,
    *,
    max_entries: int,
    max_bytes: int,
) -> FileReply:
    """One page of a directory, sorted by name, from entry ``request.offset``.

    A page holds at most ``max_entries`` entries and about ``max_bytes`` of
    names, so that the reply fits a control frame; ``more`` says there are
    further entries (ask again with ``offset`` advanced by the page's length).
    """
    resolved = roots.locate(request.path)
    fd = roots.open_directory(resolved, readable=True)
    try:
        info = os.fstat(fd)
        key = (resolved.path, info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)
        if request.offset > 0 and cache.key == key:
            entries = cache.entries
        else:
            entries = _read_entries(fd)
            cache.key, cache.entries = key, entries
    finally:
        os.close(fd)
    page: list[FileEntry] = []
    used = 0
    for item in entries[request.offset : request.offset + max_entries]:
        cost = len(item[0].encode("utf-8")) + _ENTRY_OVERHEAD
        if page and used + cost > max_bytes:
            break
        page.append(item)
        used += cost
    more = request.offset + len(page) < len(entries)
    return info_reply(request.id, info, entries=tuple(page), more=more, offset=request.offset)


# -- mkdir -----------------------------------------------------------------------------------


def _directory_mode(mode: int) -> int:
    """Directories get search permission wherever read is granted (0o644 becomes 0o755)."""
    mode &= 0o777
    return mode | ((mode & 0o444) >> 2)


def make_directory(roots: FileRoots, request: FileRequest) -> FileReply:
    """Create a directory; ``recursive`` creates missing parents and accepts one that exists."""
    resolved = roots.locate(request.path)
    mode = _directory_mode(request.mode)
    if not request.recursive:
        if resolved.is_root:
            raise Conflict("already exists")
        parent, name = roots.open_parent(resolved)
        try:
            os.mkdir(name, mode, dir_fd=parent)
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
        return info_reply(request.id, info)
    fd = roots.open_root(resolved)
    try:
        for part in resolved.parts:
            try:
                next_fd = open_directory_at(fd, part)
            except FileNotFoundError:
                # made meanwhile if it exists now: the open below checks what it is
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
                next_fd = open_directory_at(fd, part)
            os.close(fd)
            fd = next_fd
        info = os.fstat(fd)
    finally:
        os.close(fd)
    return info_reply(request.id, info)


# -- remove ----------------------------------------------------------------------------------


def remove(roots: FileRoots, request: FileRequest) -> FileReply:
    """Remove a file or an empty directory; ``recursive`` removes a whole tree.

    Trees go through :func:`shutil.rmtree` on a descriptor, which never follows
    a symbolic link out of the tree (links inside it are removed, not followed).
    """
    resolved = roots.locate(request.path)
    if resolved.is_root:
        raise NotPermitted("an allowed root cannot be removed")
    parent, name = roots.open_parent(resolved)
    try:
        info = lstat_at(parent, name)
        if info is None:
            raise _missing(request.path)
        if stat.S_ISLNK(info.st_mode):
            raise NotPermitted(LINK_REFUSED)
        if stat.S_ISDIR(info.st_mode):
            if request.recursive:
                shutil.rmtree(name, dir_fd=parent)
            else:
                os.rmdir(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)
    finally:
        os.close(parent)
    return FileReply(id=request.id, ok=True, kind=kind_of(info.st_mode))


# -- rename ----------------------------------------------------------------------------------


def rename(roots: FileRoots, request: FileRequest) -> FileReply:
    """Move ``path`` to ``target`` (both inside the roots); the target must not exist."""
    if not request.target:
        raise InvalidMessage("rename needs a target")
    source = roots.locate(request.path)
    target = roots.locate(request.target)
    if source.is_root:
        raise NotPermitted("an allowed root cannot be renamed")
    if target.is_root:
        raise Conflict("already exists")
    if source.root == target.root and target.parts[: len(source.parts)] == source.parts:
        raise InvalidMessage("cannot move a directory inside itself")
    source_parent, source_name = roots.open_parent(source)
    try:
        target_parent, target_name = roots.open_parent(target)
        try:
            info = lstat_at(source_parent, source_name)
            if info is None:
                raise _missing(request.path)
            if stat.S_ISLNK(info.st_mode):
                raise NotPermitted(LINK_REFUSED)
            existing = lstat_at(target_parent, target_name)
            if existing is not None:
                if stat.S_ISLNK(existing.st_mode):
                    raise NotPermitted(LINK_REFUSED)
                raise Conflict("the target already exists")
            os.rename(
                source_name,
                target_name,
                src_dir_fd=source_parent,
                dst_dir_fd=target_parent,
            )
        finally:
            os.close(target_parent)
    finally:
        os.close(source_parent)
    return FileReply(id=request.id, ok=True, kind=kind_of(info.st_mode))
