"""Typed control messages: round trips, validation, limits, malformed bodies."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from protocol.errors import (
    ErrorCode,
    FrameError,
    InvalidMessage,
    LimitExceeded,
    UnknownMessage,
)
from protocol.limits import Limits
from protocol.messages import (
    MAX_WINDOW,
    ChannelAccept,
    ChannelClose,
    ChannelOpen,
    ChannelReject,
    DeviceStatus,
    Goodbye,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Inventory,
    Message,
    Role,
    Scope,
    WindowAdjust,
    decode_message,
    message_types,
)

LIMITS = Limits()

#: One fully populated instance of every registered message type.
SAMPLES: dict[str, Message] = {
    "hello": Hello(
        version=1,
        role="console",
        software="helpline-console/0.1",
        capabilities=("shell", "files"),
        max_frame_size=65536,
    ),
    "bye": Goodbye(code=4001, message="malformed frame"),
    "ping": Heartbeat(seq=2**53),
    "pong": HeartbeatAck(seq=0),
    "inventory": Inventory(
        hostname="desk-01",
        os="Linux 6.1",
        user="ana",
        agent_version="0.1.0",
        addresses=("10.0.0.5", "fe80::1"),
    ),
    "device": DeviceStatus(device_id="dev-1", name="Ana's desk", online=True),
    "open": ChannelOpen(kind="shell", window=MAX_WINDOW, params={"cols": "80", "rows": "24"}),
    "accept": ChannelAccept(window=0),
    "reject": ChannelReject(code=4450, message="consent denied"),
    "window": WindowAdjust(increment=1),
    "close": ChannelClose(code=4006, message="flow control"),
}


def body_of(sample: Message, /, **changes: Any) -> bytes:
    wire = sample.to_wire()
    wire.update(changes)
    return msgpack.packb(wire, use_bin_type=True)


def required_fields(cls: type[Message]) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def test_every_registered_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(message_types())
    for name, sample in SAMPLES.items():
        assert type(sample) is message_types()[name]


def test_wire_names_are_stable() -> None:
    assert {name: cls.__name__ for name, cls in message_types().items()} == {
        "hello": "Hello",
        "bye": "Goodbye",
        "ping": "Heartbeat",
        "pong": "HeartbeatAck",
        "inventory": "Inventory",
        "device": "DeviceStatus",
        "open": "ChannelOpen",
        "accept": "ChannelAccept",
        "reject": "ChannelReject",
        "window": "WindowAdjust",
        "close": "ChannelClose",
    }


def test_message_types_is_a_copy() -> None:
    types = message_types()
    assert isinstance(types, dict)
    types.clear()
    assert len(message_types()) == len(SAMPLES)


def test_scopes_and_senders() -> None:
    channel_types = {"open", "accept", "reject", "window", "close"}
    for name, cls in message_types().items():
        expected = Scope.CHANNEL if name in channel_types else Scope.CONNECTION
        assert cls.SCOPE is expected, name
    everyone = frozenset(Role)
    assert {name: cls.SENDERS for name, cls in message_types().items()} == {
        "hello": everyone,
        "bye": everyone,
        "ping": everyone,
        "pong": everyone,
        "inventory": {Role.AGENT},
        "device": {Role.RELAY},
        "open": {Role.RELAY},
        "accept": {Role.AGENT, Role.CONSOLE},
        "reject": {Role.AGENT, Role.CONSOLE},
        "window": everyone,
        "close": everyone,
    }


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str) -> None:
    sample = SAMPLES[name]
    decoded = decode_message(sample.encode(), LIMITS)
    assert type(decoded) is type(sample)
    assert decoded == sample


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_wire_form_is_a_map_with_the_type_and_every_field(name: str) -> None:
    sample = SAMPLES[name]
    wire = msgpack.unpackb(sample.encode(), raw=False)
    assert wire["t"] == name
    assert set(wire) == {"t"} | {f.name for f in dataclasses.fields(sample)}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip_with_only_required_fields(name: str) -> None:
    cls = message_types()[name]
    full = SAMPLES[name].to_wire()
    minimal = {"t": name} | {f: full[f] for f in required_fields(cls)}
    decoded = decode_message(msgpack.packb(minimal), LIMITS)
    assert type(decoded) is cls
    for f in dataclasses.fields(cls):
        if f.name in minimal:
            assert getattr(decoded, f.name) == minimal[f.name]
        elif f.default_factory is not dataclasses.MISSING:
            assert getattr(decoded, f.name) == f.default_factory()
        else:
            assert getattr(decoded, f.name) == f.default


def test_defaults() -> None:
    hello = decode_message(msgpack.packb({"t": "hello", "version": 1, "role": "agent"}), LIMITS)
    assert hello == Hello(
        version=1, role="agent", software="", capabilities=(), max_frame_size=256 * 1024
    )
    close = decode_message(msgpack.packb({"t": "close"}), LIMITS)
    assert close == ChannelClose(code=1000, message="")


def test_lists_decode_to_tuples_and_maps_to_dicts() -> None:
    hello = decode_message(SAMPLES["hello"].encode(), LIMITS)
    assert isinstance(hello, Hello)
    assert hello.capabilities == ("shell", "files")
    assert isinstance(hello.capabilities, tuple)
    opened = decode_message(SAMPLES["open"].encode(), LIMITS)
    assert isinstance(opened, ChannelOpen)
    assert dict(opened.params) == {"cols": "80", "rows": "24"}


def test_default_params_are_not_shared() -> None:
    first = ChannelOpen(kind="a", window=1)
    second = ChannelOpen(kind="b", window=1)
    assert first.params == {}
    assert first.params is not second.params


def test_unknown_extra_fields_are_ignored() -> None:
    body = msgpack.packb(
        {"t": "ping", "seq": 5, "future": {"nested": [1, 2.5, None]}, "flag": True}
    )
    assert decode_message(body, LIMITS) == Heartbeat(seq=5)
    newer_hello = body_of(SAMPLES["hello"], compression=["zstd"], resume_token="abc")
    assert decode_message(newer_hello, LIMITS) == SAMPLES["hello"]


# -- missing and wrongly typed fields ------------------------------------------------

MISSING_CASES = [
    (name, field) for name, cls in sorted(message_types().items()) for field in required_fields(cls)
]


def test_missing_cases_cover_every_type_with_required_fields() -> None:
    assert {name for name, _ in MISSING_CASES} == set(SAMPLES) - {"close"}


@pytest.mark.parametrize(("name", "field"), MISSING_CASES)
def test_missing_required_field(name: str, field: str) -> None:
    wire = SAMPLES[name].to_wire()
    del wire[field]
    with pytest.raises(InvalidMessage) as caught:
        decode_message(msgpack.packb(wire, use_bin_type=True), LIMITS)
    assert caught.value.code is ErrorCode.INVALID_MESSAGE
    assert repr(field) in str(caught.value)


WRONG_VALUES: dict[type, list[Any]] = {
    # bool is a subclass of int in Python; it must not pass as one
    int: [True, False, "1", 1.0, None, [1], {"a": 1}, b"\x01"],
    str: [1, b"text", None, True, ["text"], {"a": "b"}, 1.5],
    bool: [1, 0, "true", None, [True]],
    tuple: ["abc", 5, None, {"a": "b"}, [1], ["ok", 2], [None], [b"bytes"]],
    dict: [["a"], "a", 5, None, {"a": 1}, {"a": None}, {"a": ["b"]}, {b"k": "v"}, {"k": b"v"}],
}

WRONG_TYPE_CASES = [
    (name, f.name, bad)
    for name, sample in sorted(SAMPLES.items())
    for f in dataclasses.fields(sample)
    for bad in WRONG_VALUES[type(getattr(sample, f.name))]
]


@pytest.mark.parametrize(("name", "field", "bad"), WRONG_TYPE_CASES)
def test_wrong_type(name: str, field: str, bad: Any) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_message(body_of(SAMPLES[name], **{field: bad}), LIMITS)
    assert caught.value.code is ErrorCode.INVALID_MESSAGE
    assert repr(field) in str(caught.value)


def test_role_must_be_a_known_role() -> None:
    with pytest.raises(InvalidMessage, match="unknown value"):
        decode_message(body_of(SAMPLES["hello"], role="admin"), LIMITS)
    with pytest.raises(InvalidMessage):
        decode_message(body_of(SAMPLES["hello"], role="Agent"), LIMITS)


RANGES = [
    ("hello", "version", 1, 65535),
    ("hello", "max_frame_size", 1024, 2**30),
    ("bye", "code", 1000, 4999),
    ("ping", "seq", 0, 2**53),
    ("pong", "seq", 0, 2**53),
    ("open", "window", 0, MAX_WINDOW),
    ("accept", "window", 0, MAX_WINDOW),
    ("reject", "code", 1000, 4999),
    ("window", "increment", 1, MAX_WINDOW),
    ("close", "code", 1000, 4999),
]


@pytest.mark.parametrize(("name", "field", "low", "high"), RANGES)
def test_integer_bounds(name: str, field: str, low: int, high: int) -> None:
    for good in (low, high):
        decoded = decode_message(body_of(SAMPLES[name], **{field: good}), LIMITS)
        assert getattr(decoded, field) == good
    for bad in (low - 1, high + 1, -(2**63), 2**64 - 1):
        with pytest.raises(InvalidMessage, match="out of range"):
            decode_message(body_of(SAMPLES[name], **{field: bad}), LIMITS)


def test_max_window_is_the_largest_signed_32_bit_value() -> None:
    assert MAX_WINDOW == 2**31 - 1


# -- lengths against the limits -------------------------------------------------------

#: (type, field, longest allowed string) for every string field.
STRING_BOUNDS = [
    ("hello", "software", 128),
    ("bye", "message", 1024),
    ("inventory", "hostname", 255),
    ("inventory", "os", 255),
    ("inventory", "user", 255),
    ("inventory", "agent_version", 64),
    ("device", "device_id", 64),
    ("device", "name", 255),
    ("open", "kind", 32),
    ("reject", "message", 1024),
    ("close", "message", 1024),
]


@pytest.mark.parametrize(("name", "field", "bound"), STRING_BOUNDS)
def test_string_field_bounds(name: str, field: str, bound: int) -> None:
    # lengths are in characters, not bytes
    longest = "\u00e9" * bound
    decoded = decode_message(body_of(SAMPLES[name], **{field: longest}), LIMITS)
    assert getattr(decoded, field) == longest
    with pytest.raises(LimitExceeded) as caught:
        decode_message(body_of(SAMPLES[name], **{field: "x" * (bound + 1)}), LIMITS)
    assert caught.value.code is ErrorCode.LIMIT_EXCEEDED
    assert repr(field) in str(caught.value)


def test_every_string_field_has_a_bound_case() -> None:
    fields = {
        (name, f.name)
        for name, sample in SAMPLES.items()
        for f in dataclasses.fields(sample)
        if isinstance(getattr(sample, f.name), str)
    }
    assert fields - {(name, field) for name, field, _ in STRING_BOUNDS} == {("hello", "role")}


def test_role_length_is_checked_before_its_value() -> None:
    with pytest.raises(LimitExceeded):
        decode_message(body_of(SAMPLES["hello"], role="a" * 17), LIMITS)


def test_max_string_tightens_every_field_bound() -> None:
    limits = Limits(max_string=8)
    assert decode_message(body_of(SAMPLES["hello"], software="x" * 8), limits)
    with pytest.raises(LimitExceeded, match="longer than 8"):
        decode_message(body_of(SAMPLES["hello"], software="x" * 9), limits)
    with pytest.raises(LimitExceeded, match="longer than 8"):
        decode_message(body_of(SAMPLES["hello"], capabilities=["x" * 9]), limits)
    with pytest.raises(LimitExceeded, match="longer than 8"):
        decode_message(body_of(SAMPLES["open"], params={"k": "v" * 9}), limits)


def test_list_items_are_bounded() -> None:
    assert decode_message(body_of(SAMPLES["hello"], capabilities=["c" * 64]), LIMITS)
    with pytest.raises(LimitExceeded):
        decode_message(body_of(SAMPLES["hello"], capabilities=["c" * 65]), LIMITS)
    with pytest.raises(LimitExceeded):
        decode_message(body_of(SAMPLES["inventory"], addresses=["a" * 65]), LIMITS)


def test_list_length_at_the_limit_is_accepted() -> None:
    limits = Limits(max_list=4)
    decoded = decode_message(body_of(SAMPLES["hello"], capabilities=list("abcd")), limits)
    assert isinstance(decoded, Hello)
    assert decoded.capabilities == tuple("abcd")


def test_list_over_the_limit_is_refused_by_the_msgpack_guard() -> None:
    # msgpack itself is told max_array_len=max_list, so an over-long list never
    # reaches the field check: it is refused as a malformed body.
    limits = Limits(max_list=4)
    with pytest.raises(FrameError):
        decode_message(body_of(SAMPLES["hello"], capabilities=list("abcde")), limits)
    with pytest.raises(FrameError):
        decode_message(body_of(SAMPLES["ping"], extra=list(range(5))), limits)


def test_list_over_the_limit_in_from_wire() -> None:
    limits = Limits(max_list=4)
    wire = SAMPLES["inventory"].to_wire() | {"addresses": ["a"] * 5}
    with pytest.raises(LimitExceeded, match="more than 4 items"):
        Inventory.from_wire(wire, limits)
    wire["addresses"] = ("a",) * 4
    assert Inventory.from_wire(wire, limits).addresses == ("a",) * 4


def test_map_length_bounds() -> None:
    limits = Limits(max_list=4)
    four = {str(i): "v" for i in range(4)}
    decoded = decode_message(body_of(SAMPLES["open"], params=four), limits)
    assert isinstance(decoded, ChannelOpen)
    assert dict(decoded.params) == four
    with pytest.raises(LimitExceeded, match="more than 4 items"):
        decode_message(body_of(SAMPLES["open"], params=four | {"4": "v"}), limits)


def test_map_keys_and_values_are_bounded() -> None:
    with pytest.raises(LimitExceeded):
        decode_message(body_of(SAMPLES["open"], params={"k" * 1025: "v"}), LIMITS)
    with pytest.raises(LimitExceeded):
        decode_message(body_of(SAMPLES["open"], params={"k": "v" * 1025}), LIMITS)


def test_top_level_map_allows_some_unknown_fields_but_not_many() -> None:
    limits = Limits(max_list=4)
    # the message map may have max_list + 16 entries in all
    some = {f"x{i}": i for i in range(18)}
    assert decode_message(msgpack.packb({"t": "ping", "seq": 1} | some), limits) == Heartbeat(seq=1)
    many = {f"x{i}": i for i in range(19)}
    with pytest.raises(FrameError):
        decode_message(msgpack.packb({"t": "ping", "seq": 1} | many), limits)


def test_control_body_size_is_checked_before_decoding() -> None:
    limits = Limits(max_frame_size=4096, max_control_size=1024)
    head = msgpack.packb({"t": "ping", "seq": 1, "pad": ""})
    pad = 1024 - len(head) - 2  # a str of 32..255 chars takes 2 bytes of header, not 1
    exact = msgpack.packb({"t": "ping", "seq": 1, "pad": "p" * pad})
    assert len(exact) == 1024
    assert decode_message(exact, limits) == Heartbeat(seq=1)
    # one byte more is refused by its size alone: even garbage gets LimitExceeded
    with pytest.raises(LimitExceeded) as caught:
        decode_message(b"\xc1" * 1025, limits)
    assert caught.value.code is ErrorCode.LIMIT_EXCEEDED


# -- not a message at all -------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["nope", "Hello", "", "x" * 5000], ids=["nope", "case", "empty", "long"]
)
def test_unknown_type(kind: str) -> None:
    with pytest.raises(UnknownMessage) as caught:
        decode_message(msgpack.packb({"t": kind, "seq": 1}), LIMITS)
    assert caught.value.code is ErrorCode.UNKNOWN_MESSAGE
    # the peer's text is echoed back only in part
    assert len(str(caught.value)) < 100


@pytest.mark.parametrize("kind", [None, 1, b"ping", ["ping"], True])
def test_type_that_is_not_a_string(kind: Any) -> None:
    with pytest.raises(InvalidMessage, match="without a type"):
        decode_message(msgpack.packb({"t": kind, "seq": 1}, use_bin_type=True), LIMITS)


def test_type_missing() -> None:
    with pytest.raises(InvalidMessage, match="without a type"):
        decode_message(msgpack.packb({"seq": 1}), LIMITS)


@pytest.mark.parametrize("value", [[], ["ping"], 5, "ping", None, True, b"ping", 1.5], ids=repr)
def test_body_that_is_not_a_map(value: Any) -> None:
    with pytest.raises(FrameError, match="not a map") as caught:
        decode_message(msgpack.packb(value, use_bin_type=True), LIMITS)
    assert caught.value.code is ErrorCode.MALFORMED_FRAME


GARBAGE = {
    "empty": b"",
    "reserved byte": b"\xc1",
    "truncated map": b"\x82\xa1t\xa4ping",
    "truncated string": b"\x81\xa1t\xa9pi",
    "trailing bytes": msgpack.packb({"t": "ping", "seq": 1}) + b"\x00",
    "integer key": msgpack.packb({1: 2}),
    "nil key": b"\x81\xc0\x01",
    "extension type": msgpack.packb({"t": "ping", "seq": msgpack.ExtType(1, b"x")}),
    "timestamp": b"\x82\xa1t\xa4ping\xa3seq\xd6\xff\x00\x00\x00\x01",
    "invalid utf-8": b"\x81\xa1t\xa2\xff\xfe",
    "deep nesting": b"\x91" * 5000 + b"\x00",
}


@pytest.mark.parametrize("body", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_is_a_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError, match="not valid msgpack") as caught:
        decode_message(body, LIMITS)
    assert caught.value.code is ErrorCode.MALFORMED_FRAME
    assert isinstance(caught.value.__cause__, Exception)
