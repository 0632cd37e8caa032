"""Frame header layout and the incremental frame parser."""

from __future__ import annotations

import struct

import pytest

from protocol.errors import ErrorCode, FrameError, FrameTooLarge, LimitExceeded
from protocol.frames import (
    HEADER_SIZE,
    MAX_CHANNEL_ID,
    Frame,
    FrameKind,
    FrameParser,
    encode_frame,
    parse_header,
)

LIMIT = 1024
CONTROL_LIMIT = 100


def test_header_is_nine_bytes_kind_channel_length_big_endian() -> None:
    wire = encode_frame(FrameKind.DATA, 0x01020304, b"hello")
    assert HEADER_SIZE == 9
    assert wire == b"\x02" + b"\x01\x02\x03\x04" + b"\x00\x00\x00\x05" + b"hello"


def test_frame_encode_matches_encode_frame() -> None:
    frame = Frame(FrameKind.CONTROL, 7, b"\x80")
    assert frame.encode() == encode_frame(FrameKind.CONTROL, 7, b"\x80")
    assert frame.encode()[:1] == b"\x01"


@pytest.mark.parametrize("kind", list(FrameKind))
@pytest.mark.parametrize("channel", [0, 1, MAX_CHANNEL_ID])
@pytest.mark.parametrize("length", [0, 1, LIMIT])
def test_parse_header_round_trip(kind: FrameKind, channel: int, length: int) -> None:
    header = encode_frame(kind, channel, bytes(length))[:HEADER_SIZE]
    parsed = parse_header(header, LIMIT)
    assert parsed == (kind, channel, length)
    assert type(parsed[0]) is FrameKind


def test_channel_id_beyond_32_bits_cannot_be_encoded() -> None:
    with pytest.raises(struct.error):
        encode_frame(FrameKind.DATA, MAX_CHANNEL_ID + 1, b"")


@pytest.mark.parametrize("kind_byte", [0, 3, 0x7F, 0xFF])
def test_unknown_kind_is_a_frame_error(kind_byte: int) -> None:
    header = struct.pack(">BII", kind_byte, 1, 0)
    with pytest.raises(FrameError) as caught:
        parse_header(header, LIMIT)
    assert caught.value.code is ErrorCode.MALFORMED_FRAME
    assert str(kind_byte) in str(caught.value)


@pytest.mark.parametrize("kind", list(FrameKind))
def test_body_longer_than_the_limit_is_refused_by_the_header(kind: FrameKind) -> None:
    assert parse_header(struct.pack(">BII", kind, 1, LIMIT), LIMIT)[2] == LIMIT
    with pytest.raises(FrameTooLarge) as caught:
        parse_header(struct.pack(">BII", kind, 1, LIMIT + 1), LIMIT)
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    assert isinstance(caught.value, LimitExceeded)
    assert str(LIMIT + 1) in str(caught.value)


def test_control_body_longer_than_the_control_limit_is_refused_by_the_header() -> None:
    def header(kind: FrameKind, length: int) -> bytes:
        return struct.pack(">BII", kind, 0, length)

    control = FrameKind.CONTROL
    assert parse_header(header(control, CONTROL_LIMIT), LIMIT, CONTROL_LIMIT)[2] == CONTROL_LIMIT
    with pytest.raises(FrameTooLarge, match="control frame of 101 bytes") as caught:
        parse_header(header(control, CONTROL_LIMIT + 1), LIMIT, CONTROL_LIMIT)
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    # data frames are held to max_frame_size only...
    assert parse_header(header(FrameKind.DATA, LIMIT), LIMIT, CONTROL_LIMIT)[2] == LIMIT
    # ...and so are control frames when no control limit is given
    assert parse_header(header(control, LIMIT), LIMIT)[2] == LIMIT
    # a length past both limits is reported against max_frame_size
    with pytest.raises(FrameTooLarge, match=r"^frame of"):
        parse_header(header(control, LIMIT + 1), LIMIT, CONTROL_LIMIT)


def test_unknown_kind_is_reported_before_the_length() -> None:
    with pytest.raises(FrameError):
        parse_header(struct.pack(">BII", 9, 1, 2**32 - 1), LIMIT)


# -- the parser ------------------------------------------------------------------------


def test_parser_returns_one_frame() -> None:
    parser = FrameParser(LIMIT)
    assert parser.feed(encode_frame(FrameKind.DATA, 3, b"abc")) == [
        Frame(FrameKind.DATA, 3, b"abc")
    ]
    assert parser.buffered == 0


def test_parser_returns_several_frames_in_order() -> None:
    frames = [
        Frame(FrameKind.CONTROL, 0, b"\x81\xa1t\xa4ping"),
        Frame(FrameKind.DATA, 1, b"x" * 100),
        Frame(FrameKind.DATA, 2, b""),
        Frame(FrameKind.DATA, 1, b"y"),
    ]
    parser = FrameParser(LIMIT)
    assert parser.feed(b"".join(f.encode() for f in frames)) == frames
    assert parser.buffered == 0


def test_parser_byte_at_a_time() -> None:
    frames = [Frame(FrameKind.DATA, 5, b"payload"), Frame(FrameKind.CONTROL, 0, b"\xc0")]
    wire = b"".join(f.encode() for f in frames)
    parser = FrameParser(LIMIT)
    got: list[Frame] = []
    ends = []
    for i in range(len(wire)):
        new = parser.feed(wire[i : i + 1])
        if new:
            ends.append(i + 1)
        got += new
    assert got == frames
    # each frame is returned by the very byte that completes it, not later
    first_end = HEADER_SIZE + len(b"payload")
    assert ends == [first_end, len(wire)]


def test_buffered_counts_a_partial_header_then_a_partial_body() -> None:
    wire = encode_frame(FrameKind.DATA, 1, b"0123456789")
    parser = FrameParser(LIMIT)
    assert parser.feed(wire[:4]) == []
    assert parser.buffered == 4
    # the complete header is parsed and dropped from the buffer
    assert parser.feed(wire[4:HEADER_SIZE]) == []
    assert parser.buffered == 0
    assert parser.feed(wire[HEADER_SIZE : HEADER_SIZE + 6]) == []
    assert parser.buffered == 6
    assert parser.feed(wire[HEADER_SIZE + 6 :]) == [Frame(FrameKind.DATA, 1, b"0123456789")]
    assert parser.buffered == 0


def test_zero_length_body_completes_with_the_header() -> None:
    parser = FrameParser(LIMIT)
    wire = encode_frame(FrameKind.DATA, 4, b"")
    assert parser.feed(wire[:-1]) == []
    assert parser.feed(wire[-1:]) == [Frame(FrameKind.DATA, 4, b"")]
    assert parser.buffered == 0


def test_zero_length_frames_back_to_back() -> None:
    parser = FrameParser(LIMIT)
    wire = encode_frame(FrameKind.DATA, 1, b"") * 3 + encode_frame(FrameKind.CONTROL, 0, b"")
    assert parser.feed(wire) == [Frame(FrameKind.DATA, 1, b"")] * 3 + [
        Frame(FrameKind.CONTROL, 0, b"")
    ]


def test_body_of_exactly_the_limit_is_accepted() -> None:
    parser = FrameParser(LIMIT)
    body = bytes(range(256)) * (LIMIT // 256)
    assert parser.feed(encode_frame(FrameKind.DATA, 1, body)) == [Frame(FrameKind.DATA, 1, body)]


def test_oversized_frame_is_refused_before_its_body_is_buffered() -> None:
    parser = FrameParser(LIMIT)
    header = struct.pack(">BII", FrameKind.DATA, 1, 2**32 - 1)
    with pytest.raises(FrameTooLarge):
        parser.feed(header + b"\x00" * (4 * 1024 * 1024))
    # nothing of the 4 MiB that followed the header was copied
    assert parser.buffered <= HEADER_SIZE


def test_oversized_frame_is_refused_by_its_ninth_byte() -> None:
    parser = FrameParser(LIMIT)
    header = struct.pack(">BII", FrameKind.DATA, 1, LIMIT + 1)
    for i in range(HEADER_SIZE - 1):
        assert parser.feed(header[i : i + 1]) == []
    with pytest.raises(FrameTooLarge):
        parser.feed(header[-1:])
    assert parser.buffered <= HEADER_SIZE


def test_parser_holds_control_frames_to_the_control_limit() -> None:
    parser = FrameParser(LIMIT, CONTROL_LIMIT)
    at_limit = encode_frame(FrameKind.CONTROL, 0, b"c" * CONTROL_LIMIT)
    big_data = encode_frame(FrameKind.DATA, 1, b"d" * LIMIT)
    assert parser.feed(at_limit + big_data) == [
        Frame(FrameKind.CONTROL, 0, b"c" * CONTROL_LIMIT),
        Frame(FrameKind.DATA, 1, b"d" * LIMIT),
    ]
    header = struct.pack(">BII", FrameKind.CONTROL, 0, CONTROL_LIMIT + 1)
    with pytest.raises(FrameTooLarge) as caught:
        parser.feed(header + b"c" * (CONTROL_LIMIT + 1))
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    # refused by the header: nothing of the body was copied
    assert parser.buffered <= HEADER_SIZE


def test_parser_without_a_control_limit_takes_control_frames_up_to_the_frame_limit() -> None:
    body = b"c" * LIMIT
    assert FrameParser(LIMIT).feed(encode_frame(FrameKind.CONTROL, 0, body)) == [
        Frame(FrameKind.CONTROL, 0, body)
    ]


def test_unknown_kind_is_refused_before_its_body_is_buffered() -> None:
    parser = FrameParser(LIMIT)
    with pytest.raises(FrameError):
        parser.feed(struct.pack(">BII", 0, 1, 10) + b"z" * 10_000)
    assert parser.buffered <= HEADER_SIZE


def test_iter_frames_yields_good_frames_before_a_bad_header() -> None:
    good = encode_frame(FrameKind.DATA, 1, b"ok")
    bad = struct.pack(">BII", 0, 1, 0)
    frames = FrameParser(LIMIT).iter_frames(good + bad)
    assert next(frames) == Frame(FrameKind.DATA, 1, b"ok")
    with pytest.raises(FrameError):
        next(frames)


def test_iter_frames_parses_no_further_than_it_is_asked() -> None:
    parser = FrameParser(LIMIT)
    wire = encode_frame(FrameKind.DATA, 1, b"a") + encode_frame(FrameKind.DATA, 2, b"b")[:4]
    frames = parser.iter_frames(wire)
    assert next(frames) == Frame(FrameKind.DATA, 1, b"a")
    # the start of the next header has not been taken yet...
    assert parser.buffered == 0
    assert list(frames) == []
    # ...until the iteration goes on
    assert parser.buffered == 4


def test_feed_raises_for_a_bad_header_after_good_frames() -> None:
    parser = FrameParser(LIMIT)
    with pytest.raises(FrameError):
        parser.feed(encode_frame(FrameKind.DATA, 1, b"ok") + struct.pack(">BII", 0, 1, 0))


def test_websocket_message_limit_leaves_room_for_the_largest_frame() -> None:
    from protocol.frames import HEADER_SIZE, websocket_message_limit

    assert websocket_message_limit(1024) > HEADER_SIZE + 1024
