"""Typed control messages: round trips, validation, limits, malformed bodies."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from protocol.errors import (
    ErrorCode,
    FrameError,
    FrameTooLarge,
    InvalidMessage,
    LimitExceeded,
    UnknownMessage,
)
from protocol.files import FileDone, FileReply, FileRequest
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
from protocol.screen import (
    ControlRequest,
    KeyInput,
    PointerInput,
    ScreenAck,
    ScreenInfo,
    ScreenMode,
    ScreenRefresh,
    ScreenRefused,
    ScreenSelect,
    TextInput,
)
from protocol.sessions import (
    ChannelEof,
    ConsentDecision,
    ExitStatus,
    SessionRequest,
    SessionStatus,
    TerminalResize,
)
from protocol.updates import AgentUpdateReport, UpdateProgress, UpdateResult

LIMITS = Limits()
SCREEN_TYPES = {
    "screen.info",
    "screen.refused",
    "screen.ack",
    "screen.select",
    "screen.mode",
    "screen.refresh",
    "screen.control",
    "input.pointer",
    "input.key",
    "input.text",
}

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
    "session.request": SessionRequest(
        request=7, device="desk-01", kind="shell", reason="ticket 42", params={"term": "xterm"}
    ),
    "session.status": SessionStatus(
        request=7, state="denied", session="s-1", code=4450, message="the customer denied"
    ),
    "consent": ConsentDecision(granted=True, how="prompt", by="ana"),
    "resize": TerminalResize(cols=1000, rows=1),
    "eof": ChannelEof(),
    "exit": ExitStatus(code=-1, signal="SIGKILL"),
    "file.request": FileRequest(
        id=3,
        op="rename",
        path="/home/ana/a.txt",
        target="/home/ana/b.txt",
        offset=5,
        size=9,
        mode=0o600,
        mtime_ns=1,
        prefix_sha256="ab" * 32,
        recursive=True,
    ),
    "file.reply": FileReply(
        id=3,
        ok=True,
        code=0,
        message="ok",
        kind="dir",
        size=10,
        mode=0o40755,
        mtime_ns=2,
        offset=4,
        prefix_sha256="cd" * 32,
        sha256="ef" * 32,
        entries=(("notes.txt", "file", 12, 0o644, 3),),
        more=True,
    ),
    "file.done": FileDone(id=3, size=10, sha256="01" * 32),
    "screen.info": ScreenInfo(
        monitors=((0, 0, 1920, 1080), (-1280, 0, 1280, 1024)), monitor=1, mode="lossy", control=True
    ),
    "screen.refused": ScreenRefused(code=4403, message="viewing only"),
    "screen.ack": ScreenAck(seq=2**32 - 1),
    "screen.select": ScreenSelect(monitor=15),
    "screen.mode": ScreenMode(mode="lossless"),
    "screen.refresh": ScreenRefresh(),
    "screen.control": ControlRequest(reason="the printer dialog"),
    "input.pointer": PointerInput(action="wheel", x=10, y=20, button="middle", dx=-1, dy=3),
    "input.key": KeyInput(action="down", code="KeyA", key="a"),
    "input.text": TextInput(text="hello, world"),
    "update.progress": UpdateProgress(step="verified", message="signed by sha256:ab"),
    "update.result": UpdateResult(
        outcome="failed", exit_code=3, message="exit status 3", log_tail="boom\n", version="1.2"
    ),
    "update.agent": AgentUpdateReport(
        session="s-1", package="helpline-agent", version="0.2.0", outcome="healthy", message="ok"
    ),
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
        "session.request": "SessionRequest",
        "session.status": "SessionStatus",
        "consent": "ConsentDecision",
        "resize": "TerminalResize",
        "eof": "ChannelEof",
        "exit": "ExitStatus",
        "file.request": "FileRequest",
        "file.reply": "FileReply",
        "file.done": "FileDone",
        "screen.info": "ScreenInfo",
        "screen.refused": "ScreenRefused",
        "screen.ack": "ScreenAck",
        "screen.select": "ScreenSelect",
        "screen.mode": "ScreenMode",
        "screen.refresh": "ScreenRefresh",
        "screen.control": "ControlRequest",
        "input.pointer": "PointerInput",
        "input.key": "KeyInput",
        "input.text": "TextInput",
        "update.progress": "UpdateProgress",
        "update.result": "UpdateResult",
        "update.agent": "AgentUpdateReport",
    }


def test_message_types_is_a_copy() -> None:
    types = message_types()
    assert isinstance(types, dict)
    types.clear()
    assert len(message_types()) == len(SAMPLES)


def test_scopes_and_senders() -> None:
    channel_types = {
        "open",
        "accept",
        "reject",
        "window",
        "close",
        "consent",
        "resize",
        "eof",
        "exit",
        "file.request",
        "file.reply",
        "file.done",
        *SCREEN_TYPES,
        "update.progress",
        "update.result",
    }
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
        "session.request": {Role.CONSOLE},
        "session.status": {Role.RELAY},
        "consent": {Role.AGENT},
        "resize": {Role.CONSOLE, Role.RELAY},
        "eof": everyone,
        "exit": {Role.AGENT, Role.RELAY},
        "file.request": {Role.CONSOLE, Role.RELAY},
        "file.reply": {Role.AGENT, Role.RELAY},
        "file.done": everyone,
        "screen.info": {Role.AGENT, Role.RELAY},
        "screen.refused": {Role.AGENT, Role.RELAY},
        "screen.ack": {Role.CONSOLE, Role.RELAY},
        "screen.select": {Role.CONSOLE, Role.RELAY},
        "screen.mode": {Role.CONSOLE, Role.RELAY},
        "screen.refresh": {Role.CONSOLE, Role.RELAY},
        "screen.control": {Role.CONSOLE, Role.RELAY},
        "input.pointer": {Role.CONSOLE, Role.RELAY},
        "input.key": {Role.CONSOLE, Role.RELAY},
        "input.text": {Role.CONSOLE, Role.RELAY},
        "update.progress": {Role.AGENT, Role.RELAY},
        "update.result": {Role.AGENT, Role.RELAY},
        "update.agent": {Role.AGENT},
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
    assert {name for name, _ in MISSING_CASES} == set(SAMPLES) - {
        "close",
        "eof",
        "screen.refresh",
        "screen.control",
    }


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
    ("session.request", "request", 0, 2**31 - 1),
    ("session.status", "request", 0, 2**31 - 1),
    ("session.status", "code", 0, 4999),
    ("resize", "cols", 1, 1000),
    ("resize", "rows", 1, 1000),
    ("exit", "code", -1, 255),
    ("file.request", "id", 0, 2**31 - 1),
    ("file.request", "offset", 0, 2**62),
    ("file.request", "mode", 0, 0o7777),
    ("file.reply", "size", 0, 2**62),
    ("file.reply", "code", 0, 4999),
    ("file.done", "size", 0, 2**62),
    ("screen.info", "monitor", 0, 15),
    ("screen.refused", "code", 1000, 4999),
    ("screen.ack", "seq", 0, 2**32 - 1),
    ("screen.select", "monitor", 0, 15),
    ("input.pointer", "x", 0, 65535),
    ("input.pointer", "y", 0, 65535),
    ("input.pointer", "dx", -100, 100),
    ("input.pointer", "dy", -100, 100),
    ("update.result", "exit_code", -1, 255),
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
    ("session.request", "device", 255),
    ("session.request", "reason", 1024),
    ("session.status", "session", 64),
    ("session.status", "message", 1024),
    ("consent", "by", 255),
    ("exit", "signal", 32),
    ("file.request", "path", 4096),
    ("file.request", "target", 4096),
    ("file.request", "prefix_sha256", 64),
    ("file.reply", "message", 1024),
    ("file.reply", "kind", 8),
    ("file.reply", "prefix_sha256", 64),
    ("file.reply", "sha256", 64),
    ("file.done", "sha256", 64),
    ("screen.refused", "message", 1024),
    ("screen.control", "reason", 1024),
    ("input.key", "code", 64),
    ("input.key", "key", 64),
    ("input.text", "text", 1024),
    ("update.progress", "message", 1024),
    ("update.result", "message", 1024),
    ("update.result", "log_tail", 4096),
    ("update.result", "version", 64),
    ("update.agent", "session", 64),
    ("update.agent", "package", 64),
    ("update.agent", "version", 64),
    ("update.agent", "message", 1024),
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
    # fields restricted to a set of values are checked by their own tests
    assert fields - {(name, field) for name, field, _ in STRING_BOUNDS} == {
        ("hello", "role"),
        ("session.request", "kind"),
        ("session.status", "state"),
        ("consent", "how"),
        ("file.request", "op"),
        ("screen.info", "mode"),
        ("screen.mode", "mode"),
        ("input.pointer", "action"),
        ("input.pointer", "button"),
        ("input.key", "action"),
        ("update.progress", "step"),
        ("update.result", "outcome"),
        ("update.agent", "outcome"),
    }


@pytest.mark.parametrize(
    ("name", "field", "good", "bad"),
    [
        ("session.request", "kind", "files", "telnet"),
        ("session.status", "state", "waiting", "pending"),
        ("consent", "how", "timeout", "maybe"),
        ("file.request", "op", "pull", "chmod"),
        ("screen.info", "mode", "auto", "fast"),
        ("screen.mode", "mode", "lossy", "png"),
        ("input.pointer", "action", "down", "click"),
        ("input.pointer", "button", "right", "back"),
        ("input.key", "action", "press", "hold"),
        ("update.progress", "step", "installing", "downloading"),
        ("update.result", "outcome", "timeout", "maybe"),
        ("update.agent", "outcome", "rolled-back", "rollback"),
    ],
)
def test_enumerated_fields_accept_only_their_values(
    name: str, field: str, good: str, bad: str
) -> None:
    assert getattr(decode_message(body_of(SAMPLES[name], **{field: good}), LIMITS), field) == good
    with pytest.raises(InvalidMessage, match="unknown value"):
        decode_message(body_of(SAMPLES[name], **{field: bad}), LIMITS)


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


@pytest.mark.parametrize("length", [5, 21, 1000])
def test_list_over_the_limit_is_a_limit_exceeded(length: int) -> None:
    # msgpack is bounded by the body's size only, so an over-long list reaches
    # the field check, however long, and is reported as a limit, not a bad frame
    limits = Limits(max_list=4)
    with pytest.raises(LimitExceeded, match="more than 4 items") as caught:
        decode_message(body_of(SAMPLES["hello"], capabilities=["c"] * length), limits)
    assert caught.value.code is ErrorCode.LIMIT_EXCEEDED
    with pytest.raises(LimitExceeded, match="more than 4 items"):
        decode_message(body_of(SAMPLES["inventory"], addresses=["a"] * length), limits)


def test_long_lists_in_unknown_fields_are_ignored() -> None:
    limits = Limits(max_list=4)
    body = body_of(SAMPLES["ping"], extra=list(range(1000)), more={str(i): i for i in range(50)})
    assert decode_message(body, limits) == SAMPLES["ping"]


def test_list_over_the_limit_in_from_wire() -> None:
    limits = Limits(max_list=4)
    wire = SAMPLES["inventory"].to_wire() | {"addresses": ["a"] * 5}
    with pytest.raises(LimitExceeded, match="more than 4 items"):
        Inventory.from_wire(wire, limits)
    wire["addresses"] = ("a",) * 4
    assert Inventory.from_wire(wire, limits).addresses == ("a",) * 4


@pytest.mark.parametrize("length", [5, 21, 1000])
def test_map_length_bounds(length: int) -> None:
    limits = Limits(max_list=4)
    four = {str(i): "v" for i in range(4)}
    decoded = decode_message(body_of(SAMPLES["open"], params=four), limits)
    assert isinstance(decoded, ChannelOpen)
    assert dict(decoded.params) == four
    too_many = {str(i): "v" for i in range(length)}
    with pytest.raises(LimitExceeded, match="more than 4 items") as caught:
        decode_message(body_of(SAMPLES["open"], params=too_many), limits)
    assert caught.value.code is ErrorCode.LIMIT_EXCEEDED


def test_map_keys_and_values_are_bounded() -> None:
    with pytest.raises(LimitExceeded):
        decode_message(body_of(SAMPLES["open"], params={"k" * 1025: "v"}), LIMITS)
    with pytest.raises(LimitExceeded):
        decode_message(body_of(SAMPLES["open"], params={"k": "v" * 1025}), LIMITS)


def test_unknown_fields_are_bounded_by_the_body_size_only() -> None:
    limits = Limits(max_list=4, max_frame_size=4096, max_control_size=4096)
    many = {f"x{i}": i for i in range(500)}
    body = msgpack.packb({"t": "ping", "seq": 1} | many)
    assert len(body) <= 4096
    assert decode_message(body, limits) == Heartbeat(seq=1)
    more = {f"x{i}": i for i in range(1000)}
    with pytest.raises(FrameTooLarge):
        decode_message(msgpack.packb({"t": "ping", "seq": 1} | more), limits)


def test_a_list_as_long_as_the_body_allows_is_decoded() -> None:
    # msgpack's item limits follow max_control_size, not max_list
    limits = Limits(max_list=4, max_frame_size=4096, max_control_size=1024)
    head = msgpack.packb({"t": "ping", "seq": 1, "pad": []})
    items = 1024 - len(head) - 2  # an array of 16..65535 items takes 3 bytes of header, not 1
    body = msgpack.packb({"t": "ping", "seq": 1, "pad": [0] * items})
    assert len(body) == 1024
    assert decode_message(body, limits) == Heartbeat(seq=1)


def test_control_body_size_is_checked_before_decoding() -> None:
    limits = Limits(max_frame_size=4096, max_control_size=1024)
    head = msgpack.packb({"t": "ping", "seq": 1, "pad": ""})
    pad = 1024 - len(head) - 2  # a str of 32..255 chars takes 2 bytes of header, not 1
    exact = msgpack.packb({"t": "ping", "seq": 1, "pad": "p" * pad})
    assert len(exact) == 1024
    assert decode_message(exact, limits) == Heartbeat(seq=1)
    # one byte more is refused by its size alone: even garbage gets FrameTooLarge
    with pytest.raises(FrameTooLarge) as caught:
        decode_message(b"\xc1" * 1025, limits)
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE


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


def test_listing_entries_are_checked() -> None:
    reply = SAMPLES["file.reply"]
    too_many = [["f", "file", 1, 0o644, 1]] * (LIMITS.max_list + 1)
    with pytest.raises(LimitExceeded, match="entries"):
        decode_message(body_of(reply, entries=too_many), LIMITS)
    for malformed in ([["f", "file", 1, 0o644]], ["f"], [["f", "socket", 1, 0, 0]]):
        with pytest.raises(InvalidMessage):
            decode_message(body_of(reply, entries=malformed), LIMITS)
    decoded = decode_message(body_of(reply, entries=[["a", "dir", 0, 0o755, 5]]), LIMITS)
    assert decoded.entries == (("a", "dir", 0, 0o755, 5),)  # type: ignore[attr-defined]


def test_monitors_are_checked() -> None:
    info = SAMPLES["screen.info"]
    too_many = [[0, 0, 1, 1]] * 17
    with pytest.raises(LimitExceeded, match="monitors"):
        decode_message(body_of(info, monitors=too_many), LIMITS)
    for malformed in ([[0, 0, 1]], [[0, 0, 0, 1]], [[70000, 0, 1, 1]], [["0", 0, 1, 1]]):
        with pytest.raises(InvalidMessage, match="monitors"):
            decode_message(body_of(info, monitors=malformed), LIMITS)
    decoded = decode_message(body_of(info, monitors=[[-65535, 65535, 65535, 1]]), LIMITS)
    assert decoded.monitors == ((-65535, 65535, 65535, 1),)  # type: ignore[attr-defined]
    with pytest.raises(LimitExceeded):
        decode_message(body_of(info, monitors=[[0, 0, 1, 1]] * 5), Limits(max_list=4))
