"""Screen ``view`` and ``control`` sessions: the channel's messages and its tile stream.

A screen session is a channel of kind ``view`` or ``control`` (DESIGN section 5).
Two things travel on it, in order with each other:

**The tile stream**, agent to viewer, as the channel's data (flow-controlled
bytes, split into frames at any boundary). It is a sequence of records, all
integers big-endian::

    record  = length:u32  body                  (length = size of body, in bytes)
    body    = kind:u8  ...                      (kind 1 = frame; other kinds are refused)
    frame   = kind:u8=1  flags:u8  monitor:u16  seq:u32  width:u16  height:u16
              cursor_x:u16  cursor_y:u16  tiles:u16  tile*tiles
    tile    = x:u16  y:u16  w:u16  h:u16  encoding:u8  size:u32  payload(size)

``flags`` bit 0 (:data:`FULL`) marks a key frame: the picture is ``width`` x
``height`` and the tiles cover all of it (sent at start, after a monitor
switch, and on request); bit 1 (:data:`CURSOR_VISIBLE`) says the pointer is on
this monitor at (``cursor_x``, ``cursor_y``). A frame that is not full paints
its tiles over the previous picture; a frame with no tiles only moves the
pointer. ``encoding`` is one of :class:`TileEncoding`: ``fill`` is three bytes
R, G, B for the whole rectangle; ``png``, ``jpeg`` and ``webp`` are image files
a browser decodes natively (``createImageBitmap(new Blob([payload]))``) and
draws at (``x``, ``y``). Every tile lies inside the frame.

**Control messages** (msgpack, validated like every other message):

* agent -> viewer: :class:`ScreenInfo` (the monitors, which one is shown, the
  encoding mode, whether input is accepted), sent before the first frame and
  after every change; :class:`ScreenRefused` when a request was refused (input
  in a view session, an upgrade the customer declined, an unknown key).
* viewer -> agent: :class:`ScreenAck` after drawing a frame (the agent keeps at
  most a couple of frames unacknowledged, so the frame rate follows what the
  link and the viewer can take); :class:`ScreenSelect` (monitor),
  :class:`ScreenMode` (``lossless``/``auto``/``lossy``), :class:`ScreenRefresh`
  (a full frame); input: :class:`PointerInput`, :class:`KeyInput`,
  :class:`TextInput`; :class:`ControlRequest` to ask the customer for control.

Input is only acted upon in a session the customer granted ``control``: the
relay refuses (and audits) input in a ``view`` session, and the agent, the
authority, refuses it too. Coordinates are pixels of the monitor shown.

:class:`TileStreamParser` checks a stream as it arrives, holding at most one
record header, one tile header and (unless told to skip them) the tiles of
one frame, which a record's length bounds before anything is buffered.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from .errors import FrameError, InvalidMessage, LimitExceeded
from .limits import Limits
from .messages import (
    MAX_CODE,
    MIN_CODE,
    Message,
    Role,
    Scope,
    _flag,
    _integer,
    _register,
    _spec,
    _text,
)

__all__ = [
    "CURSOR_VISIBLE",
    "FULL",
    "MAX_DIMENSION",
    "ControlRequest",
    "EncodingMode",
    "KeyAction",
    "KeyInput",
    "MonitorInfo",
    "PointerAction",
    "PointerButton",
    "PointerInput",
    "ScreenAck",
    "ScreenFrame",
    "ScreenInfo",
    "ScreenMode",
    "ScreenRefresh",
    "ScreenRefused",
    "ScreenSelect",
    "ScreenStreamError",
    "TextInput",
    "Tile",
    "TileEncoding",
    "TileStreamParser",
    "encode_frame_record",
    "input_message_types",
]

#: Largest width, height or coordinate on the wire.
MAX_DIMENSION = 65535
#: Default bound on one record (a full frame of big tiles), checked before buffering.
DEFAULT_MAX_RECORD = 64 * 1024 * 1024
FULL = 0x01
CURSOR_VISIBLE = 0x02
_KNOWN_FLAGS = FULL | CURSOR_VISIBLE
RECORD_FRAME = 1
_LENGTH = struct.Struct(">I")
_FRAME = struct.Struct(">BBHIHHHHH")
_TILE = struct.Struct(">HHHHBI")
_MAX_MONITORS = 16
_MAX_KEY = 64
_MAX_TEXT = 1024


class TileEncoding(IntEnum):
    FILL = 0
    PNG = 1
    JPEG = 2
    WEBP = 3


class EncodingMode(StrEnum):
    LOSSLESS = "lossless"  # every tile PNG (or fill): pixel-exact
    AUTO = "auto"  # text-like tiles PNG, photo-like ones JPEG; all JPEG on a slow link
    LOSSY = "lossy"  # every tile JPEG (or fill), quality adapted to the link


class PointerAction(StrEnum):
    MOVE = "move"
    DOWN = "down"
    UP = "up"
    WHEEL = "wheel"


class PointerButton(StrEnum):
    NONE = ""
    LEFT = "left"
    MIDDLE = "middle"
    RIGHT = "right"


class KeyAction(StrEnum):
    DOWN = "down"
    UP = "up"
    #: down then up: one stroke of the key.
    PRESS = "press"


# -- the tile stream ---------------------------------------------------------------------------


class ScreenStreamError(FrameError):
    """The tile stream broke its format (a tile outside the frame, a bad length...)."""


@dataclass(frozen=True, slots=True)
class Tile:
    x: int
    y: int
    width: int
    height: int
    encoding: TileEncoding
    payload: bytes


@dataclass(frozen=True, slots=True)
class ScreenFrame:
    seq: int
    monitor: int
    width: int
    height: int
    full: bool
    cursor: tuple[int, int] | None
    tiles: tuple[Tile, ...]
    #: Bytes of the record on the wire (length prefix included).
    size: int = 0


def encode_frame_record(frame: ScreenFrame) -> bytes:
    """The wire bytes of ``frame`` (its ``size`` is ignored)."""
    flags = (FULL if frame.full else 0) | (CURSOR_VISIBLE if frame.cursor is not None else 0)
    cursor_x, cursor_y = frame.cursor or (0, 0)
    parts = [
        _FRAME.pack(
            RECORD_FRAME,
            flags,
            frame.monitor,
            frame.seq,
            frame.width,
            frame.height,
            cursor_x,
            cursor_y,
            len(frame.tiles),
        )
    ]
    for tile in frame.tiles:
        parts.append(
            _TILE.pack(tile.x, tile.y, tile.width, tile.height, tile.encoding, len(tile.payload))
        )
        parts.append(tile.payload)
    body = b"".join(parts)
    return _LENGTH.pack(len(body)) + body


class TileStreamParser:
    """Incremental, bounded parser of a tile stream: feed bytes, take frames.

    ``keep_payloads=False`` checks the format without keeping tile bytes (the
    relay's check of what an agent sends): frames then come out with empty
    payloads, and memory is a few headers whatever the record sizes.
    """

    def __init__(self, max_record: int = DEFAULT_MAX_RECORD, *, keep_payloads: bool = True) -> None:
        self.max_record = max_record
        self.keep_payloads = keep_payloads
        self._buffer = bytearray()
        self._need = _LENGTH.size
        self._state = "length"
        self._left = 0  # bytes of the current record not yet consumed
        self._header: tuple[int, ...] = ()
        self._tiles: list[Tile] = []
        self._tiles_left = 0
        self._tile: tuple[int, int, int, int, TileEncoding, int] | None = None
        self._record_size = 0

    @property
    def buffered(self) -> int:
        """Bytes held: partial headers plus the kept payloads of the frame in progress."""
        return len(self._buffer) + sum(len(t.payload) for t in self._tiles)

    def feed(self, data: bytes) -> list[ScreenFrame]:
        return list(self._iter(memoryview(data)))

    def _iter(self, view: memoryview) -> Iterator[ScreenFrame]:
        while view:
            take = self._need - len(self._buffer)
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) < self._need:
                return
            chunk = bytes(self._buffer)
            self._buffer.clear()
            frame = self._step(chunk)
            if frame is not None:
                yield frame

    def _step(self, chunk: bytes) -> ScreenFrame | None:
        if self._state == "length":
            (length,) = _LENGTH.unpack(chunk)
            if length > self.max_record:
                raise LimitExceeded(
                    f"screen record of {length} bytes exceeds the limit of {self.max_record}"
                )
            if length < _FRAME.size:
                raise ScreenStreamError(f"screen record of {length} bytes is too short")
            self._left = length
            self._record_size = _LENGTH.size + length
            self._state, self._need = "frame", _FRAME.size
            return None
        if self._state == "frame":
            return self._frame_header(chunk)
        if self._state == "tile":
            return self._tile_header(chunk)
        return self._payload(chunk)

    def _consume(self, size: int) -> None:
        if size > self._left:
            raise ScreenStreamError("screen record shorter than its tiles")
        self._left -= size

    def _frame_header(self, chunk: bytes) -> ScreenFrame | None:
        kind, flags, monitor, seq, width, height, cx, cy, tiles = _FRAME.unpack(chunk)
        if kind != RECORD_FRAME:
            raise ScreenStreamError(f"unknown screen record kind {kind}")
        if flags & ~_KNOWN_FLAGS:
            raise ScreenStreamError(f"unknown screen frame flags {flags:#x}")
        if width == 0 or height == 0:
            raise ScreenStreamError("screen frame of zero size")
        self._consume(_FRAME.size)
        self._header = (flags, monitor, seq, width, height, cx, cy)
        self._tiles = []
        self._tiles_left = tiles
        return self._next_tile()

    def _next_tile(self) -> ScreenFrame | None:
        if self._tiles_left == 0:
            if self._left:
                raise ScreenStreamError("screen record longer than its tiles")
            return self._finish()
        self._state, self._need = "tile", _TILE.size
        return None

    def _tile_header(self, chunk: bytes) -> ScreenFrame | None:
        x, y, w, h, encoding_byte, size = _TILE.unpack(chunk)
        self._consume(_TILE.size)
        _flags, _monitor, _seq, width, height, _cx, _cy = self._header
        if w == 0 or h == 0 or x + w > width or y + h > height:
            raise ScreenStreamError(
                f"tile {w}x{h} at ({x}, {y}) lies outside the {width}x{height} frame"
            )
        try:
            encoding = TileEncoding(encoding_byte)
        except ValueError:
            raise ScreenStreamError(f"unknown tile encoding {encoding_byte}") from None
        if encoding is TileEncoding.FILL and size != 3:
            raise ScreenStreamError(f"a fill tile holds 3 bytes, not {size}")
        if size == 0:
            raise ScreenStreamError(f"tile at ({x}, {y}) without data")
        self._consume(size)
        self._tile = (x, y, w, h, encoding, size)
        self._state = "payload" if self.keep_payloads else "skip"
        self._need = size if self.keep_payloads else min(size, 64 * 1024)
        return None

    def _payload(self, chunk: bytes) -> ScreenFrame | None:
        assert self._tile is not None
        x, y, w, h, encoding, size = self._tile
        if self._state == "skip":
            size -= len(chunk)
            if size:
                self._tile = (x, y, w, h, encoding, size)
                self._need = min(size, 64 * 1024)
                return None
            chunk = b""
        self._tiles.append(Tile(x, y, w, h, encoding, chunk))
        self._tiles_left -= 1
        self._tile = None
        return self._next_tile()

    def _finish(self) -> ScreenFrame:
        flags, monitor, seq, width, height, cx, cy = self._header
        tiles, self._tiles = tuple(self._tiles), []
        self._state, self._need = "length", _LENGTH.size
        return ScreenFrame(
            seq=seq,
            monitor=monitor,
            width=width,
            height=height,
            full=bool(flags & FULL),
            cursor=(cx, cy) if flags & CURSOR_VISIBLE else None,
            tiles=tiles,
            size=self._record_size,
        )


# -- control messages ---------------------------------------------------------------------------

#: A monitor on the wire: [x, y, width, height] in the desktop's coordinates.
MonitorInfo = tuple[int, int, int, int]

_FROM_AGENT = frozenset({Role.AGENT, Role.RELAY})
_TO_AGENT = frozenset({Role.CONSOLE, Role.RELAY})


def _monitors() -> Any:
    coordinate = _integer(-MAX_DIMENSION, MAX_DIMENSION)
    size = _integer(1, MAX_DIMENSION)

    def check(name: str, value: Any, limits: Limits) -> tuple[MonitorInfo, ...]:
        if not isinstance(value, list | tuple):
            raise InvalidMessage(f"field {name!r} must be a list")
        if len(value) > min(_MAX_MONITORS, limits.max_list):
            raise LimitExceeded(f"field {name!r} has more than {_MAX_MONITORS} monitors")
        monitors = []
        for item in value:
            if not isinstance(item, list | tuple) or len(item) != 4:
                raise InvalidMessage(f"field {name!r} holds a malformed monitor")
            monitors.append(
                (
                    coordinate(name, item[0], limits),
                    coordinate(name, item[1], limits),
                    size(name, item[2], limits),
                    size(name, item[3], limits),
                )
            )
        return tuple(monitors)

    return check


@_register
@dataclass(frozen=True, slots=True)
class ScreenInfo(Message):
    """Agent to viewer: the monitors, the one shown, the mode, whether input is accepted."""

    TYPE = "screen.info"
    SCOPE = Scope.CHANNEL
    SENDERS = _FROM_AGENT
    monitors: tuple[MonitorInfo, ...] = _spec(_monitors())
    monitor: int = _spec(_integer(0, _MAX_MONITORS - 1))
    mode: str = _spec(_text(16, choices=frozenset(EncodingMode)))
    control: bool = _spec(_flag())


@_register
@dataclass(frozen=True, slots=True)
class ScreenRefused(Message):
    """Agent or relay to viewer: a request on this session was refused, and why."""

    TYPE = "screen.refused"
    SCOPE = Scope.CHANNEL
    SENDERS = _FROM_AGENT
    code: int = _spec(_integer(MIN_CODE, MAX_CODE))
    message: str = _spec(_text(1024), "")


@_register
@dataclass(frozen=True, slots=True)
class ScreenAck(Message):
    """Viewer to agent: frame ``seq`` (and every one before it) is drawn."""

    TYPE = "screen.ack"
    SCOPE = Scope.CHANNEL
    SENDERS = _TO_AGENT
    seq: int = _spec(_integer(0, 2**32 - 1))


@_register
@dataclass(frozen=True, slots=True)
class ScreenSelect(Message):
    """Viewer to agent: show monitor ``monitor`` (an index into ``ScreenInfo.monitors``)."""

    TYPE = "screen.select"
    SCOPE = Scope.CHANNEL
    SENDERS = _TO_AGENT
    monitor: int = _spec(_integer(0, _MAX_MONITORS - 1))


@_register
@dataclass(frozen=True, slots=True)
class ScreenMode(Message):
    """Viewer to agent: encode tiles ``lossless``, ``auto`` or ``lossy`` from now on."""

    TYPE = "screen.mode"
    SCOPE = Scope.CHANNEL
    SENDERS = _TO_AGENT
    mode: str = _spec(_text(16, choices=frozenset(EncodingMode)))


@_register
@dataclass(frozen=True, slots=True)
class ScreenRefresh(Message):
    """Viewer to agent: send a full frame next."""

    TYPE = "screen.refresh"
    SCOPE = Scope.CHANNEL
    SENDERS = _TO_AGENT


@_register
@dataclass(frozen=True, slots=True)
class ControlRequest(Message):
    """Viewer to agent: ask the customer to upgrade this view session to control."""

    TYPE = "screen.control"
    SCOPE = Scope.CHANNEL
    SENDERS = _TO_AGENT
    reason: str = _spec(_text(1024), "")


@_register
@dataclass(frozen=True, slots=True)
class PointerInput(Message):
    """Viewer to agent: the pointer moved to (x, y), a button went down or up there, or
    the wheel turned (``dx``, ``dy`` in notches; positive is right and down)."""

    TYPE = "input.pointer"
    SCOPE = Scope.CHANNEL
    SENDERS = _TO_AGENT
    action: str = _spec(_text(8, choices=frozenset(PointerAction)))
    x: int = _spec(_integer(0, MAX_DIMENSION))
    y: int = _spec(_integer(0, MAX_DIMENSION))
    button: str = _spec(_text(8, choices=frozenset(PointerButton)), "")
    dx: int = _spec(_integer(-100, 100), 0)
    dy: int = _spec(_integer(-100, 100), 0)


@_register
@dataclass(frozen=True, slots=True)
class KeyInput(Message):
    """Viewer to agent: a key went down or up, named as the browser names it:
    ``code`` is ``KeyboardEvent.code`` (the physical key: ``KeyA``, ``Enter``,
    ``ControlLeft``), ``key`` is ``KeyboardEvent.key`` (used for keys without a
    known code)."""

    TYPE = "input.key"
    SCOPE = Scope.CHANNEL
    SENDERS = _TO_AGENT
    action: str = _spec(_text(8, choices=frozenset(KeyAction)))
    code: str = _spec(_text(_MAX_KEY))
    key: str = _spec(_text(_MAX_KEY), "")


@_register
@dataclass(frozen=True, slots=True)
class TextInput(Message):
    """Viewer to agent: type ``text`` (a paste), whatever the keyboard layout."""

    TYPE = "input.text"
    SCOPE = Scope.CHANNEL
    SENDERS = _TO_AGENT
    text: str = _spec(_text(_MAX_TEXT))


def input_message_types() -> tuple[type[Message], ...]:
    """The messages that act on the customer's machine: only under ``control`` consent."""
    return (PointerInput, KeyInput, TextInput)
