"""Messages of a ``files`` channel: requests, replies and the end of a transfer.

The console (or the relay's SFTP server, on its behalf) asks; the agent
answers. One operation runs at a time on a channel; file bytes travel as the
channel's data frames, under its flow control.

* ``list``/``stat``/``mkdir``/``remove``/``rename``: one request, one reply.
  Listings come in pages of at most ``Limits.max_list`` entries (``more``).
* ``pull``: the reply gives size, mode, mtime and the offset data starts at
  (the requester's partial copy is resumed when its ``prefix_sha256`` matches
  the file's first ``offset`` bytes), then data frames, then :class:`FileDone`
  with the SHA-256 of the whole file.
* ``push``: the reply tells how much of a partial upload is already there
  (``offset``, ``prefix_sha256``); the requester checks that prefix against its
  own file and sends ``write`` with the offset it starts at (the partial's size,
  or 0), then data frames, then :class:`FileDone`; the agent verifies the hash,
  renames the file into place and replies.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .errors import InvalidMessage, LimitExceeded
from .limits import Limits
from .messages import Message, Role, Scope, _flag, _integer, _register, _spec, _text

__all__ = ["FileDone", "FileEntry", "FileOp", "FileReply", "FileRequest"]

_MAX_OFFSET = 2**62
_MAX_PATH = 4096
_SHA256_HEX = 64


class FileOp(StrEnum):
    LIST = "list"
    STAT = "stat"
    PULL = "pull"
    PUSH = "push"
    WRITE = "write"
    MKDIR = "mkdir"
    REMOVE = "remove"
    RENAME = "rename"


#: A listing entry on the wire: [name, kind, size, mode, mtime_ns].
FileEntry = tuple[str, str, int, int, int]
_KINDS = frozenset({"file", "dir", "link", "other"})


def _entries() -> Any:
    name_check = _text(255)
    kind_check = _text(8, choices=_KINDS)
    number = _integer(0, 2**63)

    def check(name: str, value: Any, limits: Limits) -> tuple[FileEntry, ...]:
        if not isinstance(value, list | tuple):
            raise InvalidMessage(f"field {name!r} must be a list")
        if len(value) > limits.max_list:
            raise LimitExceeded(f"field {name!r} has more than {limits.max_list} items")
        entries = []
        for item in value:
            if not isinstance(item, list | tuple) or len(item) != 5:
                raise InvalidMessage(f"field {name!r} holds a malformed entry")
            entries.append(
                (
                    name_check(name, item[0], limits),
                    kind_check(name, item[1], limits),
                    number(name, item[2], limits),
                    number(name, item[3], limits),
                    number(name, item[4], limits),
                )
            )
        return tuple(entries)

    return check


_REQUESTERS = frozenset({Role.CONSOLE, Role.RELAY})
_ANSWERERS = frozenset({Role.AGENT, Role.RELAY})


@_register
@dataclass(frozen=True, slots=True)
class FileRequest(Message):
    TYPE = "file.request"
    SCOPE = Scope.CHANNEL
    SENDERS = _REQUESTERS
    id: int = _spec(_integer(0, 2**31 - 1))
    op: str = _spec(_text(8, choices=frozenset(FileOp)))
    path: str = _spec(_text(_MAX_PATH))
    #: rename: the new path.
    target: str = _spec(_text(_MAX_PATH), "")
    #: pull: bytes the requester already has; write: where its data starts; list: first entry.
    offset: int = _spec(_integer(0, _MAX_OFFSET), 0)
    #: push: the file's size.
    size: int = _spec(_integer(0, _MAX_OFFSET), 0)
    mode: int = _spec(_integer(0, 0o7777), 0o644)
    mtime_ns: int = _spec(_integer(0, 2**63), 0)
    #: pull: SHA-256 (hex) of the requester's first ``offset`` bytes.
    prefix_sha256: str = _spec(_text(_SHA256_HEX), "")
    #: remove: a whole tree; mkdir: parents too.
    recursive: bool = _spec(_flag(), False)


@_register
@dataclass(frozen=True, slots=True)
class FileReply(Message):
    TYPE = "file.reply"
    SCOPE = Scope.CHANNEL
    SENDERS = _ANSWERERS
    id: int = _spec(_integer(0, 2**31 - 1))
    ok: bool = _spec(_flag())
    code: int = _spec(_integer(0, 4999), 0)
    message: str = _spec(_text(1024), "")
    kind: str = _spec(_text(8), "")
    size: int = _spec(_integer(0, _MAX_OFFSET), 0)
    mode: int = _spec(_integer(0, 0o177777), 0)
    mtime_ns: int = _spec(_integer(0, 2**63), 0)
    offset: int = _spec(_integer(0, _MAX_OFFSET), 0)
    prefix_sha256: str = _spec(_text(_SHA256_HEX), "")
    sha256: str = _spec(_text(_SHA256_HEX), "")
    entries: tuple[FileEntry, ...] = _spec(_entries(), ())
    more: bool = _spec(_flag(), False)


@_register
@dataclass(frozen=True, slots=True)
class FileDone(Message):
    """The sender finished sending a file's bytes: its total size and SHA-256."""

    TYPE = "file.done"
    SCOPE = Scope.CHANNEL
    id: int = _spec(_integer(0, 2**31 - 1))
    size: int = _spec(_integer(0, _MAX_OFFSET))
    sha256: str = _spec(_text(_SHA256_HEX))
