"""Typed control messages: frozen dataclasses with validated fields.

A control frame's body is a msgpack map ``{"t": TYPE, field: value, ...}``.
:func:`decode_message` turns it into one of the classes registered here, and
checks every field against its declared kind and bounds and against the
connection's :class:`~protocol.limits.Limits`; :meth:`Message.encode` is the
inverse. Fields a newer peer adds are ignored (capabilities in ``Hello`` say
what a peer understands); an unknown ``TYPE`` is an :class:`UnknownMessage`.

Each class also says where it may travel: ``SCOPE`` (the connection, channel
0, or a channel) and ``SENDERS`` (the roles allowed to send it). A relay thus
refuses, at the protocol layer, an agent that sends a relay-only message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, ClassVar, TypeVar

import msgpack

from .errors import FrameError, FrameTooLarge, InvalidMessage, LimitExceeded, UnknownMessage
from .limits import MAX_FRAME_SIZE, MAX_WINDOW, MIN_FRAME_SIZE, Limits

__all__ = [
    "MAX_CODE",
    "MAX_WINDOW",
    "MIN_CODE",
    "ChannelAccept",
    "ChannelClose",
    "ChannelOpen",
    "ChannelReject",
    "DeviceStatus",
    "Goodbye",
    "Heartbeat",
    "HeartbeatAck",
    "Hello",
    "Inventory",
    "Message",
    "Role",
    "Scope",
    "WindowAdjust",
    "decode_message",
    "message_types",
]

#: Range of the codes in Goodbye, ChannelReject and ChannelClose (WebSocket close codes).
MIN_CODE = 1000
MAX_CODE = 4999
_MAX_UINT53 = 2**53


class Role(StrEnum):
    AGENT = "agent"
    RELAY = "relay"
    CONSOLE = "console"


class Scope(Enum):
    CONNECTION = "connection"
    CHANNEL = "channel"


_ALL_ROLES = frozenset(Role)
_PEERS = frozenset({Role.AGENT, Role.CONSOLE})


# -- field kinds ---------------------------------------------------------------

Checker = Callable[[str, Any, Limits], Any]


def _text(max_length: int | None = None, *, choices: frozenset[str] | None = None) -> Any:
    def check(name: str, value: Any, limits: Limits) -> str:
        if not isinstance(value, str):
            raise InvalidMessage(f"field {name!r} must be a string")
        bound = limits.max_string if max_length is None else min(max_length, limits.max_string)
        if len(value) > bound:
            raise LimitExceeded(f"field {name!r} longer than {bound} characters")
        if choices is not None and value not in choices:
            raise InvalidMessage(f"field {name!r} has an unknown value")
        return value

    return check


def _integer(low: int, high: int) -> Any:
    def check(name: str, value: Any, limits: Limits) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidMessage(f"field {name!r} must be an integer")
        if not low <= value <= high:
            raise InvalidMessage(f"field {name!r} out of range {low}..{high}")
        return value

    return check


def _flag() -> Any:
    def check(name: str, value: Any, limits: Limits) -> bool:
        if not isinstance(value, bool):
            raise InvalidMessage(f"field {name!r} must be a boolean")
        return value

    return check


def _text_list(max_length: int | None = None) -> Any:
    item = _text(max_length)

    def check(name: str, value: Any, limits: Limits) -> tuple[str, ...]:
        if not isinstance(value, list | tuple):
            raise InvalidMessage(f"field {name!r} must be a list")
        if len(value) > limits.max_list:
            raise LimitExceeded(f"field {name!r} has more than {limits.max_list} items")
        return tuple(item(name, element, limits) for element in value)

    return check


def _text_map(max_length: int | None = None) -> Any:
    item = _text(max_length)

    def check(name: str, value: Any, limits: Limits) -> Mapping[str, str]:
        if not isinstance(value, dict):
            raise InvalidMessage(f"field {name!r} must be a map")
        if len(value) > limits.max_list:
            raise LimitExceeded(f"field {name!r} has more than {limits.max_list} items")
        return {item(name, k, limits): item(name, v, limits) for k, v in value.items()}

    return check


def _spec(check: Checker, default: Any = dataclasses.MISSING) -> Any:
    if isinstance(default, dict):
        template = default
        return field(default_factory=lambda: dict(template), metadata={"check": check})
    return field(default=default, metadata={"check": check})


# -- the message base ----------------------------------------------------------

M = TypeVar("M", bound="Message")
_REGISTRY: dict[str, type[Message]] = {}


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every control message."""

    TYPE: ClassVar[str] = ""
    SCOPE: ClassVar[Scope] = Scope.CONNECTION
    SENDERS: ClassVar[frozenset[Role]] = _ALL_ROLES

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"t": self.TYPE}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            body[f.name] = dict(value) if isinstance(value, Mapping) else value
        return body

    def encode(self) -> bytes:
        """The msgpack body of this message."""
        packed: bytes = msgpack.packb(self.to_wire(), use_bin_type=True)
        return packed

    @classmethod
    def from_wire(cls: type[M], body: Mapping[str, Any], limits: Limits) -> M:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in body:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise InvalidMessage(f"{cls.TYPE}: missing field {f.name!r}")
                continue
            values[f.name] = f.metadata["check"](f.name, body[f.name], limits)
        return cls(**values)


def _register(cls: type[M]) -> type[M]:
    _REGISTRY[cls.TYPE] = cls
    return cls


def message_types() -> Mapping[str, type[Message]]:
    """Every registered message class by wire type name."""
    return dict(_REGISTRY)


def decode_message(body: bytes, limits: Limits) -> Message:
    """Decode and validate one control body.

    Raises :class:`FrameTooLarge` for a body over ``max_control_size``,
    :class:`FrameError` for bytes that are not one msgpack map,
    :class:`UnknownMessage` for an unknown type, :class:`InvalidMessage` or
    :class:`LimitExceeded` for bad fields (a list or map longer than
    ``max_list`` among them). Nothing else.

    The body's size bounds everything in it (each item takes at least a
    byte), so msgpack is only told that bound; item counts are checked by the
    fields, which report them as :class:`LimitExceeded`, and unknown fields
    are dropped whatever their size.
    """
    size = limits.max_control_size
    if len(body) > size:
        raise FrameTooLarge(f"control message of {len(body)} bytes exceeds limit of {size}")
    try:
        decoded = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise FrameError("control body is not valid msgpack") from exc
    if not isinstance(decoded, dict):
        raise FrameError("control body is not a map")
    kind = decoded.get("t")
    if not isinstance(kind, str):
        raise InvalidMessage("control message without a type")
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise UnknownMessage(f"unknown message type {kind[:64]!r}")
    return cls.from_wire(decoded, limits)


# -- connection messages -----------------------------------------------------------


@_register
@dataclass(frozen=True, slots=True)
class Hello(Message):
    """First message each side sends: who it is and what it speaks."""

    TYPE = "hello"
    version: int = _spec(_integer(1, 65535))
    role: str = _spec(_text(16, choices=frozenset(r.value for r in Role)))
    software: str = _spec(_text(128), "")
    capabilities: tuple[str, ...] = _spec(_text_list(64), ())
    #: Largest frame body this side accepts; the peer splits data to fit.
    max_frame_size: int = _spec(_integer(MIN_FRAME_SIZE, MAX_FRAME_SIZE), 256 * 1024)


@_register
@dataclass(frozen=True, slots=True)
class Goodbye(Message):
    """The sender is closing the connection, with a code and a safe reason."""

    TYPE = "bye"
    code: int = _spec(_integer(MIN_CODE, MAX_CODE))
    message: str = _spec(_text(1024), "")


@_register
@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Liveness probe; the receiver answers :class:`HeartbeatAck` with the same ``seq``."""

    TYPE = "ping"
    seq: int = _spec(_integer(0, _MAX_UINT53))


@_register
@dataclass(frozen=True, slots=True)
class HeartbeatAck(Message):
    TYPE = "pong"
    seq: int = _spec(_integer(0, _MAX_UINT53))


@_register
@dataclass(frozen=True, slots=True)
class Inventory(Message):
    """What an agent reports about its machine. Untrusted text, length-limited."""

    TYPE = "inventory"
    SENDERS = frozenset({Role.AGENT})
    hostname: str = _spec(_text(255))
    os: str = _spec(_text(255))
    user: str = _spec(_text(255))
    agent_version: str = _spec(_text(64))
    addresses: tuple[str, ...] = _spec(_text_list(64), ())


@_register
@dataclass(frozen=True, slots=True)
class DeviceStatus(Message):
    """Relay to console: a device came online or went offline."""

    TYPE = "device"
    SENDERS = frozenset({Role.RELAY})
    device_id: str = _spec(_text(64))
    name: str = _spec(_text(255))
    online: bool = _spec(_flag())


# -- channel messages (the channel id is in the frame header) ------------------------


@_register
@dataclass(frozen=True, slots=True)
class ChannelOpen(Message):
    """Relay opens a channel of ``kind``; ``window`` is what the relay side can receive."""

    TYPE = "open"
    SCOPE = Scope.CHANNEL
    SENDERS = frozenset({Role.RELAY})
    kind: str = _spec(_text(32))
    window: int = _spec(_integer(0, MAX_WINDOW))
    params: Mapping[str, str] = _spec(_text_map(1024), {})


@_register
@dataclass(frozen=True, slots=True)
class ChannelAccept(Message):
    TYPE = "accept"
    SCOPE = Scope.CHANNEL
    SENDERS = _PEERS
    window: int = _spec(_integer(0, MAX_WINDOW))


@_register
@dataclass(frozen=True, slots=True)
class ChannelReject(Message):
    TYPE = "reject"
    SCOPE = Scope.CHANNEL
    SENDERS = _PEERS
    code: int = _spec(_integer(MIN_CODE, MAX_CODE))
    message: str = _spec(_text(1024), "")


@_register
@dataclass(frozen=True, slots=True)
class WindowAdjust(Message):
    """The sender consumed data: the receiver may send ``increment`` more bytes."""

    TYPE = "window"
    SCOPE = Scope.CHANNEL
    increment: int = _spec(_integer(1, MAX_WINDOW))


@_register
@dataclass(frozen=True, slots=True)
class ChannelClose(Message):
    TYPE = "close"
    SCOPE = Scope.CHANNEL
    code: int = _spec(_integer(MIN_CODE, MAX_CODE), 1000)
    message: str = _spec(_text(1024), "")
