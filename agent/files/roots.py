"""The directories file transfers may touch, and paths proven to stay inside them.

:meth:`FileRoots.locate` checks a path *lexically*: no NUL byte, and no ``..``
climbing out of the root it names (relative paths start at the first root;
absolute ones must lie under a root, as configured or as its real path).

That alone would not stop a symbolic link, so nothing here ever follows one:
:meth:`FileRoots.open_parent` walks from the root's directory to the parent
of the final component one ``openat`` at a time with ``O_NOFOLLOW``, and
every operation then acts on the final name *relative to that directory
descriptor* (``dir_fd=``), again without following links. A symbolic link
swapped in after a check therefore cannot lead outside: the walk is the
check. A symbolic link anywhere in a path is refused with
:class:`~protocol.errors.NotPermitted`, except where an operation only
reports on the link itself (``stat``, directory listings).
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import NotPermitted

__all__ = ["ESCAPE", "FileRoots", "ResolvedPath", "close_fd", "lstat_at"]

#: The message of every refusal to leave the roots.
ESCAPE = "path escapes the allowed roots"

_O_PATH = getattr(os, "O_PATH", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: Directories on the way are opened for lookups only where the OS allows it
#: (O_PATH needs search permission, not read permission).
_WALK_FLAGS = (_O_PATH or os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC
_READ_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC


def _home() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_dir
    except (ImportError, KeyError):
        return os.path.expanduser("~")


def _normalize(path: str) -> str:
    """Lexically normalise an absolute path (``//x`` becomes ``/x``)."""
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/")


def close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` in ``dir_fd`` (the directory itself for ``""``); None if missing."""
    try:
        if not name:
            return os.stat(dir_fd)
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


@dataclass(frozen=True, slots=True)
class ResolvedPath:
    """A path lexically inside ``root``: the root's real path and the components below it."""

    root: str
    parts: tuple[str, ...]

    @property
    def path(self) -> str:
        return posixpath.join(self.root, *self.parts)

    @property
    def name(self) -> str:
        """The final component, ``""`` for a root itself."""
        return self.parts[-1] if self.parts else ""

    @property
    def is_root(self) -> bool:
        return not self.parts

    def __str__(self) -> str:
        return self.path


class FileRoots:
    """The allowed roots (real paths); an empty list means the agent user's home directory."""

    def __init__(self, roots: Sequence[str]) -> None:
        given = list(roots) or [_home()]
        reals: list[str] = []
        aliases: dict[str, str] = {}
        for root in given:
            if "\0" in root:
                raise ValueError("a file root contains a NUL byte")
            expanded = os.path.expanduser(root)
            if not os.path.isabs(expanded):
                raise ValueError(f"file root {root!r} is not an absolute path")
            real = os.path.realpath(expanded)
            if real not in reals:
                reals.append(real)
            # A root may be named as configured or by its real path.
            aliases.setdefault(_normalize(expanded), real)
            aliases.setdefault(real, real)
        self.roots: tuple[str, ...] = tuple(reals)
        # Longest first, so nested roots match the closest one.
        self._aliases = sorted(aliases.items(), key=lambda item: len(item[0]), reverse=True)

    def __repr__(self) -> str:
        return f"FileRoots({list(self.roots)!r})"

    # -- lexical ---------------------------------------------------------------------------

    def locate(self, path: str) -> ResolvedPath:
        """Place ``path`` under a root without touching the file system.

        Refuses NUL bytes and ``..`` leaving the root. Symbolic links are
        checked by the walk (:meth:`open_parent`), not here.
        """
        if "\0" in path:
            raise NotPermitted(f"{ESCAPE}: the path contains a NUL byte")
        if posixpath.isabs(path):
            normal = _normalize(path)
            for alias, real in self._aliases:
                if alias == "/":
                    return ResolvedPath(real, _split(normal))
                if normal == alias or normal.startswith(alias + "/"):
                    return ResolvedPath(real, _split(normal[len(alias) :]))
            raise NotPermitted(ESCAPE)
        parts: list[str] = []
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    raise NotPermitted(ESCAPE)
                parts.pop()
            else:
                parts.append(part)
        return ResolvedPath(self.roots[0], tuple(parts))

    # -- on the file system ----------------------------------------------------------------

    def open_root(self, resolved: ResolvedPath, *, readable: bool = False) -> int:
        return os.open(resolved.root, _READ_DIR_FLAGS if readable else _WALK_FLAGS)

    def open_parent(self, resolved: ResolvedPath, *, readable: bool = False) -> tuple[int, str]:
        """A descriptor of the final component's directory, and that component's name.

        Every directory on the way is opened relative to the previous one and
        never through a symbolic link. For a root itself, the root's
        descriptor and ``""``. ``readable`` asks for a descriptor of that directory
        that can be read and fsynced, not just used for lookups. The caller closes the descriptor.
        """
        parents = resolved.parts[:-1]
        fd = self.open_root(resolved, readable=readable and not parents)
        try:
            for index, part in enumerate(parents):
                last = index == len(parents) - 1
                next_fd = open_directory_at(fd, part, readable=readable and last)
                os.close(fd)
                fd = next_fd
        except BaseException:
            close_fd(fd)
            raise
        return fd, resolved.name

    def open_directory(self, resolved: ResolvedPath, *, readable: bool = True) -> int:
        """A descriptor of the directory ``resolved`` itself (never through a symbolic link)."""
        if resolved.is_root:
            return self.open_root(resolved, readable=readable)
        parent, name = self.open_parent(resolved)
        try:
            return open_directory_at(parent, name, readable=readable)
        finally:
            os.close(parent)

    def resolve(self, path: str, *, allow_final_link: bool = False) -> ResolvedPath:
        """``path`` proven, now, to lie inside a root with no symbolic link on the way.

        The final component may be missing (a file about to be created); its
        parent directories must exist. A symbolic link as the final component
        is refused too unless ``allow_final_link`` (for operations that only
        look at the link itself).
        """
        resolved = self.locate(path)
        fd, name = self.open_parent(resolved)
        try:
            info = lstat_at(fd, name)
        finally:
            os.close(fd)
        if info is not None and stat.S_ISLNK(info.st_mode) and not allow_final_link:
            raise NotPermitted(f"{ESCAPE}: symbolic links are not followed")
        return resolved


def open_directory_at(dir_fd: int, name: str, *, readable: bool = False) -> int:
    """Open the directory ``name`` in ``dir_fd`` without following a symbolic link."""
    flags = _READ_DIR_FLAGS if readable else _WALK_FLAGS
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            info = lstat_at(dir_fd, name)
            if info is not None and stat.S_ISLNK(info.st_mode):
                raise NotPermitted(f"{ESCAPE}: symbolic links are not followed") from None
        raise
    return fd


def _split(relative: str) -> tuple[str, ...]:
    return tuple(part for part in relative.split("/") if part)
