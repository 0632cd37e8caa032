"""Turning what went wrong into a ``FileReply(ok=False)``: a stable code and a safe message.

The message names the failure and the path *as the technician sent it*,
nothing of the agent's internals (no real paths of the roots, no tracebacks:
those go to the agent's log).
"""

from __future__ import annotations

import errno
import logging

from protocol.errors import ErrorCode, HelplineError
from protocol.files import FileReply

__all__ = ["MAX_MESSAGE", "describe", "failure_reply"]

log = logging.getLogger("helpline.agent.files")

MAX_MESSAGE = 1024

_BY_ERRNO: dict[int, tuple[ErrorCode, str]] = {
    errno.ENOENT: (ErrorCode.NOT_FOUND, "no such file or directory"),
    errno.EACCES: (ErrorCode.NOT_PERMITTED, "permission denied"),
    errno.EPERM: (ErrorCode.NOT_PERMITTED, "operation not permitted"),
    errno.EROFS: (ErrorCode.NOT_PERMITTED, "read-only file system"),
    errno.ELOOP: (ErrorCode.NOT_PERMITTED, "path escapes the allowed roots"),
    errno.EEXIST: (ErrorCode.CONFLICT, "already exists"),
    errno.ENOTDIR: (ErrorCode.CONFLICT, "not a directory"),
    errno.EISDIR: (ErrorCode.CONFLICT, "is a directory"),
    errno.ENOTEMPTY: (ErrorCode.CONFLICT, "directory not empty"),
    errno.EBUSY: (ErrorCode.CONFLICT, "resource busy"),
    errno.ETXTBSY: (ErrorCode.CONFLICT, "file busy"),
    errno.EXDEV: (ErrorCode.CONFLICT, "source and target are on different file systems"),
    errno.EINVAL: (ErrorCode.INVALID_MESSAGE, "invalid argument"),
    errno.ENAMETOOLONG: (ErrorCode.INVALID_MESSAGE, "file name too long"),
    errno.ENOSPC: (ErrorCode.INTERNAL, "no space left on device"),
    errno.EDQUOT: (ErrorCode.INTERNAL, "disk quota exceeded"),
    errno.EFBIG: (ErrorCode.INTERNAL, "file too large"),
    errno.EIO: (ErrorCode.INTERNAL, "input/output error"),
}


def describe(error: BaseException) -> tuple[ErrorCode, str]:
    """The code and safe text for ``error``."""
    if isinstance(error, HelplineError):
        return ErrorCode(error.code), error.message
    if isinstance(error, OSError) and error.errno in _BY_ERRNO:
        return _BY_ERRNO[error.errno]
    return ErrorCode.INTERNAL, "file operation failed"


def failure_reply(request_id: int, error: BaseException, path: str = "") -> FileReply:
    code, text = describe(error)
    if code is ErrorCode.INTERNAL:
        log.warning("file request %d on %r failed: %r", request_id, path, error)
    if path:
        text = f"{text}: {path!r}"
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "\u2026"
    return FileReply(id=request_id, ok=False, code=int(code), message=text)
