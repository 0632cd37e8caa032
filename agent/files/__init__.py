"""File transfer on the agent: the allowed roots and the service behind a ``files`` channel.

* :mod:`agent.files.roots`: :class:`FileRoots`, paths proven to stay inside the
  allowed roots (no ``..`` out, no symbolic link followed, no NUL byte).
* :mod:`agent.files.operations`: stat, list, mkdir, remove, rename.
* :mod:`agent.files.transfer`: the blocking halves of pull and push (hashing,
  partial files, verification, the rename into place).
* :mod:`agent.files.service`: :class:`FileService`, one channel's requests
  run in order, data under the channel's flow control.

The wire side is :mod:`protocol.files`.
"""

from .roots import ESCAPE, FileRoots, ResolvedPath
from .service import FileService, Flush
from .transfer import PARTIAL_SUFFIX, partial_name

__all__ = [
    "ESCAPE",
    "PARTIAL_SUFFIX",
    "FileRoots",
    "FileService",
    "Flush",
    "ResolvedPath",
    "partial_name",
]
