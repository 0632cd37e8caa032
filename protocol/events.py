"""Events a :class:`~protocol.connection.Connection` hands to its adapter.

Connection-level control messages (``Hello``, ``Inventory``, ``Heartbeat``...)
are events themselves. Channel messages become the events below, which carry
the channel id from the frame header.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .messages import Message

__all__ = [
    "ChannelAccepted",
    "ChannelClosed",
    "ChannelData",
    "ChannelMessage",
    "ChannelOpened",
    "ChannelRejected",
    "ConnectionClosed",
    "CreditAvailable",
    "Event",
]


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """The relay opened a channel; answer with ``accept_channel`` or ``reject_channel``."""

    channel: int
    kind: str
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ChannelAccepted:
    channel: int


@dataclass(frozen=True, slots=True)
class ChannelRejected:
    channel: int
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class ChannelData:
    """Bytes on a channel. Call ``acknowledge(channel, len(data))`` once consumed."""

    channel: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    """An application message on a channel (a resize, an exit status...)."""

    channel: int
    message: Message


@dataclass(frozen=True, slots=True)
class CreditAvailable:
    """The peer granted more window: ``credit`` bytes may now be sent."""

    channel: int
    credit: int


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """The channel is gone on both sides."""

    channel: int
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer said goodbye, or the transport ended."""

    code: int
    message: str


Event = (
    Message
    | ChannelOpened
    | ChannelAccepted
    | ChannelRejected
    | ChannelData
    | ChannelMessage
    | CreditAvailable
    | ChannelClosed
    | ConnectionClosed
)
