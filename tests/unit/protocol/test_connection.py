"""The sans-I/O Connection: handshake, channels, flow control, closing, peer faults, misuse."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from protocol import ABNORMAL_CLOSURE, PROTOCOL_VERSION
from protocol.connection import Connection, ConnectionState
from protocol.errors import (
    ErrorCode,
    FlowControlError,
    FrameError,
    FrameTooLarge,
    HandshakeError,
    InvalidMessage,
    LimitExceeded,
    ProtocolError,
    RateLimited,
    UnknownChannel,
    UnknownMessage,
    UsageError,
)
from protocol.events import (
    ChannelAccepted,
    ChannelClosed,
    ChannelData,
    ChannelOpened,
    ChannelRejected,
    ConnectionClosed,
    CreditAvailable,
)
from protocol.frames import HEADER_SIZE, FrameKind
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
    WindowAdjust,
)

from .protocol_helpers import (
    FakeClock,
    connected,
    control,
    data,
    deliver,
    hello,
    last_goodbye,
    outgoing,
    outgoing_messages,
    pump,
)

PEERS = [Role.AGENT, Role.CONSOLE]
OPEN = ConnectionState.OPEN
CLOSED = ConnectionState.CLOSED
CLOSING = ConnectionState.CLOSING


def default_peer(role: Role) -> Role:
    return Role.AGENT if role is Role.RELAY else Role.RELAY


def opened(
    role: Role,
    *,
    peer: Role | None = None,
    limits: Limits | None = None,
    clock: FakeClock | None = None,
) -> Connection:
    """A connection of ``role`` that has received its peer's Hello, drained."""
    conn = Connection(role, limits=limits, clock=clock or FakeClock())
    conn.receive_data(hello(peer or default_peer(role)))
    assert conn.state is OPEN
    conn.events_received()
    conn.data_to_send()
    return conn


def with_channel(
    peer_role: Role = Role.AGENT,
    *,
    accept: bool = True,
    relay_limits: Limits | None = None,
    peer_limits: Limits | None = None,
) -> tuple[Connection, Connection]:
    """A connected relay and peer sharing channel 1, accepted or only offered."""
    relay, peer = connected(peer_role, relay_limits=relay_limits, peer_limits=peer_limits)
    relay.open_channel(1, "shell")
    pump((relay, peer))
    if accept:
        peer.accept_channel(1)
        pump((relay, peer))
    relay.events_received()
    peer.events_received()
    return relay, peer


def expect_failure(
    conn: Connection,
    wire: bytes,
    cls: type[ProtocolError],
    code: ErrorCode,
    *,
    byte_at_a_time: bool = False,
) -> ProtocolError:
    """Feed ``wire``; check the error, the Goodbye it queued, and that input is now ignored."""
    chunks = [wire[i : i + 1] for i in range(len(wire))] if byte_at_a_time else [wire]

    def feed() -> None:
        for chunk in chunks:
            conn.receive_data(chunk)

    with pytest.raises(ProtocolError) as caught:
        feed()
    error = caught.value
    assert type(error) is cls
    assert error.code is code
    bye = last_goodbye(conn.data_to_send())
    assert bye.code == code
    assert bye.message == str(error)
    assert conn.state is CLOSED
    assert conn.should_close_transport
    assert conn.close_code == code
    assert conn.close_message == str(error)
    conn.events_received()
    # a closed connection ignores everything, valid or not
    conn.receive_data(control(Heartbeat(seq=1)))
    conn.receive_data(b"\xff" * 64)
    conn.receive_eof()
    assert conn.events_received() == []
    assert conn.data_to_send() == []
    assert conn.state is CLOSED
    return error


# -- handshake ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_a_new_connection_queues_its_hello(role: Role) -> None:
    limits = Limits(max_frame_size=4096, max_control_size=2048)
    conn = Connection(role, limits=limits, software="helpline/0.1", capabilities=("a", "b"))
    assert conn.state is ConnectionState.HANDSHAKE
    assert conn.peer is None
    assert conn.peer_role is None
    assert conn.peer_capabilities == frozenset()
    assert not conn.should_close_transport
    assert outgoing(conn.data_to_send()) == [
        (
            FrameKind.CONTROL,
            0,
            Hello(
                version=PROTOCOL_VERSION,
                role=role.value,
                software="helpline/0.1",
                capabilities=("a", "b"),
                max_frame_size=4096,
            ),
        )
    ]
    assert conn.data_to_send() == []
    assert conn.events_received() == []


@pytest.mark.parametrize("peer_role", PEERS)
def test_handshake(peer_role: Role) -> None:
    relay = Connection(Role.RELAY, software="relay/1", capabilities=("route",))
    peer = Connection(peer_role, software="peer/1", capabilities=("shell", "files"))
    pump((relay, peer))
    assert relay.state is OPEN
    assert peer.state is OPEN
    assert relay.events_received() == [
        Hello(
            version=1,
            role=peer_role.value,
            software="peer/1",
            capabilities=("shell", "files"),
            max_frame_size=Limits().max_frame_size,
        )
    ]
    assert [type(e) for e in peer.events_received()] == [Hello]
    assert relay.peer_role is peer_role
    assert peer.peer_role is Role.RELAY
    assert relay.peer_capabilities == frozenset({"shell", "files"})
    assert peer.peer_capabilities == frozenset({"route"})
    assert relay.peer is not None
    assert relay.peer.software == "peer/1"


def test_handshake_byte_at_a_time() -> None:
    relay = Connection(Role.RELAY)
    agent = Connection(Role.AGENT)
    (wire,) = agent.data_to_send()
    for i in range(len(wire) - 1):
        relay.receive_data(wire[i : i + 1])
        assert relay.state is ConnectionState.HANDSHAKE
    relay.receive_data(wire[-1:])
    assert relay.state is OPEN
    assert [type(e) for e in relay.events_received()] == [Hello]


def test_hello_and_first_messages_in_one_chunk() -> None:
    relay = Connection(Role.RELAY)
    relay.receive_data(hello(Role.AGENT) + control(Heartbeat(seq=1)) + control(Heartbeat(seq=2)))
    assert [type(e) for e in relay.events_received()] == [Hello, Heartbeat, Heartbeat]


@pytest.mark.parametrize("peer_frame_size", [1024, 3000])
def test_data_is_split_to_the_peers_frame_size(peer_frame_size: int) -> None:
    peer_limits = Limits(max_frame_size=peer_frame_size, max_control_size=1024)
    relay, agent = with_channel(peer_limits=peer_limits)
    payload = bytes(range(256)) * 30
    relay.send_data(1, payload)
    wire = relay.data_to_send()
    sizes = [len(chunk) - HEADER_SIZE for chunk in wire]
    assert all(size == peer_frame_size for size in sizes[:-1])
    assert 0 < sizes[-1] <= peer_frame_size
    assert sum(sizes) == len(payload)
    deliver(wire, agent)
    events = agent.events_received()
    assert all(isinstance(e, ChannelData) and e.channel == 1 for e in events)
    assert b"".join(e.data for e in events if isinstance(e, ChannelData)) == payload


def test_data_in_frames_of_the_default_size() -> None:
    relay, agent = with_channel()
    relay.send_data(1, b"d" * (256 * 1024 + 1))
    wire = relay.data_to_send()
    assert [len(chunk) - HEADER_SIZE for chunk in wire] == [256 * 1024, 1]
    deliver(wire, agent)
    assert [len(e.data) for e in agent.events_received() if isinstance(e, ChannelData)] == [
        256 * 1024,
        1,
    ]


def test_empty_data_sends_nothing() -> None:
    relay, _ = with_channel()
    relay.send_data(1, b"")
    assert relay.data_to_send() == []


# -- connection-level messages -------------------------------------------------------------


@pytest.mark.parametrize("peer_role", PEERS)
def test_heartbeats_are_acknowledged_automatically_both_ways(peer_role: Role) -> None:
    relay, peer = connected(peer_role)
    peer.send(Heartbeat(seq=7))
    relay.send(Heartbeat(seq=2**53))
    relay.receive_data(b"".join(peer.data_to_send()))
    assert relay.events_received() == [Heartbeat(seq=7)]
    replies = relay.data_to_send()
    assert outgoing_messages(replies) == [(0, Heartbeat(seq=2**53)), (0, HeartbeatAck(seq=7))]
    for chunk in replies:
        peer.receive_data(chunk)
    assert peer.events_received() == [Heartbeat(seq=2**53), HeartbeatAck(seq=7)]
    acks = peer.data_to_send()
    assert outgoing_messages(acks) == [(0, HeartbeatAck(seq=2**53))]
    for chunk in acks:
        relay.receive_data(chunk)
    assert relay.events_received() == [HeartbeatAck(seq=2**53)]
    assert peer.events_received() == []


def test_inventory_from_an_agent() -> None:
    relay, agent = connected(Role.AGENT)
    inventory = Inventory(hostname="h", os="linux", user="u", agent_version="1", addresses=())
    agent.send(inventory)
    pump((relay, agent))
    assert relay.events_received() == [inventory]


def test_device_status_to_a_console() -> None:
    relay, console = connected(Role.CONSOLE)
    status = DeviceStatus(device_id="d", name="desk", online=False)
    relay.send(status)
    pump((relay, console))
    assert console.events_received() == [status]


# -- channels ---------------------------------------------------------------------------


@pytest.mark.parametrize("peer_role", PEERS)
def test_open_and_accept(peer_role: Role) -> None:
    relay_limits = Limits(channel_window=1000)
    peer_limits = Limits(channel_window=3000)
    relay, peer = connected(peer_role, relay_limits=relay_limits, peer_limits=peer_limits)
    relay.open_channel(5, "files", {"path": "/tmp"})
    relay_out = relay.data_to_send()
    assert outgoing_messages(relay_out) == [
        (5, ChannelOpen(kind="files", window=1000, params={"path": "/tmp"}))
    ]
    deliver(relay_out, peer)
    relay.open_channel(6, "shell")
    pump((relay, peer))
    assert peer.events_received() == [
        ChannelOpened(5, "files", {"path": "/tmp"}),
        ChannelOpened(6, "shell", {}),
    ]
    assert sorted(relay.open_channels()) == [5, 6]
    assert sorted(peer.open_channels()) == [5, 6]
    peer.accept_channel(5)
    peer_out = peer.data_to_send()
    assert outgoing_messages(peer_out) == [(5, ChannelAccept(window=3000))]
    deliver(peer_out, relay)
    peer.accept_channel(6)
    pump((relay, peer))
    assert relay.events_received() == [ChannelAccepted(5), ChannelAccepted(6)]
    # each side may send what the other granted
    assert relay.send_credit(5) == 3000
    assert peer.send_credit(5) == 1000


@pytest.mark.parametrize("peer_role", PEERS)
def test_reject(peer_role: Role) -> None:
    relay, peer = connected(peer_role)
    relay.open_channel(1, "shell")
    pump((relay, peer))
    peer.reject_channel(1, ErrorCode.CONSENT_DENIED, "the user said no")
    assert list(peer.open_channels()) == []
    pump((relay, peer))
    assert relay.events_received() == [
        ChannelRejected(1, ErrorCode.CONSENT_DENIED, "the user said no")
    ]
    assert list(relay.open_channels()) == []
    # the id is free again
    relay.open_channel(1, "shell")
    pump((relay, peer))
    assert peer.events_received()[-1] == ChannelOpened(1, "shell", {})


@pytest.mark.parametrize("peer_role", PEERS)
def test_data_both_ways(peer_role: Role) -> None:
    relay, peer = with_channel(peer_role)
    window = Limits().channel_window
    relay.send_data(1, b"ls -l\n")
    peer.send_data(1, b"total 0\n")
    assert relay.send_credit(1) == window - 6
    assert peer.send_credit(1) == window - 8
    pump((relay, peer))
    assert peer.events_received() == [ChannelData(1, b"ls -l\n")]
    assert relay.events_received() == [ChannelData(1, b"total 0\n")]


def test_channels_are_independent() -> None:
    relay, agent = connected()
    relay.open_channel(1, "shell")
    relay.open_channel(2, "files")
    pump((relay, agent))
    agent.accept_channel(1)
    agent.accept_channel(2)
    pump((relay, agent))
    relay.events_received()
    agent.events_received()
    relay.send_data(2, b"file")
    relay.send_data(1, b"key")
    pump((relay, agent))
    assert agent.events_received() == [ChannelData(2, b"file"), ChannelData(1, b"key")]
    assert relay.send_credit(1) != relay.send_credit(2)


@pytest.mark.parametrize("direction", ["relay sends", "peer sends"])
def test_window_is_granted_back_in_batches(direction: str) -> None:
    small = Limits(channel_window=100)
    relay, peer = with_channel(relay_limits=small, peer_limits=small)
    sender, receiver = (relay, peer) if direction == "relay sends" else (peer, relay)
    sender.send_data(1, b"x" * 60)
    assert sender.send_credit(1) == 40
    with pytest.raises(UsageError, match="exceed the send credit"):
        sender.send_data(1, b"x" * 41)
    pump((relay, peer))
    assert receiver.events_received() == [ChannelData(1, b"x" * 60)]
    receiver.acknowledge(1, 40)
    assert receiver.data_to_send() == []  # 40 is less than half the window
    receiver.acknowledge(1, 10)
    receiver_out = receiver.data_to_send()
    assert outgoing_messages(receiver_out) == [(1, WindowAdjust(increment=50))]
    receiver.acknowledge(1, 10)
    assert receiver.data_to_send() == []
    deliver(receiver_out, sender)
    assert sender.events_received() == [CreditAvailable(1, 90)]
    assert sender.send_credit(1) == 90


def test_window_adjust_gives_credit_available() -> None:
    small = Limits(channel_window=100)
    relay, agent = with_channel(relay_limits=small, peer_limits=small)
    relay.send_data(1, b"x" * 100)
    pump((relay, agent))
    agent.events_received()
    assert relay.send_credit(1) == 0
    agent.acknowledge(1, 50)
    pump((relay, agent))
    assert relay.events_received() == [CreditAvailable(1, 50)]
    assert relay.send_credit(1) == 50
    agent.acknowledge(1, 50)
    pump((relay, agent))
    assert relay.events_received() == [CreditAvailable(1, 100)]
    relay.send_data(1, b"y" * 100)
    pump((relay, agent))
    assert agent.events_received() == [ChannelData(1, b"y" * 100)]


def test_acknowledge_more_than_received_is_a_usage_error() -> None:
    relay, agent = with_channel()
    relay.send_data(1, b"abc")
    pump((relay, agent))
    with pytest.raises(UsageError):
        agent.acknowledge(1, 4)
    agent.acknowledge(1, 3)
    assert agent.state is OPEN


def test_acknowledge_on_an_offered_channel_is_a_usage_error() -> None:
    _, agent = with_channel(accept=False)
    with pytest.raises(UsageError):
        agent.acknowledge(1, 1)


def test_acknowledge_unknown_or_closing_channel_is_ignored() -> None:
    relay, agent = with_channel()
    relay.send_data(1, b"x" * 10)
    pump((relay, agent))
    agent.acknowledge(99, 10)
    agent.close_channel(1)
    agent.data_to_send()
    agent.acknowledge(1, 10**9)
    assert agent.data_to_send() == []


@pytest.mark.parametrize("closer", ["relay", "peer"])
@pytest.mark.parametrize("peer_role", PEERS)
def test_close_channel(closer: str, peer_role: Role) -> None:
    relay, peer = with_channel(peer_role)
    first, second = (relay, peer) if closer == "relay" else (peer, relay)
    first.close_channel(1, ErrorCode.NOT_PERMITTED, "no longer allowed")
    first_out = first.data_to_send()
    assert outgoing_messages(first_out) == [
        (1, ChannelClose(code=ErrorCode.NOT_PERMITTED, message="no longer allowed"))
    ]
    first.close_channel(1)  # already closing: nothing more
    assert first.data_to_send() == []
    deliver(first_out, second)
    pump((relay, peer))
    assert second.events_received() == [
        ChannelClosed(1, ErrorCode.NOT_PERMITTED, "no longer allowed")
    ]
    assert first.events_received() == [ChannelClosed(1, ErrorCode.NOT_PERMITTED, "")]
    assert list(relay.open_channels()) == []
    assert list(peer.open_channels()) == []
    first.close_channel(1)  # gone: nothing
    assert first.data_to_send() == []


def test_close_channel_both_at_once() -> None:
    relay, agent = with_channel()
    relay.close_channel(1)
    agent.close_channel(1, ErrorCode.GOING_AWAY)
    relay_out, agent_out = relay.data_to_send(), agent.data_to_send()
    deliver(relay_out, agent)
    deliver(agent_out, relay)
    assert relay.events_received() == [ChannelClosed(1, ErrorCode.GOING_AWAY, "")]
    assert agent.events_received() == [ChannelClosed(1, ErrorCode.NORMAL, "")]
    # each saw the other's close as the answer to its own: no third close
    assert relay.data_to_send() == []
    assert agent.data_to_send() == []
    assert list(relay.open_channels()) == list(agent.open_channels()) == []


def test_data_and_window_in_flight_to_a_closing_channel_are_dropped() -> None:
    small = Limits(channel_window=100)
    relay, agent = with_channel(relay_limits=small, peer_limits=small)
    agent.send_data(1, b"z" * 100)
    pump((relay, agent))
    agent.close_channel(1)
    # sent by the relay before it saw the close
    relay.send_data(1, b"late")
    relay.acknowledge(1, 100)
    in_flight = relay.data_to_send()
    assert [kind for kind, _, _ in outgoing(in_flight)] == [FrameKind.DATA, FrameKind.CONTROL]
    for chunk in in_flight:
        agent.receive_data(chunk)
    assert agent.events_received() == []
    assert agent.state is OPEN
    pump((relay, agent))
    assert agent.events_received() == [ChannelClosed(1, ErrorCode.NORMAL, "")]


def test_relay_cancels_an_open_before_the_answer() -> None:
    relay, agent = connected()
    relay.open_channel(1, "shell")
    relay.close_channel(1, ErrorCode.GOING_AWAY, "console left")
    pump((relay, agent))
    assert agent.events_received() == [
        ChannelOpened(1, "shell", {}),
        ChannelClosed(1, ErrorCode.GOING_AWAY, "console left"),
    ]
    assert relay.events_received() == [ChannelClosed(1, ErrorCode.GOING_AWAY, "")]
    assert list(relay.open_channels()) == list(agent.open_channels()) == []


def test_accept_crossing_the_relays_cancel_is_ignored() -> None:
    relay, agent = connected()
    relay.open_channel(1, "shell")
    pump((relay, agent))
    agent.events_received()
    agent.accept_channel(1)
    agent.send_data(1, b"sent before the close arrived")
    relay.close_channel(1, ErrorCode.GOING_AWAY)
    relay_out, agent_out = relay.data_to_send(), agent.data_to_send()
    # the accept and the data reach a closing channel: dropped, no ChannelAccepted
    deliver(agent_out, relay)
    assert relay.events_received() == []
    assert list(relay.open_channels()) == [1]
    assert relay.data_to_send() == []
    # the agent answers the relay's close with its own, which ends it
    deliver(relay_out, agent)
    assert agent.events_received() == [ChannelClosed(1, ErrorCode.GOING_AWAY, "")]
    agent_reply = agent.data_to_send()
    assert outgoing_messages(agent_reply) == [(1, ChannelClose(code=ErrorCode.GOING_AWAY))]
    deliver(agent_reply, relay)
    assert relay.events_received() == [ChannelClosed(1, ErrorCode.GOING_AWAY, "")]
    assert relay.data_to_send() == agent.data_to_send() == []
    assert list(relay.open_channels()) == list(agent.open_channels()) == []
    assert relay.state is agent.state is OPEN


def test_reject_crossing_the_relays_cancel() -> None:
    """The relay closes a channel it opened while the agent rejects it.

    Closes may cross: the relay takes the Reject as the end of its closing
    channel (no ChannelClose will follow), and the agent, which forgot the
    channel when it rejected it, ignores the relay's ChannelClose.
    """
    relay, agent = connected()
    relay.open_channel(1, "shell")
    pump((relay, agent))
    agent.events_received()
    agent.reject_channel(1, ErrorCode.CONSENT_DENIED, "the user said no")
    relay.close_channel(1)
    pump((relay, agent))
    assert agent.state is relay.state is OPEN
    assert list(relay.open_channels()) == list(agent.open_channels()) == []
    assert relay.events_received() == [
        ChannelClosed(1, ErrorCode.CONSENT_DENIED, "the user said no")
    ]
    assert agent.events_received() == []
    # the id is free again on both sides
    relay.open_channel(1, "shell")
    pump((relay, agent))
    assert agent.events_received() == [ChannelOpened(1, "shell", {})]


def test_automatic_reject_crossing_the_relays_cancel() -> None:
    relay, agent = connected(peer_limits=Limits(max_channels=1))
    relay.open_channel(1, "shell")
    relay.open_channel(2, "shell")
    relay.close_channel(2, ErrorCode.GOING_AWAY)
    pump((relay, agent))
    assert relay.events_received() == [
        ChannelClosed(2, ErrorCode.TOO_MANY_CHANNELS, "too many channels")
    ]
    assert agent.events_received() == [ChannelOpened(1, "shell", {})]
    assert agent.state is relay.state is OPEN
    assert list(relay.open_channels()) == list(agent.open_channels()) == [1]


@pytest.mark.parametrize("receiver", ["relay", "agent"])
def test_close_of_an_unknown_channel_is_ignored(receiver: str) -> None:
    relay, agent = with_channel()
    conn = relay if receiver == "relay" else agent
    conn.receive_data(control(ChannelClose(code=ErrorCode.GOING_AWAY), channel=2))
    assert conn.events_received() == []
    assert conn.data_to_send() == []
    assert conn.state is OPEN
    assert list(conn.open_channels()) == [1]


def test_too_many_channels_are_rejected_automatically() -> None:
    relay, agent = connected(peer_limits=Limits(max_channels=2))
    for channel in (1, 2, 3):
        relay.open_channel(channel, "shell")
    relay_out = relay.data_to_send()
    deliver(relay_out, agent)
    assert agent.events_received() == [ChannelOpened(1, "shell", {}), ChannelOpened(2, "shell", {})]
    agent_out = agent.data_to_send()
    assert outgoing_messages(agent_out) == [
        (3, ChannelReject(code=ErrorCode.TOO_MANY_CHANNELS, message="too many channels"))
    ]
    assert sorted(agent.open_channels()) == [1, 2]
    assert agent.state is OPEN


def test_too_many_channels_round_trip() -> None:
    relay, agent = connected(peer_limits=Limits(max_channels=1))
    relay.open_channel(1, "shell")
    relay.open_channel(2, "shell")
    pump((relay, agent))
    assert relay.events_received() == [
        ChannelRejected(2, ErrorCode.TOO_MANY_CHANNELS, "too many channels")
    ]
    assert list(relay.open_channels()) == [1]
    # a closing channel still counts...
    agent.close_channel(1)
    relay.open_channel(3, "shell")
    deliver(relay.data_to_send(), agent)
    agent_out = agent.data_to_send()
    assert outgoing_messages(agent_out) == [
        (1, ChannelClose()),
        (3, ChannelReject(code=ErrorCode.TOO_MANY_CHANNELS, message="too many channels")),
    ]
    deliver(agent_out, relay)
    pump((relay, agent))
    assert list(relay.open_channels()) == list(agent.open_channels()) == []
    relay.events_received()
    agent.events_received()
    # ...and once it is gone there is room again
    relay.open_channel(4, "shell")
    pump((relay, agent))
    assert agent.events_received() == [ChannelOpened(4, "shell", {})]


# -- closing ------------------------------------------------------------------------------


@pytest.mark.parametrize("peer_role", PEERS)
@pytest.mark.parametrize("closer", ["relay", "peer"])
def test_closing_handshake(peer_role: Role, closer: str) -> None:
    relay, peer = connected(peer_role)
    first, second = (relay, peer) if closer == "relay" else (peer, relay)
    first.close(ErrorCode.GOING_AWAY, "shutting down")
    assert first.state is CLOSING
    assert not first.should_close_transport
    first_out = first.data_to_send()
    assert outgoing_messages(first_out) == [
        (0, Goodbye(code=ErrorCode.GOING_AWAY, message="shutting down"))
    ]
    first.close()  # a second close does nothing
    assert first.data_to_send() == []
    assert first.close_code == ErrorCode.GOING_AWAY
    deliver(first_out, second)
    assert second.events_received() == [ConnectionClosed(ErrorCode.GOING_AWAY, "shutting down")]
    assert second.state is CLOSED
    assert second.should_close_transport
    assert (second.close_code, second.close_message) == (ErrorCode.GOING_AWAY, "shutting down")
    reply = second.data_to_send()
    assert outgoing_messages(reply) == [(0, Goodbye(code=ErrorCode.GOING_AWAY, message=""))]
    deliver(reply, first)
    assert first.events_received() == [ConnectionClosed(ErrorCode.GOING_AWAY, "")]
    assert first.state is CLOSED
    assert first.should_close_transport
    assert (first.close_code, first.close_message) == (ErrorCode.GOING_AWAY, "shutting down")
    assert first.data_to_send() == []
    first.close()
    assert first.data_to_send() == []


def test_close_both_at_once() -> None:
    relay, agent = connected()
    relay.close()
    agent.close(ErrorCode.GOING_AWAY)
    relay_out, agent_out = relay.data_to_send(), agent.data_to_send()
    deliver(relay_out, agent)
    deliver(agent_out, relay)
    assert relay.events_received() == [ConnectionClosed(ErrorCode.GOING_AWAY, "")]
    assert agent.events_received() == [ConnectionClosed(ErrorCode.NORMAL, "")]
    assert relay.state is agent.state is CLOSED
    assert relay.close_code == ErrorCode.NORMAL
    assert agent.close_code == ErrorCode.GOING_AWAY
    assert relay.data_to_send() == agent.data_to_send() == []


def test_while_closing_incoming_messages_and_data_are_dropped() -> None:
    _relay, agent = with_channel()
    agent.close()
    agent.data_to_send()
    agent.receive_data(control(Heartbeat(seq=1)))
    agent.receive_data(control(WindowAdjust(increment=5), channel=1))
    agent.receive_data(data(1, b"late"))
    agent.receive_data(data(42, b"unknown channel, but we are leaving"))
    assert agent.events_received() == []
    assert agent.data_to_send() == []  # no HeartbeatAck
    assert agent.state is CLOSING


def test_while_closing_a_peer_fault_still_fails() -> None:
    _relay, agent = connected()
    agent.close()
    agent.data_to_send()
    expect_failure(
        agent,
        control(Inventory(hostname="", os="", user="", agent_version="")),
        ProtocolError,
        ErrorCode.UNEXPECTED_MESSAGE,
    )


def test_close_during_the_handshake() -> None:
    relay = Connection(Role.RELAY)
    agent = Connection(Role.AGENT)
    agent.close(ErrorCode.GOING_AWAY)
    pump((relay, agent))
    # the relay saw Hello then Goodbye; the agent ignored the relay's Hello
    assert [type(e) for e in relay.events_received()] == [Hello, ConnectionClosed]
    assert agent.events_received() == [ConnectionClosed(ErrorCode.GOING_AWAY, "")]
    assert agent.peer is None
    assert relay.state is agent.state is CLOSED


def test_goodbye_instead_of_hello() -> None:
    relay = Connection(Role.RELAY)
    relay.data_to_send()
    relay.receive_data(control(Goodbye(code=ErrorCode.NOT_PERMITTED, message="go away")))
    assert relay.events_received() == [ConnectionClosed(ErrorCode.NOT_PERMITTED, "go away")]
    assert relay.state is CLOSED
    assert outgoing_messages(relay.data_to_send()) == [
        (0, Goodbye(code=ErrorCode.NOT_PERMITTED, message=""))
    ]


def test_nothing_after_a_goodbye_in_the_same_chunk_is_read() -> None:
    relay = opened(Role.RELAY)
    relay.receive_data(
        control(Goodbye(code=1000)) + control(Heartbeat(seq=1)) + struct.pack(">BII", 0, 0, 0)
    )
    assert relay.events_received() == [ConnectionClosed(1000, "")]
    assert outgoing_messages(relay.data_to_send()) == [(0, Goodbye(code=1000))]


def test_good_frames_before_a_bad_header_in_the_same_chunk_are_handled() -> None:
    wire = control(Heartbeat(seq=1)) + struct.pack(">BII", 7, 0, 0)
    whole = opened(Role.RELAY)
    with pytest.raises(FrameError):
        whole.receive_data(wire)
    assert whole.events_received() == [Heartbeat(seq=1)]
    assert [type(m) for _, m in outgoing_messages(whole.data_to_send())] == [
        HeartbeatAck,
        Goodbye,
    ]


def test_eof_while_open() -> None:
    _relay, agent = connected()
    agent.receive_eof()
    assert agent.events_received() == [ConnectionClosed(ABNORMAL_CLOSURE, "connection lost")]
    assert agent.state is CLOSED
    assert agent.should_close_transport
    assert agent.close_code == ABNORMAL_CLOSURE == 1006
    assert agent.data_to_send() == []
    agent.receive_eof()
    agent.receive_data(control(Heartbeat(seq=1)))
    assert agent.events_received() == []
    assert agent.data_to_send() == []


def test_eof_before_the_handshake() -> None:
    agent = Connection(Role.AGENT)
    agent.receive_eof()
    assert agent.events_received() == [ConnectionClosed(ABNORMAL_CLOSURE, "connection lost")]


def test_eof_while_closing_reports_our_own_code() -> None:
    _relay, agent = connected()
    agent.close(ErrorCode.GOING_AWAY, "bye")
    agent.receive_eof()
    assert agent.events_received() == [ConnectionClosed(ErrorCode.GOING_AWAY, "bye")]
    assert agent.state is CLOSED


def test_eof_after_the_closing_handshake_adds_nothing() -> None:
    relay, agent = connected()
    agent.close()
    pump((relay, agent))
    assert [type(e) for e in agent.events_received()] == [ConnectionClosed]
    agent.receive_eof()
    relay.receive_eof()
    assert agent.events_received() == []
    assert [type(e) for e in relay.events_received()] == [ConnectionClosed]
    assert relay.events_received() == []


# -- peer faults -------------------------------------------------------------------------

Setup = Callable[[], tuple[Connection, bytes]]


def fresh(role: Role, wire: bytes) -> Setup:
    return lambda: (Connection(role), wire)


def after_hello(
    role: Role, wire: bytes, *, peer: Role | None = None, limits: Limits | None = None
) -> Setup:
    return lambda: (opened(role, peer=peer, limits=limits), wire)


def relay_with_channel(wire: bytes, *, accept: bool = True) -> Setup:
    return lambda: (with_channel(accept=accept)[0], wire)


def agent_with_channel(wire: bytes, *, accept: bool = True) -> Setup:
    return lambda: (with_channel(accept=accept)[1], wire)


def relay_receiving_too_much() -> tuple[Connection, bytes]:
    relay, _agent = with_channel(relay_limits=Limits(channel_window=100))
    relay.receive_data(data(1, b"a" * 100))
    relay.events_received()
    return relay, data(1, b"b")


def agent_granted_too_much() -> tuple[Connection, bytes]:
    _relay, agent = with_channel()
    credit = agent.send_credit(1)
    return agent, control(WindowAdjust(increment=MAX_WINDOW - credit + 1), channel=1)


def agent_granted_exactly_max_then_one() -> tuple[Connection, bytes]:
    _relay, agent = with_channel()
    credit = agent.send_credit(1)
    agent.receive_data(control(WindowAdjust(increment=MAX_WINDOW - credit), channel=1))
    assert agent.events_received() == [CreditAvailable(1, MAX_WINDOW)]
    return agent, control(WindowAdjust(increment=1), channel=1)


def rate_limited() -> tuple[Connection, bytes]:
    relay = Connection(Role.RELAY, limits=Limits(control_burst=3), clock=FakeClock())
    relay.receive_data(hello(Role.AGENT) + control(Heartbeat(seq=1)) + control(Heartbeat(seq=2)))
    relay.events_received()
    relay.data_to_send()
    return relay, control(Heartbeat(seq=3))


INVENTORY = Inventory(hostname="h", os="o", user="u", agent_version="1")
HS = HandshakeError
UV = ErrorCode.UNSUPPORTED_VERSION
PE = ProtocolError
UM = ErrorCode.UNEXPECTED_MESSAGE
UC = ErrorCode.UNKNOWN_CHANNEL

FAULTS: dict[str, tuple[Setup, type[ProtocolError], ErrorCode]] = {
    # wrong role in Hello
    "relay hears a relay": (fresh(Role.RELAY, hello(Role.RELAY)), HS, UV),
    "agent hears an agent": (fresh(Role.AGENT, hello(Role.AGENT)), HS, UV),
    "agent hears a console": (fresh(Role.AGENT, hello(Role.CONSOLE)), HS, UV),
    "console hears an agent": (fresh(Role.CONSOLE, hello(Role.AGENT)), HS, UV),
    "console hears a console": (fresh(Role.CONSOLE, hello(Role.CONSOLE)), HS, UV),
    # wrong version
    "version 2": (fresh(Role.RELAY, hello(Role.AGENT, version=2)), HS, UV),
    "version 65535": (fresh(Role.AGENT, hello(Role.RELAY, version=65535)), HS, UV),
    "version 0": (
        fresh(Role.AGENT, hello(Role.RELAY, version=0)),
        InvalidMessage,
        ErrorCode.INVALID_MESSAGE,
    ),
    # order
    "heartbeat before hello": (fresh(Role.RELAY, control(Heartbeat(seq=1))), HS, UV),
    "inventory before hello": (fresh(Role.RELAY, control(INVENTORY)), HS, UV),
    "channel open before hello": (
        fresh(Role.AGENT, control(ChannelOpen(kind="shell", window=10), channel=1)),
        HS,
        UV,
    ),
    "data before hello": (fresh(Role.AGENT, data(1, b"x")), HS, UV),
    "hello twice": (after_hello(Role.AGENT, hello(Role.RELAY)), HS, UV),
    "hello twice, relay": (after_hello(Role.RELAY, hello(Role.AGENT)), HS, UV),
    # scope
    "heartbeat on a channel": (
        after_hello(Role.AGENT, control(Heartbeat(seq=1), channel=3)),
        PE,
        UM,
    ),
    "hello on a channel": (fresh(Role.AGENT, control(Hello(version=1, role="relay"), 1)), PE, UM),
    "goodbye on a channel": (after_hello(Role.AGENT, control(Goodbye(code=1000), 1)), PE, UM),
    "window adjust on channel 0": (
        relay_with_channel(control(WindowAdjust(increment=1), channel=0)),
        PE,
        UM,
    ),
    "channel open on channel 0": (
        after_hello(Role.AGENT, control(ChannelOpen(kind="shell", window=1), channel=0)),
        PE,
        UM,
    ),
    "channel close on channel 0": (agent_with_channel(control(ChannelClose(), 0)), PE, UM),
    # what the peer's role may not send
    "inventory from the relay": (after_hello(Role.AGENT, control(INVENTORY)), PE, UM),
    "inventory from a console": (
        after_hello(Role.RELAY, control(INVENTORY), peer=Role.CONSOLE),
        PE,
        UM,
    ),
    "device status from an agent": (
        after_hello(Role.RELAY, control(DeviceStatus(device_id="d", name="n", online=True))),
        PE,
        UM,
    ),
    "channel open from an agent": (
        after_hello(Role.RELAY, control(ChannelOpen(kind="shell", window=1), channel=1)),
        PE,
        UM,
    ),
    "channel open from a console": (
        after_hello(
            Role.RELAY, control(ChannelOpen(kind="x", window=1), channel=1), peer=Role.CONSOLE
        ),
        PE,
        UM,
    ),
    "channel accept from the relay": (
        agent_with_channel(control(ChannelAccept(window=1), channel=1), accept=False),
        PE,
        UM,
    ),
    "channel reject from the relay": (
        agent_with_channel(control(ChannelReject(code=4000), channel=1), accept=False),
        PE,
        UM,
    ),
    # channel state
    "data on an unknown channel": (relay_with_channel(data(2, b"x")), UnknownChannel, UC),
    "data on channel 0": (after_hello(Role.RELAY, data(0, b"x")), UnknownChannel, UC),
    "window adjust on an unknown channel": (
        relay_with_channel(control(WindowAdjust(increment=1), channel=2)),
        UnknownChannel,
        UC,
    ),
    "accept of an unknown channel": (
        after_hello(Role.RELAY, control(ChannelAccept(window=1), channel=9)),
        UnknownChannel,
        UC,
    ),
    "duplicate channel open": (
        agent_with_channel(control(ChannelOpen(kind="shell", window=1), channel=1)),
        PE,
        UM,
    ),
    "duplicate channel open while offered": (
        agent_with_channel(control(ChannelOpen(kind="x", window=1), 1), accept=False),
        PE,
        UM,
    ),
    "accept twice": (relay_with_channel(control(ChannelAccept(window=1), channel=1)), PE, UM),
    "reject after accept": (
        relay_with_channel(control(ChannelReject(code=4000), channel=1)),
        PE,
        UM,
    ),
    "window adjust before accept": (
        relay_with_channel(control(WindowAdjust(increment=1), channel=1), accept=False),
        PE,
        UM,
    ),
    "window adjust on an offered channel": (
        agent_with_channel(control(WindowAdjust(increment=1), channel=1), accept=False),
        PE,
        UM,
    ),
    "data on an offered channel": (agent_with_channel(data(1, b"x"), accept=False), PE, UM),
    # flow control
    "data beyond the window": (relay_receiving_too_much, FlowControlError, ErrorCode.FLOW_CONTROL),
    "data frame larger than the window": (
        lambda: (with_channel(relay_limits=Limits(channel_window=10))[0], data(1, b"x" * 11)),
        FlowControlError,
        ErrorCode.FLOW_CONTROL,
    ),
    "window grown past MAX_WINDOW": (
        agent_granted_too_much,
        FlowControlError,
        ErrorCode.FLOW_CONTROL,
    ),
    "window at MAX_WINDOW grown by one": (
        agent_granted_exactly_max_then_one,
        FlowControlError,
        ErrorCode.FLOW_CONTROL,
    ),
    # frames and bodies
    "unknown frame kind": (
        after_hello(Role.RELAY, struct.pack(">BII", 3, 0, 0)),
        FrameError,
        ErrorCode.MALFORMED_FRAME,
    ),
    "unknown frame kind first": (
        fresh(Role.RELAY, struct.pack(">BII", 0, 0, 0)),
        FrameError,
        ErrorCode.MALFORMED_FRAME,
    ),
    "garbage control body": (
        after_hello(Role.RELAY, struct.pack(">BII", 1, 0, 1) + b"\xc1"),
        FrameError,
        ErrorCode.MALFORMED_FRAME,
    ),
    "empty control body": (
        fresh(Role.RELAY, struct.pack(">BII", 1, 0, 0)),
        FrameError,
        ErrorCode.MALFORMED_FRAME,
    ),
    "unknown message type": (
        after_hello(Role.RELAY, struct.pack(">BII", 1, 0, 7) + b"\x81\xa1t\xa3foo"),
        UnknownMessage,
        ErrorCode.UNKNOWN_MESSAGE,
    ),
    "invalid message": (
        after_hello(Role.RELAY, struct.pack(">BII", 1, 0, 8) + b"\x81\xa1t\xa4ping"),
        InvalidMessage,
        ErrorCode.INVALID_MESSAGE,
    ),
    "goodbye with an invalid code": (
        after_hello(Role.RELAY, struct.pack(">BII", 1, 0, 13) + b"\x82\xa1t\xa3bye\xa4code\x00"),
        InvalidMessage,
        ErrorCode.INVALID_MESSAGE,
    ),
    "string too long in hello": (
        fresh(Role.RELAY, hello(Role.AGENT, software="s" * 129)),
        LimitExceeded,
        ErrorCode.LIMIT_EXCEEDED,
    ),
    "control body larger than max_control_size": (
        after_hello(
            Role.RELAY,
            control(Heartbeat(seq=1)) + struct.pack(">BII", 1, 0, 1025) + b"\x00" * 1025,
            limits=Limits(max_frame_size=2048, max_control_size=1024),
        ),
        FrameTooLarge,
        ErrorCode.FRAME_TOO_LARGE,
    ),
    "control header larger than max_control_size": (
        after_hello(
            Role.RELAY,
            struct.pack(">BII", 1, 0, 1025),
            limits=Limits(max_frame_size=2048, max_control_size=1024),
        ),
        FrameTooLarge,
        ErrorCode.FRAME_TOO_LARGE,
    ),
    "oversized frame": (
        after_hello(Role.RELAY, struct.pack(">BII", 2, 1, 256 * 1024 + 1)),
        FrameTooLarge,
        ErrorCode.FRAME_TOO_LARGE,
    ),
    "oversized frame before hello": (
        fresh(Role.AGENT, struct.pack(">BII", 1, 0, 2**32 - 1) + b"\x00" * 100_000),
        FrameTooLarge,
        ErrorCode.FRAME_TOO_LARGE,
    ),
    "list longer than max_list": (
        fresh(Role.RELAY, hello(Role.AGENT, capabilities=tuple("c" * 257))),
        LimitExceeded,
        ErrorCode.LIMIT_EXCEEDED,
    ),
    # rate
    "control messages too fast": (rate_limited, RateLimited, ErrorCode.RATE_LIMITED),
}


@pytest.mark.parametrize(("setup", "cls", "code"), list(FAULTS.values()), ids=list(FAULTS))
def test_peer_fault(setup: Setup, cls: type[ProtocolError], code: ErrorCode) -> None:
    conn, wire = setup()
    expect_failure(conn, wire, cls, code)


@pytest.mark.parametrize(("setup", "cls", "code"), list(FAULTS.values()), ids=list(FAULTS))
def test_peer_fault_byte_at_a_time(setup: Setup, cls: type[ProtocolError], code: ErrorCode) -> None:
    conn, wire = setup()
    expect_failure(conn, wire, cls, code, byte_at_a_time=True)


def test_peer_fault_keeps_earlier_events() -> None:
    relay = Connection(Role.RELAY)
    with pytest.raises(HandshakeError):
        relay.receive_data(hello(Role.AGENT) + hello(Role.AGENT))
    assert [type(e) for e in relay.events_received()] == [Hello]


@pytest.mark.parametrize(
    ("kind", "length"),
    [
        (FrameKind.DATA, 2**32 - 1),
        (FrameKind.CONTROL, 2**32 - 1),
        # within max_frame_size, but not within max_control_size
        (FrameKind.CONTROL, Limits().max_control_size + 1),
    ],
)
def test_oversized_frame_is_refused_before_buffering(kind: FrameKind, length: int) -> None:
    relay = opened(Role.RELAY)
    header = struct.pack(">BII", kind, 0 if kind is FrameKind.CONTROL else 1, length)
    with pytest.raises(FrameTooLarge):
        relay.receive_data(header + b"\x00" * (256 * 1024))
    assert relay._parser.buffered <= HEADER_SIZE


def test_the_goodbye_message_is_the_safe_message() -> None:
    relay = opened(Role.RELAY)
    with pytest.raises(UnknownMessage) as caught:
        relay.receive_data(struct.pack(">BII", 1, 0, 7) + b"\x81\xa1t\xa3foo")
    (bye,) = [m for _, m in outgoing_messages(relay.data_to_send())]
    assert bye == Goodbye(code=ErrorCode.UNKNOWN_MESSAGE, message=str(caught.value))
    assert "foo" in bye.message


# -- rate limiting ---------------------------------------------------------------------


def rate_limited_relay(burst: int, rate: float, clock: FakeClock) -> Connection:
    """A relay after Hello, which took one token of ``burst``."""
    limits = Limits(control_burst=burst, control_rate=rate)
    return opened(Role.RELAY, limits=limits, clock=clock)


def ping(relay: Connection, seq: int = 1) -> None:
    relay.receive_data(control(Heartbeat(seq=seq)))


def test_burst_then_refuse() -> None:
    clock = FakeClock()
    relay = rate_limited_relay(5, 1.0, clock)
    for seq in range(4):
        ping(relay, seq)
    assert len(relay.events_received()) == 4
    expect_failure(relay, control(Heartbeat(seq=9)), RateLimited, ErrorCode.RATE_LIMITED)


def test_tokens_refill_at_the_rate() -> None:
    clock = FakeClock()
    relay = rate_limited_relay(2, 4.0, clock)
    ping(relay)  # the burst of 2 is spent (Hello + this)
    clock.advance(0.5)  # 2 tokens back
    ping(relay)
    ping(relay)
    clock.advance(0.2)  # 0.8 of a token: not enough
    expect_failure(relay, control(Heartbeat(seq=1)), RateLimited, ErrorCode.RATE_LIMITED)


def test_refill_is_capped_at_the_burst() -> None:
    clock = FakeClock()
    relay = rate_limited_relay(3, 100.0, clock)
    clock.advance(3600)
    for _ in range(3):
        ping(relay)
    expect_failure(relay, control(Heartbeat(seq=1)), RateLimited, ErrorCode.RATE_LIMITED)


def test_a_clock_going_backwards_takes_no_tokens() -> None:
    clock = FakeClock()
    relay = rate_limited_relay(3, 1.0, clock)
    clock.advance(-100)
    ping(relay)
    ping(relay)
    assert len(relay.events_received()) == 2
    expect_failure(relay, control(Heartbeat(seq=1)), RateLimited, ErrorCode.RATE_LIMITED)


def test_data_frames_are_not_rate_limited() -> None:
    relay, agent = connected(
        relay_limits=Limits(control_burst=5, control_rate=0.001), clock=FakeClock()
    )
    relay.open_channel(1, "shell")
    pump((relay, agent))
    agent.accept_channel(1)
    pump((relay, agent))  # Hello + accept: 2 tokens of 5 spent
    for _ in range(50):
        agent.send_data(1, b"k")
    pump((relay, agent))
    assert relay.state is OPEN
    assert len([e for e in relay.events_received() if isinstance(e, ChannelData)]) == 50


# -- misuse --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_send_before_the_handshake(role: Role) -> None:
    conn = Connection(role)
    conn.data_to_send()
    with pytest.raises(UsageError, match="in state handshake"):
        conn.send(Heartbeat(seq=1))
    assert conn.data_to_send() == []


def test_send_after_close() -> None:
    relay, agent = connected()
    agent.close()
    with pytest.raises(UsageError, match="in state closing"):
        agent.send(Heartbeat(seq=1))
    pump((relay, agent))
    with pytest.raises(UsageError, match="in state closed"):
        agent.send(Heartbeat(seq=1))
    with pytest.raises(UsageError):
        relay.open_channel(1, "shell")


@pytest.mark.parametrize(
    "message",
    [
        WindowAdjust(increment=1),
        ChannelClose(),
        ChannelAccept(window=1),
        Hello(version=1, role="agent"),
        Goodbye(code=1000),
    ],
    ids=lambda m: type(m).__name__,
)
def test_send_refuses_channel_messages_hello_and_goodbye(message: Message) -> None:
    _, agent = connected()
    with pytest.raises(UsageError):
        agent.send(message)
    assert agent.data_to_send() == []


@pytest.mark.parametrize(
    ("role", "message"),
    [
        (Role.RELAY, Inventory(hostname="h", os="o", user="u", agent_version="1")),
        (Role.CONSOLE, Inventory(hostname="h", os="o", user="u", agent_version="1")),
        (Role.AGENT, DeviceStatus(device_id="d", name="n", online=True)),
        (Role.CONSOLE, DeviceStatus(device_id="d", name="n", online=True)),
    ],
)
def test_send_refuses_what_the_role_may_not_send(role: Role, message: Message) -> None:
    conn = opened(role, peer=Role.CONSOLE if role is Role.RELAY else None)
    with pytest.raises(UsageError, match="does not send"):
        conn.send(message)
    assert conn.data_to_send() == []
    assert conn.state is OPEN


@pytest.mark.parametrize("role", PEERS)
def test_only_the_relay_opens_channels(role: Role) -> None:
    conn = opened(role)
    with pytest.raises(UsageError, match="only the relay"):
        conn.open_channel(1, "shell")
    assert list(conn.open_channels()) == []
    assert conn.data_to_send() == []


@pytest.mark.parametrize("channel", [0, -1, 2**32])
def test_open_channel_with_an_invalid_id(channel: int) -> None:
    relay = opened(Role.RELAY)
    with pytest.raises(UsageError, match="invalid or in use"):
        relay.open_channel(channel, "shell")
    assert relay.data_to_send() == []


def test_open_channel_with_the_largest_id() -> None:
    relay, agent = connected()
    relay.open_channel(2**32 - 1, "shell")
    pump((relay, agent))
    assert agent.events_received() == [ChannelOpened(2**32 - 1, "shell", {})]


def test_open_channel_with_an_id_in_use() -> None:
    relay = opened(Role.RELAY)
    relay.open_channel(1, "shell")
    relay.data_to_send()
    with pytest.raises(UsageError, match="invalid or in use"):
        relay.open_channel(1, "files")
    assert relay.data_to_send() == []


def test_open_channel_before_the_handshake() -> None:
    relay = Connection(Role.RELAY)
    relay.data_to_send()
    with pytest.raises(UsageError):
        relay.open_channel(1, "shell")
    assert list(relay.open_channels()) == []
    assert relay.data_to_send() == []


def test_send_data_beyond_credit() -> None:
    relay, _agent = with_channel(peer_limits=Limits(channel_window=10))
    with pytest.raises(UsageError, match="exceed the send credit"):
        relay.send_data(1, b"x" * 11)
    assert relay.data_to_send() == []
    assert relay.send_credit(1) == 10
    relay.send_data(1, b"x" * 10)
    with pytest.raises(UsageError):
        relay.send_data(1, b"x")


def test_send_data_before_accept() -> None:
    relay, agent = with_channel(accept=False)
    with pytest.raises(UsageError, match="not open"):
        relay.send_data(1, b"x")
    with pytest.raises(UsageError, match="not open"):
        agent.send_data(1, b"x")
    with pytest.raises(UsageError):
        relay.send_credit(1)


def test_channel_methods_on_an_unknown_channel() -> None:
    _relay, agent = with_channel()
    for call in (
        lambda: agent.accept_channel(2),
        lambda: agent.reject_channel(2, 4000),
        lambda: agent.send_credit(2),
        lambda: agent.send_data(2, b"x"),
    ):
        with pytest.raises(UsageError, match="channel 2 is not"):
            call()
    assert agent.data_to_send() == []


def test_accept_and_reject_only_offered_channels() -> None:
    relay, agent = with_channel()
    with pytest.raises(UsageError, match="not offered"):
        agent.accept_channel(1)  # already open
    with pytest.raises(UsageError, match="not offered"):
        agent.reject_channel(1, 4000)
    relay.open_channel(2, "shell")
    with pytest.raises(UsageError, match="not offered"):
        relay.accept_channel(2)  # the relay's own, opening
    agent.close_channel(1)
    with pytest.raises(UsageError):
        agent.send_data(1, b"x")  # closing
    assert list(agent.open_channels()) == [1]


def test_usage_errors_leave_the_connection_working() -> None:
    relay, agent = with_channel()
    for misuse in (
        lambda: agent.open_channel(2, "x"),
        lambda: agent.send(WindowAdjust(increment=1)),
        lambda: agent.send_data(1, b"x" * (2**21)),
        lambda: agent.acknowledge(1, 1),
    ):
        with pytest.raises(UsageError):
            misuse()
    assert agent.state is OPEN
    agent.send(Heartbeat(seq=1))
    pump((relay, agent))
    assert relay.events_received() == [Heartbeat(seq=1)]


# -- codes we send must be ones the peer accepts ---------------------------------------


def with_open_and_offered() -> tuple[Connection, Connection]:
    """A relay and agent sharing channel 1 (open) and channel 2 (offered), drained."""
    relay, agent = with_channel()
    relay.open_channel(2, "shell")
    pump((relay, agent))
    relay.events_received()
    agent.events_received()
    return relay, agent


@pytest.mark.parametrize("code", [-1, 0, 999, 5000, 65535, 2**32])
def test_codes_outside_the_wire_range_are_usage_errors(code: int) -> None:
    relay, agent = with_open_and_offered()
    for call in (
        lambda: agent.close(code),
        lambda: agent.reject_channel(2, code),
        lambda: agent.close_channel(1, code),
        lambda: relay.close_channel(1, code),
        lambda: relay.close_channel(2, code),
        lambda: relay.close(code, "bye"),
    ):
        with pytest.raises(UsageError, match=rf"code {code} is outside 1000\.\.4999"):
            call()
    # nothing was sent and nothing changed
    assert relay.data_to_send() == agent.data_to_send() == []
    assert relay.state is agent.state is OPEN
    assert sorted(relay.open_channels()) == sorted(agent.open_channels()) == [1, 2]
    agent.accept_channel(2)
    pump((relay, agent))
    assert relay.events_received() == [ChannelAccepted(2)]
    # a bad code is refused even where the call would do nothing
    agent.close()
    with pytest.raises(UsageError):
        agent.close(code)
    with pytest.raises(UsageError):
        agent.close_channel(99, code)


def test_codes_at_the_ends_of_the_range_are_sent() -> None:
    relay, agent = with_open_and_offered()
    agent.reject_channel(2, 4999, "last")
    agent.close_channel(1, 1000)
    pump((relay, agent))
    assert relay.events_received() == [ChannelRejected(2, 4999, "last"), ChannelClosed(1, 1000, "")]
    relay.close(4999)
    pump((relay, agent))
    assert agent.events_received() == [ChannelClosed(1, 1000, ""), ConnectionClosed(4999, "")]
    assert relay.state is agent.state is CLOSED


# -- channel calls once the connection is closing ---------------------------------------


def agent_leaving(how: str) -> Connection:
    """An agent with channel 1 open (3 bytes received) and 2 offered, then closed ``how``."""
    relay, agent = with_open_and_offered()
    relay.send_data(1, b"abc")
    pump((relay, agent))
    assert agent.events_received() == [ChannelData(1, b"abc")]
    if how == "closing":
        agent.close()
    elif how == "closed by us":
        agent.close()
        pump((relay, agent))
    elif how == "closed by the peer":
        relay.close()
        pump((relay, agent))
    else:
        with pytest.raises(FrameError):
            agent.receive_data(struct.pack(">BII", 9, 0, 0))
    agent.events_received()
    agent.data_to_send()
    return agent


LEAVING = ["closing", "closed by us", "closed by the peer", "failed"]


@pytest.mark.parametrize("how", LEAVING)
def test_send_data_and_accept_after_close_are_usage_errors(how: str) -> None:
    agent = agent_leaving(how)
    state = agent.state.value
    assert state == ("closing" if how == "closing" else "closed")
    with pytest.raises(UsageError, match=f"cannot send data in state {state}"):
        agent.send_data(1, b"x")
    with pytest.raises(UsageError, match=f"cannot send data in state {state}"):
        agent.send_data(1, b"")
    with pytest.raises(UsageError, match=f"cannot accept a channel in state {state}"):
        agent.accept_channel(2)
    assert agent.data_to_send() == []
    assert sorted(agent.open_channels()) == [1, 2]


@pytest.mark.parametrize("how", LEAVING)
def test_close_reject_and_acknowledge_after_close_do_nothing(how: str) -> None:
    agent = agent_leaving(how)
    agent.acknowledge(1, 3)
    agent.acknowledge(1, 10**9)  # not even checked: the channel is going away
    agent.close_channel(1, ErrorCode.GOING_AWAY)
    agent.reject_channel(2, ErrorCode.CONSENT_DENIED)
    assert agent.data_to_send() == []
    assert agent.events_received() == []
    assert sorted(agent.open_channels()) == [1, 2]


def test_relay_channel_calls_after_close() -> None:
    small = Limits(channel_window=100)
    relay, agent = with_channel(relay_limits=small, peer_limits=small)
    relay.open_channel(2, "files")
    agent.send_data(1, b"y" * 60)
    pump((relay, agent))
    relay.events_received()
    relay.close()
    relay.data_to_send()
    relay.acknowledge(1, 60)  # past half the window: would have granted credit
    relay.close_channel(1)
    relay.close_channel(2)  # opening
    with pytest.raises(UsageError, match="in state closing"):
        relay.send_data(1, b"x")
    with pytest.raises(UsageError, match="in state closing"):
        relay.open_channel(3, "shell")
    assert relay.data_to_send() == []
