"""Writing key and certificate files with the right permissions.

* :func:`write_secret` for private keys: the file is born mode 0600 (never a
  moment where another user could open it) and an existing file is never
  overwritten, so a second ``init`` or ``enroll`` cannot destroy a key.
* :func:`write_public` for certificates: mode 0644, replaced atomically (a
  reader sees the old file or the new one, never half of one).

Both flush to disk before returning. Parent directories must already exist.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["PUBLIC_FILE_MODE", "SECRET_FILE_MODE", "write_public", "write_secret"]

SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data``; :class:`FileExistsError` if it exists.

    ``O_EXCL`` also refuses a symlink planted at ``path``. If writing fails the
    partial file is removed, so the call can be retried.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    try:
        if sys.platform != "win32":
            os.fchmod(fd, SECRET_FILE_MODE)  # exactly 0600, whatever the umask
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)
    _fsync_directory(path.parent)


def write_public(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0644, atomically replacing any existing file."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            if sys.platform != "win32":
                os.fchmod(fd, PUBLIC_FILE_MODE)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    """Make a new directory entry durable (POSIX only; a no-op elsewhere)."""
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
