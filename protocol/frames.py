"""Frame layout: a fixed 9-byte header, then the body.

::

    0      1              5              9
    +------+--------------+--------------+------------------+
    | kind | channel u32  | length u32   | body (length)    |
    +------+--------------+--------------+------------------+

``kind`` is :attr:`FrameKind.CONTROL` (body: a msgpack map, see
:mod:`protocol.messages`) or :attr:`FrameKind.DATA` (body: raw channel bytes).
Channel 0 is the connection itself; channels 1..2**32-1 are assigned by the
relay and are the same on both legs, so the relay can route a data frame by
its header alone and forward the very same bytes.

One WebSocket binary message carries exactly one frame, but the length field
makes the format self-delimiting, so the parser also works on a byte stream.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from .errors import FrameError, FrameTooLarge

__all__ = [
    "HEADER_SIZE",
    "MAX_CHANNEL_ID",
    "Frame",
    "FrameKind",
    "FrameParser",
    "encode_frame",
    "parse_header",
    "websocket_message_limit",
]

_HEADER = struct.Struct(">BII")
HEADER_SIZE = _HEADER.size
MAX_CHANNEL_ID = 2**32 - 1


class FrameKind(IntEnum):
    CONTROL = 1
    DATA = 2


@dataclass(frozen=True, slots=True)
class Frame:
    kind: FrameKind
    channel: int
    body: bytes

    def encode(self) -> bytes:
        return encode_frame(self.kind, self.channel, self.body)


def websocket_message_limit(max_frame_size: int) -> int:
    """The message size limit to give a WebSocket library so that every frame up to
    ``max_frame_size`` fits: the header plus the body, plus one byte because aiohttp
    refuses a message of exactly its limit."""
    return HEADER_SIZE + max_frame_size + 1


def encode_frame(kind: FrameKind, channel: int, body: bytes) -> bytes:
    """The wire bytes of one frame."""
    return _HEADER.pack(kind, channel, len(body)) + body


def parse_header(
    header: bytes, max_frame_size: int, max_control_size: int | None = None
) -> tuple[FrameKind, int, int]:
    """Decode and check a header: ``(kind, channel, length)``.

    Raises :class:`FrameError` for an unknown kind and :class:`FrameTooLarge`
    for a body longer than ``max_frame_size``, or than ``max_control_size``
    (if given) for a control frame; both before any body is read.
    """
    kind_byte, channel, length = _HEADER.unpack(header)
    try:
        kind = FrameKind(kind_byte)
    except ValueError:
        raise FrameError(f"unknown frame kind {kind_byte}") from None
    if length > max_frame_size:
        raise FrameTooLarge(f"frame of {length} bytes exceeds limit of {max_frame_size}")
    if kind is FrameKind.CONTROL and max_control_size is not None and length > max_control_size:
        raise FrameTooLarge(f"control frame of {length} bytes exceeds limit of {max_control_size}")
    return kind, channel, length


class FrameParser:
    """Incremental parser: feed bytes, take complete frames.

    Holds at most one header plus one body of at most ``max_frame_size``
    bytes (``max_control_size`` for a control frame, if given), whatever the
    peer sends.
    """

    def __init__(self, max_frame_size: int, max_control_size: int | None = None) -> None:
        self._max_frame_size = max_frame_size
        self._max_control_size = max_control_size
        self._buffer = bytearray()
        self._pending: tuple[FrameKind, int, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data``; return the frames it completed, in order.

        A header is checked as soon as it is complete, before any of the body
        that follows it in ``data`` is copied into the buffer.
        """
        return list(self.iter_frames(data))

    def iter_frames(self, data: bytes) -> Iterator[Frame]:
        """Like :meth:`feed`, but yield each frame before parsing the next header.

        A bad header after good frames in the same ``data`` then raises only
        once those frames have been handled, as it would had the bytes come
        one read at a time. Stop iterating and the rest of ``data`` is dropped.
        """
        view = memoryview(data)
        while view:
            if self._pending is None:
                take = HEADER_SIZE - len(self._buffer)
                self._buffer += view[:take]
                view = view[take:]
                if len(self._buffer) < HEADER_SIZE:
                    break
                self._pending = parse_header(
                    bytes(self._buffer), self._max_frame_size, self._max_control_size
                )
                self._buffer.clear()
            kind, channel, length = self._pending
            take = length - len(self._buffer)
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == length:
                frame = Frame(kind, channel, bytes(self._buffer))
                self._buffer.clear()
                self._pending = None
                yield frame
