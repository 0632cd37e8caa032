"""The screen recording file format (``.screen``), written by the relay, read by consoles.

A screen session is recorded as what crossed it, timestamped::

    file   = header-line  event*
    header-line = one JSON object, UTF-8, then "\\n":
                  {"format": "helpline-screen", "version": 1, "timestamp": UNIX-SECONDS,
                   "session": ID, "technician": NAME, "device": NAME, "kind": "view"|"control"}
    event  = seconds:f64  kind:u8  length:u32  data(length)      (big-endian)

``seconds`` counts from the start of the recording. ``kind`` is one of
:class:`EventKind`: ``o`` carries tile-stream bytes from the device exactly as
they arrived (chunks split records anywhere: feed them in order to a
:class:`~protocol.screen.TileStreamParser`), ``m`` a control message from the
device and ``i`` one from the technician (a msgpack message body, as on the
wire: input events, monitor switches, control requests).

Events are appended and flushed as they happen, so a relay killed mid-session
leaves a readable prefix: :func:`read_recording` returns every complete event
and says whether the file ended cleanly.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import FrameError

__all__ = [
    "FORMAT",
    "EventKind",
    "Recording",
    "RecordingEvent",
    "RecordingFormatError",
    "encode_event",
    "encode_header",
    "read_recording",
]

FORMAT = "helpline-screen"
VERSION = 1
_EVENT = struct.Struct(">dBI")
_MAX_HEADER = 64 * 1024


class EventKind(Enum):
    OUTPUT = ord("o")
    DEVICE_MESSAGE = ord("m")
    TECHNICIAN_MESSAGE = ord("i")


class RecordingFormatError(FrameError):
    """Not a screen recording, or one whose events are corrupt."""


@dataclass(frozen=True, slots=True)
class RecordingEvent:
    seconds: float
    kind: EventKind
    data: bytes


@dataclass(frozen=True, slots=True)
class Recording:
    header: dict[str, Any]
    events: tuple[RecordingEvent, ...]
    #: False when the file ends inside an event (the relay stopped mid-write).
    complete: bool


def encode_header(**fields: Any) -> bytes:
    header = {"format": FORMAT, "version": VERSION, **fields}
    return json.dumps(header, ensure_ascii=False).encode("utf-8") + b"\n"


def encode_event(seconds: float, kind: EventKind, data: bytes) -> bytes:
    return _EVENT.pack(seconds, kind.value, len(data)) + data


def read_recording(data: bytes) -> Recording:
    """Parse a whole recording; a truncated last event is dropped (``complete=False``)."""
    end = data.find(b"\n", 0, _MAX_HEADER)
    if end < 0:
        raise RecordingFormatError("not a screen recording (no header line)")
    try:
        header = json.loads(data[:end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RecordingFormatError("not a screen recording (bad header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordingFormatError("not a screen recording")
    if header.get("version") != VERSION:
        raise RecordingFormatError(f"unsupported screen recording version {header.get('version')}")
    events = []
    offset = end + 1
    previous = 0.0
    while offset + _EVENT.size <= len(data):
        seconds, kind_byte, length = _EVENT.unpack_from(data, offset)
        start = offset + _EVENT.size
        if start + length > len(data):
            break
        try:
            kind = EventKind(kind_byte)
        except ValueError:
            raise RecordingFormatError(f"unknown event kind {kind_byte} at {offset}") from None
        if not seconds >= previous:  # also refuses NaN
            raise RecordingFormatError(f"event at {offset} goes back in time")
        previous = seconds
        events.append(RecordingEvent(seconds, kind, data[start : start + length]))
        offset = start + length
    return Recording(header, tuple(events), complete=offset == len(data))
