"""The screen tile stream and the screen recording format: round trips, byte-at-a-time
delivery, bounded buffering, and every malformed input refused with a clear error."""

from __future__ import annotations

import struct

import pytest

from protocol.errors import ErrorCode, FrameError, LimitExceeded
from protocol.screen import (
    ScreenFrame,
    ScreenStreamError,
    Tile,
    TileEncoding,
    TileStreamParser,
    encode_frame_record,
    input_message_types,
)
from protocol.screenrec import (
    EventKind,
    RecordingFormatError,
    encode_event,
    encode_header,
    read_recording,
)

PNG = b"\x89PNG fake image bytes"
FULL = ScreenFrame(
    seq=1,
    monitor=0,
    width=100,
    height=50,
    full=True,
    cursor=(5, 6),
    tiles=(
        Tile(0, 0, 64, 50, TileEncoding.PNG, PNG),
        Tile(64, 0, 36, 50, TileEncoding.FILL, b"\x01\x02\x03"),
    ),
)
DELTA = ScreenFrame(
    2, 0, 100, 50, False, None, (Tile(10, 10, 5, 5, TileEncoding.JPEG, b"j" * 300),)
)
POINTER_ONLY = ScreenFrame(3, 1, 100, 50, False, (99, 49), ())


def sized(frame: ScreenFrame) -> ScreenFrame:
    return ScreenFrame(
        frame.seq, frame.monitor, frame.width, frame.height, frame.full, frame.cursor,
        frame.tiles, len(encode_frame_record(frame)),
    )  # fmt: skip


def test_round_trip_whole_and_byte_at_a_time() -> None:
    stream = b"".join(encode_frame_record(f) for f in (FULL, DELTA, POINTER_ONLY))
    assert TileStreamParser().feed(stream) == [sized(FULL), sized(DELTA), sized(POINTER_ONLY)]
    parser = TileStreamParser()
    frames = []
    for i in range(len(stream)):
        frames += parser.feed(stream[i : i + 1])
    assert frames == [sized(FULL), sized(DELTA), sized(POINTER_ONLY)]
    assert parser.buffered == 0


def test_skipping_payloads_checks_the_format_and_keeps_no_tile_bytes() -> None:
    big = ScreenFrame(
        1, 0, 64, 64, True, None, (Tile(0, 0, 64, 64, TileEncoding.PNG, b"p" * 200_000),)
    )
    parser = TileStreamParser(keep_payloads=False)
    record = encode_frame_record(big)
    frames = []
    for start in range(0, len(record), 7000):
        frames += parser.feed(record[start : start + 7000])
        assert parser.buffered <= 64 * 1024
    assert len(frames) == 1
    assert frames[0].tiles[0].payload == b""
    assert frames[0].tiles[0].width == 64


def raw_frame(
    *,
    kind: int = 1,
    flags: int = 1,
    width: int = 100,
    height: int = 50,
    tiles: list[tuple[int, int, int, int, int, bytes]] | None = None,
    count: int | None = None,
    length_delta: int = 0,
) -> bytes:
    tiles = [(0, 0, 10, 10, 1, b"img")] if tiles is None else tiles
    body = struct.pack(
        ">BBHIHHHHH", kind, flags, 0, 1, width, height, 0, 0, len(tiles) if count is None else count
    )
    for x, y, w, h, encoding, payload in tiles:
        body += struct.pack(">HHHHBI", x, y, w, h, encoding, len(payload)) + payload
    return struct.pack(">I", len(body) + length_delta) + body


BAD = {
    "unknown record kind": (raw_frame(kind=9), "unknown screen record kind 9"),
    "unknown flags": (raw_frame(flags=0x80), "unknown screen frame flags 0x80"),
    "zero width": (raw_frame(width=0), "zero size"),
    "zero height": (raw_frame(height=0), "zero size"),
    "tile outside": (raw_frame(tiles=[(95, 0, 10, 10, 1, b"x")]), "lies outside the 100x50"),
    "tile below": (raw_frame(tiles=[(0, 45, 10, 10, 1, b"x")]), "lies outside"),
    "empty tile": (raw_frame(tiles=[(0, 0, 0, 10, 1, b"x")]), "lies outside"),
    "flat tile": (raw_frame(tiles=[(0, 0, 10, 0, 1, b"x")]), "lies outside"),
    "unknown encoding": (raw_frame(tiles=[(0, 0, 10, 10, 7, b"x")]), "unknown tile encoding 7"),
    "fill of 4 bytes": (raw_frame(tiles=[(0, 0, 10, 10, 0, b"abcd")]), "holds 3 bytes, not 4"),
    "tile without data": (raw_frame(tiles=[(0, 0, 10, 10, 2, b"")]), "without data"),
    "record too short": (struct.pack(">I", 3) + b"abc", "is too short"),
    "more tiles than the record": (raw_frame(length_delta=-3), "shorter than its tiles"),
    "more record than tiles": (raw_frame(length_delta=2) + b"\0\0", "longer than its tiles"),
    "fewer tiles than announced": (
        raw_frame(count=2) + encode_frame_record(DELTA),
        "shorter than its tiles",
    ),
}


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_streams_are_refused(name: str, keep: bool) -> None:
    data, needle = BAD[name]
    with pytest.raises(ScreenStreamError, match=needle) as caught:
        TileStreamParser(keep_payloads=keep).feed(encode_frame_record(FULL) + data)
    assert caught.value.code is ErrorCode.MALFORMED_FRAME
    assert isinstance(caught.value, FrameError)


def test_record_length_is_checked_before_buffering() -> None:
    parser = TileStreamParser(max_record=1000)
    with pytest.raises(LimitExceeded, match="1001 bytes exceeds the limit of 1000"):
        parser.feed(struct.pack(">I", 1001))
    assert parser.buffered == 0


def test_input_message_types() -> None:
    assert [cls.TYPE for cls in input_message_types()] == [
        "input.pointer",
        "input.key",
        "input.text",
    ]


# -- recordings -----------------------------------------------------------------------------


def recording(*events: tuple[float, EventKind, bytes]) -> bytes:
    return encode_header(session="s1", device="desk") + b"".join(
        encode_event(t, k, d) for t, k, d in events
    )


def test_recording_round_trip_and_truncated_tail() -> None:
    data = recording(
        (0.0, EventKind.OUTPUT, b"abc"),
        (0.5, EventKind.DEVICE_MESSAGE, b"m"),
        (0.5, EventKind.TECHNICIAN_MESSAGE, b""),
    )
    parsed = read_recording(data)
    assert parsed.complete
    assert parsed.header["session"] == "s1"
    assert parsed.header["format"] == "helpline-screen"
    assert [(e.seconds, e.kind, e.data) for e in parsed.events] == [
        (0.0, EventKind.OUTPUT, b"abc"),
        (0.5, EventKind.DEVICE_MESSAGE, b"m"),
        (0.5, EventKind.TECHNICIAN_MESSAGE, b""),
    ]
    # a relay killed mid-write: every whole event is kept
    for cut, kept in ((1, 2), (12, 2), (14, 1), (15, 1)):
        truncated = read_recording(data[:-cut])
        assert not truncated.complete
        assert len(truncated.events) == kept


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"no header line at all", "no header line"),
        (b"\xff\xfe\n", "bad header"),
        (b"{not json\n", "bad header"),
        (b"[1, 2]\n", "not a screen recording"),
        (b'{"format": "asciicast"}\n', "not a screen recording"),
        (
            b'{"format": "helpline-screen", "version": 2}\n',
            "unsupported screen recording version 2",
        ),
        (
            recording((0.0, EventKind.OUTPUT, b"a"))[:-14] + struct.pack(">dBI", 0.0, 120, 0),
            "unknown event kind 120",
        ),
        (
            recording((1.0, EventKind.OUTPUT, b""), (0.5, EventKind.OUTPUT, b"")),
            "goes back in time",
        ),
        (recording((float("nan"), EventKind.OUTPUT, b"")), "goes back in time"),
    ],
)
def test_bad_recordings_are_refused(data: bytes, needle: str) -> None:
    with pytest.raises(RecordingFormatError, match=needle):
        read_recording(data)
