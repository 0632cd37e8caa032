"""The sans-I/O protocol engine: bytes in, events and bytes out.

A :class:`Connection` never touches a socket, a clock it was not given, or a
file. Its adapter (agent, relay, console: a few lines each) feeds it the bytes
it read with :meth:`Connection.receive_data`, acts on
:meth:`Connection.events_received`, and writes what
:meth:`Connection.data_to_send` returns, one WebSocket message per item.

When the peer breaks the protocol, :meth:`receive_data` queues a ``Goodbye``
carrying the error's code, moves to ``CLOSED`` and raises the
:class:`~protocol.errors.ProtocolError`; the adapter sends what is queued and
closes that connection, and no other connection is affected.

Our own misuse raises :class:`~protocol.errors.UsageError` and queues nothing:
a code outside 1000..4999, sending on a channel that is not open, or sending
once the connection is closing. Calls that only wind a channel down
(``close_channel``, ``reject_channel``, ``acknowledge``) do nothing once the
connection is closing: the channel goes away with it. Channel closes may cross
on the wire, so a close for a channel this side already forgot is ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from enum import Enum

from .channels import Channel, ChannelState
from .errors import (
    ErrorCode,
    HandshakeError,
    ProtocolError,
    RateLimited,
    UnknownChannel,
    UsageError,
)
from .events import (
    ChannelAccepted,
    ChannelClosed,
    ChannelData,
    ChannelMessage,
    ChannelOpened,
    ChannelRejected,
    ConnectionClosed,
    CreditAvailable,
    Event,
)
from .frames import MAX_CHANNEL_ID, FrameKind, FrameParser, encode_frame
from .limits import Limits
from .messages import (
    MAX_CODE,
    MIN_CODE,
    ChannelAccept,
    ChannelClose,
    ChannelOpen,
    ChannelReject,
    Goodbye,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Message,
    Role,
    Scope,
    WindowAdjust,
    decode_message,
)

__all__ = [
    "ABNORMAL_CLOSURE",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Connection",
    "ConnectionState",
]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
ABNORMAL_CLOSURE = 1006


class ConnectionState(Enum):
    #: Waiting for the peer's Hello.
    HANDSHAKE = "handshake"
    OPEN = "open"
    #: This side sent Goodbye and waits for the peer's.
    CLOSING = "closing"
    CLOSED = "closed"


#: Channel messages the connection handles itself; the rest go to the application.
_CHANNEL_MECHANICS = (ChannelOpen, ChannelAccept, ChannelReject, WindowAdjust, ChannelClose)

#: Which peer roles each role talks to.
_PEER_ROLES: Mapping[Role, frozenset[Role]] = {
    Role.AGENT: frozenset({Role.RELAY}),
    Role.CONSOLE: frozenset({Role.RELAY}),
    Role.RELAY: frozenset({Role.AGENT, Role.CONSOLE}),
}

#: Connection state after receiving a message of a given type, h11 style.
#: Any other control message is only valid in OPEN.
_TRANSITIONS: Mapping[tuple[ConnectionState, type[Message]], ConnectionState] = {
    (ConnectionState.HANDSHAKE, Hello): ConnectionState.OPEN,
    (ConnectionState.HANDSHAKE, Goodbye): ConnectionState.CLOSED,
    (ConnectionState.OPEN, Goodbye): ConnectionState.CLOSED,
    (ConnectionState.CLOSING, Goodbye): ConnectionState.CLOSED,
}


class Connection:
    """One end of a Helpline connection."""

    def __init__(
        self,
        role: Role,
        *,
        limits: Limits | None = None,
        software: str = "",
        capabilities: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.role = role
        self.limits = limits or Limits()
        self.state = ConnectionState.HANDSHAKE
        self.peer: Hello | None = None
        self.close_code: int | None = None
        self.close_message = ""
        self._software = software
        self._capabilities = capabilities
        self._clock = clock
        self._parser = FrameParser(self.limits.max_frame_size, self.limits.max_control_size)
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._channels: dict[int, Channel] = {}
        self._peer_max_frame = 1024
        self._tokens = float(self.limits.control_burst)
        self._last_refill = clock()
        self._send_hello()

    # -- what the peer said ----------------------------------------------------

    @property
    def peer_role(self) -> Role | None:
        return None if self.peer is None else Role(self.peer.role)

    @property
    def peer_capabilities(self) -> frozenset[str]:
        return frozenset() if self.peer is None else frozenset(self.peer.capabilities)

    # -- input ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the transport.

        Raises :class:`ProtocolError` if the peer broke the protocol; the
        connection is then ``CLOSED`` with a ``Goodbye`` queued.
        """
        if self.state is ConnectionState.CLOSED:
            return
        try:
            for frame in self._parser.iter_frames(data):
                if frame.kind is FrameKind.CONTROL:
                    message = decode_message(frame.body, self.limits)
                    # Window grants pace data, like the data frames they answer: they are
                    # bounded by the window, not by the control-message rate.
                    if not isinstance(message, WindowAdjust):
                        self._take_control_token()
                    self._handle_message(frame.channel, message)
                else:
                    self._handle_data(frame.channel, frame.body)
                if self.should_close_transport:
                    break
        except ProtocolError as error:
            self._fail(error)
            raise

    def receive_eof(self) -> None:
        """The transport ended (orderly or not)."""
        if self.state is ConnectionState.CLOSED:
            return
        self.state = ConnectionState.CLOSED
        if self.close_code is None:
            self.close_code = ABNORMAL_CLOSURE
            self.close_message = "connection lost"
        self._events.append(ConnectionClosed(self.close_code, self.close_message))

    def events_received(self) -> list[Event]:
        """Events parsed since the last call, in order."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Frames to write since the last call, one transport message each."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    @property
    def should_close_transport(self) -> bool:
        """True once nothing more will be sent or accepted: close after flushing."""
        return self.state is ConnectionState.CLOSED

    # -- output ----------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Send a connection-level control message."""
        if message.SCOPE is not Scope.CONNECTION:
            raise UsageError(f"{message.TYPE} is a channel message; use the channel methods")
        if isinstance(message, Hello | Goodbye):
            raise UsageError("Hello and Goodbye are sent by the connection itself")
        self._check_can_send(message)
        self._queue_control(0, message)

    def close(self, code: int = ErrorCode.NORMAL, message: str = "") -> None:
        """Start an orderly close: send Goodbye, then wait for the peer's."""
        _check_code(code)
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        self._queue_control(0, Goodbye(code=code, message=message))
        self.close_code, self.close_message = code, message
        self.state = ConnectionState.CLOSING

    def open_channel(
        self, channel: int, kind: str, params: Mapping[str, str] | None = None
    ) -> None:
        """Relay only: open ``channel`` (an id the relay assigned) on this connection."""
        if self.role is not Role.RELAY:
            raise UsageError("only the relay opens channels")
        if not 0 < channel <= MAX_CHANNEL_ID or channel in self._channels:
            raise UsageError(f"channel id {channel} is invalid or in use")
        message = ChannelOpen(
            kind=kind, window=self.limits.channel_window, params=dict(params or {})
        )
        self._check_can_send(message)
        self._channels[channel] = Channel(
            channel,
            kind,
            ChannelState.OPENING,
            receive_credit=self.limits.channel_window,
            receive_window=self.limits.channel_window,
        )
        self._queue_control(channel, message)

    def accept_channel(self, channel: int) -> None:
        self._check_open("accept a channel")
        state = self._channel(channel, ChannelState.OFFERED)
        state.state = ChannelState.OPEN
        state.receive_credit = state.receive_window = self.limits.channel_window
        self._queue_control(channel, ChannelAccept(window=self.limits.channel_window))

    def reject_channel(self, channel: int, code: int, message: str = "") -> None:
        _check_code(code)
        if self.state is not ConnectionState.OPEN:
            return  # the offer goes away with the connection
        self._channel(channel, ChannelState.OFFERED)
        del self._channels[channel]
        self._queue_control(channel, ChannelReject(code=code, message=message))

    def send_credit(self, channel: int) -> int:
        """Bytes that may be sent on ``channel`` now."""
        return self._channel(channel, ChannelState.OPEN).send_credit

    def send_data(self, channel: int, data: bytes) -> None:
        """Send ``data``, split into frames the peer accepts. Must fit the credit."""
        self._check_open("send data")
        state = self._channel(channel, ChannelState.OPEN)
        state.spend(len(data))
        step = self._peer_max_frame
        for start in range(0, len(data), step):
            self._outgoing.append(encode_frame(FrameKind.DATA, channel, data[start : start + step]))

    def acknowledge(self, channel: int, size: int) -> None:
        """The application consumed ``size`` bytes of ``channel``: grant them back."""
        state = self._live_channel(channel)
        if state is None:
            return  # late acknowledgement of a channel or connection being torn down
        increment = state.consume(size)
        if increment:
            self._queue_control(channel, WindowAdjust(increment=increment))

    def close_channel(self, channel: int, code: int = ErrorCode.NORMAL, message: str = "") -> None:
        _check_code(code)
        state = self._live_channel(channel)
        if state is None:
            return  # already gone or going, or going away with the connection
        state.state = ChannelState.CLOSING
        self._queue_control(channel, ChannelClose(code=code, message=message))

    def send_channel_message(self, channel: int, message: Message) -> None:
        """Send an application message on an open channel (a resize, an exit status...)."""
        if message.SCOPE is not Scope.CHANNEL or isinstance(message, _CHANNEL_MECHANICS):
            raise UsageError(f"{message.TYPE} is not an application channel message")
        if self.role not in message.SENDERS:
            raise UsageError(f"a {self.role.value} does not send {message.TYPE}")
        state = self._channels.get(channel)
        # The side answering an open may speak before it answers (a consent decision).
        if state is None or state.state not in (ChannelState.OPEN, ChannelState.OFFERED):
            raise UsageError(f"channel {channel} is not open")
        if self.state is not ConnectionState.OPEN:
            raise UsageError(f"cannot send {message.TYPE} in state {self.state.value}")
        self._queue_control(channel, message)

    def has_channel(self, channel: int) -> bool:
        """Whether ``channel`` exists here (in any state, closing included)."""
        return channel in self._channels

    def open_channels(self) -> Iterator[int]:
        return iter(list(self._channels))

    # -- internals -----------------------------------------------------------------

    def _send_hello(self) -> None:
        hello = Hello(
            version=PROTOCOL_VERSION,
            role=self.role.value,
            software=self._software,
            capabilities=self._capabilities,
            max_frame_size=self.limits.max_frame_size,
        )
        self._queue_control(0, hello)

    def _check_open(self, action: str) -> None:
        if self.state is not ConnectionState.OPEN:
            raise UsageError(f"cannot {action} in state {self.state.value}")

    def _live_channel(self, channel: int) -> Channel | None:
        """The channel, unless it is gone, closing, or going away with the connection."""
        state = self._channels.get(channel)
        if state is None or state.state is ChannelState.CLOSING:
            return None
        return state if self.state is ConnectionState.OPEN else None

    def _check_can_send(self, message: Message) -> None:
        if self.state is not ConnectionState.OPEN:
            raise UsageError(f"cannot send {message.TYPE} in state {self.state.value}")
        if self.role not in message.SENDERS:
            raise UsageError(f"a {self.role.value} does not send {message.TYPE}")

    def _queue_control(self, channel: int, message: Message) -> None:
        self._outgoing.append(encode_frame(FrameKind.CONTROL, channel, message.encode()))

    def _take_control_token(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._last_refill)
        self._last_refill = now
        self._tokens = min(
            float(self.limits.control_burst), self._tokens + elapsed * self.limits.control_rate
        )
        if self._tokens < 1.0:
            raise RateLimited()
        self._tokens -= 1.0

    def _fail(self, error: ProtocolError) -> None:
        # Never CLOSED here: receive_data returns early once closed.
        self._queue_control(0, Goodbye(code=error.code, message=error.message[:1024]))
        self.state = ConnectionState.CLOSED
        self.close_code, self.close_message = error.code, error.message

    def _channel(self, channel: int, expected: ChannelState) -> Channel:
        state = self._channels.get(channel)
        if state is None or state.state is not expected:
            raise UsageError(f"channel {channel} is not {expected.value}")
        return state

    def _handle_message(self, channel: int, message: Message) -> None:
        peer_role = self.peer_role
        if peer_role is not None and peer_role not in message.SENDERS:
            raise ProtocolError(f"a {peer_role.value} may not send {message.TYPE}")
        wants_channel = message.SCOPE is Scope.CHANNEL
        if wants_channel != (channel != 0):
            raise ProtocolError(f"{message.TYPE} on the wrong channel")
        next_state = _TRANSITIONS.get((self.state, type(message)))
        if next_state is not None:
            self._transition(message, next_state)
        elif self.state is ConnectionState.HANDSHAKE:
            raise HandshakeError("expected Hello first")
        elif self.state is ConnectionState.CLOSING:
            return  # in flight before our Goodbye; nothing more is acted upon
        elif isinstance(message, Hello):
            raise HandshakeError("Hello sent twice")
        elif wants_channel:
            self._handle_channel_message(channel, message)
        else:
            if isinstance(message, Heartbeat):
                self._queue_control(0, HeartbeatAck(seq=message.seq))
            self._events.append(message)

    def _transition(self, message: Message, next_state: ConnectionState) -> None:
        if isinstance(message, Hello):
            role = Role(message.role)
            if role not in _PEER_ROLES[self.role]:
                raise HandshakeError(f"a {self.role.value} does not talk to a {role.value}")
            if message.version not in SUPPORTED_VERSIONS:
                raise HandshakeError(f"unsupported protocol version {message.version}")
            self.peer = message
            self._peer_max_frame = message.max_frame_size
            self._events.append(message)
        else:
            assert isinstance(message, Goodbye)
            if self.state is not ConnectionState.CLOSING:
                self._queue_control(0, Goodbye(code=message.code, message=""))
                self.close_code, self.close_message = message.code, message.message
            self._events.append(ConnectionClosed(message.code, message.message))
        self.state = next_state

    def _handle_channel_message(self, channel: int, message: Message) -> None:
        if isinstance(message, ChannelOpen):
            self._handle_open(channel, message)
            return
        state = self._channels.get(channel)
        if state is None:
            if isinstance(message, ChannelClose):
                return  # crossed our reject (or automatic reject): already gone here
            raise UnknownChannel(f"no channel {channel}")
        if isinstance(message, ChannelClose):
            if state.state is not ChannelState.CLOSING:
                self._queue_control(channel, ChannelClose(code=message.code))
            del self._channels[channel]
            self._events.append(ChannelClosed(channel, message.code, message.message))
        elif state.state is ChannelState.CLOSING:
            if isinstance(message, ChannelReject):
                # crossed our close of a channel we were opening: the peer forgot
                # it and will ignore our close, so this reject is the last word
                del self._channels[channel]
                self._events.append(ChannelClosed(channel, message.code, message.message))
            # anything else was sent before the peer saw our close; an accept is
            # answered by the peer's close once our close reaches it
        elif isinstance(message, ChannelAccept | ChannelReject):
            if state.state is not ChannelState.OPENING:
                raise ProtocolError(f"{message.TYPE} for a channel not being opened")
            if isinstance(message, ChannelAccept):
                state.state = ChannelState.OPEN
                state.send_credit = message.window
                self._events.append(ChannelAccepted(channel))
            else:
                del self._channels[channel]
                self._events.append(ChannelRejected(channel, message.code, message.message))
        elif isinstance(message, WindowAdjust):
            if state.state is not ChannelState.OPEN:
                raise ProtocolError(f"{message.TYPE} for a channel not open")
            state.grant(message.increment)
            self._events.append(CreditAvailable(channel, state.send_credit))
        elif state.state is ChannelState.OPEN or state.state is ChannelState.OPENING:
            self._events.append(ChannelMessage(channel, message))
        else:
            raise ProtocolError(f"{message.TYPE} for a channel not open")

    def _handle_open(self, channel: int, message: ChannelOpen) -> None:
        if channel in self._channels:
            raise ProtocolError(f"channel {channel} already open")
        if len(self._channels) >= self.limits.max_channels:
            self._queue_control(
                channel,
                ChannelReject(code=ErrorCode.TOO_MANY_CHANNELS, message="too many channels"),
            )
            return
        self._channels[channel] = Channel(
            channel, message.kind, ChannelState.OFFERED, send_credit=message.window
        )
        self._events.append(ChannelOpened(channel, message.kind, message.params))

    def _handle_data(self, channel: int, body: bytes) -> None:
        if self.state is not ConnectionState.OPEN:
            if self.state is ConnectionState.CLOSING:
                return
            raise HandshakeError("data before Hello")
        state = self._channels.get(channel)
        if state is None:
            raise UnknownChannel(f"data for unknown channel {channel}")
        if state.state is ChannelState.CLOSING:
            return
        if state.state is not ChannelState.OPEN:
            raise ProtocolError(f"data on channel {channel} before it was open")
        state.receive(len(body))
        self._events.append(ChannelData(channel, body))


def _check_code(code: int) -> None:
    """A code we send must be one the peer accepts (a WebSocket close code)."""
    if not MIN_CODE <= code <= MAX_CODE:
        raise UsageError(f"code {code} is outside {MIN_CODE}..{MAX_CODE}")
