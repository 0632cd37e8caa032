"""Helpers for the protocol tests: a fake clock, frame builders, pumping two endpoints."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from protocol.connection import Connection
from protocol.frames import HEADER_SIZE, FrameKind, FrameParser, encode_frame
from protocol.limits import Limits
from protocol.messages import Goodbye, Hello, Message, Role, decode_message

__all__ = [
    "FakeClock",
    "connected",
    "control",
    "data",
    "deliver",
    "hello",
    "last_goodbye",
    "outgoing",
    "outgoing_messages",
    "pump",
]


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def control(message: Message, channel: int = 0) -> bytes:
    """The wire bytes of a control frame carrying ``message``."""
    return encode_frame(FrameKind.CONTROL, channel, message.encode())


def data(channel: int, body: bytes) -> bytes:
    """The wire bytes of a data frame."""
    return encode_frame(FrameKind.DATA, channel, body)


def hello(role: Role, version: int = 1, **fields: Any) -> bytes:
    """A Hello frame as a peer of ``role`` would send it."""
    return control(Hello(version=version, role=role.value, **fields))


def outgoing(chunks: Iterable[bytes]) -> list[tuple[FrameKind, int, Message | bytes]]:
    """Decode what a Connection queued: one ``(kind, channel, message or data)`` per frame.

    Also checks that every queued item is exactly one frame, as the adapters
    send one transport message per item.
    """
    parser = FrameParser(2**31)
    decoded: list[tuple[FrameKind, int, Message | bytes]] = []
    for chunk in chunks:
        assert len(chunk) >= HEADER_SIZE
        frames = parser.feed(chunk)
        assert len(frames) == 1, "each queued item must be exactly one frame"
        assert parser.buffered == 0
        (frame,) = frames
        body: Message | bytes = frame.body
        if frame.kind is FrameKind.CONTROL:
            body = decode_message(frame.body, Limits())
        decoded.append((frame.kind, frame.channel, body))
    return decoded


def outgoing_messages(chunks: Iterable[bytes]) -> list[tuple[int, Message]]:
    """The control messages among ``chunks``, as ``(channel, message)``."""
    return [
        (channel, body)
        for kind, channel, body in outgoing(chunks)
        if kind is FrameKind.CONTROL and isinstance(body, Message)
    ]


def last_goodbye(chunks: list[bytes]) -> Goodbye:
    """The last queued frame, which must be a Goodbye on channel 0."""
    kind, channel, body = outgoing(chunks)[-1]
    assert kind is FrameKind.CONTROL
    assert channel == 0
    assert isinstance(body, Goodbye)
    return body


def deliver(chunks: Iterable[bytes], receiver: Connection) -> None:
    """Feed each queued item to ``receiver``, one transport message at a time."""
    for chunk in chunks:
        receiver.receive_data(chunk)


def pump(*pairs: tuple[Connection, Connection]) -> None:
    """Deliver queued bytes both ways until every endpoint is quiet."""
    busy = True
    while busy:
        busy = False
        for a, b in pairs:
            for sender, receiver in ((a, b), (b, a)):
                for chunk in sender.data_to_send():
                    busy = True
                    receiver.receive_data(chunk)


def connected(
    peer_role: Role = Role.AGENT,
    *,
    relay_limits: Limits | None = None,
    peer_limits: Limits | None = None,
    clock: FakeClock | None = None,
) -> tuple[Connection, Connection]:
    """A relay and a peer after the Hello exchange, with events and output drained."""
    clock = clock or FakeClock()
    relay = Connection(Role.RELAY, limits=relay_limits, software="relay/1", clock=clock)
    peer = Connection(peer_role, limits=peer_limits, software="peer/1", clock=clock)
    pump((relay, peer))
    relay.events_received()
    peer.events_received()
    return relay, peer
