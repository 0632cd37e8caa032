"""Application messages on a channel: resize, end of input, exit status, consent."""

from __future__ import annotations

import pytest

from protocol.connection import Connection, ConnectionState
from protocol.errors import ErrorCode, ProtocolError, UsageError
from protocol.events import ChannelAccepted, ChannelMessage, ChannelOpened
from protocol.messages import ChannelClose, Heartbeat, Role, WindowAdjust
from protocol.sessions import ChannelEof, ConsentDecision, ExitStatus, TerminalResize

from .protocol_helpers import connected, control, pump


def open_shell(relay: Connection, agent: Connection, channel: int = 5) -> None:
    relay.open_channel(channel, "shell")
    pump((relay, agent))
    assert isinstance(agent.events_received()[0], ChannelOpened)
    agent.accept_channel(channel)
    pump((relay, agent))
    assert relay.events_received() == [ChannelAccepted(channel)]


def test_messages_travel_both_ways_in_order() -> None:
    relay, agent = connected(Role.AGENT)
    open_shell(relay, agent)
    relay.send_channel_message(5, TerminalResize(cols=120, rows=40))
    relay.send_channel_message(5, ChannelEof())
    pump((relay, agent))
    assert agent.events_received() == [
        ChannelMessage(5, TerminalResize(cols=120, rows=40)),
        ChannelMessage(5, ChannelEof()),
    ]
    agent.send_channel_message(5, ExitStatus(code=3))
    pump((relay, agent))
    assert relay.events_received() == [ChannelMessage(5, ExitStatus(code=3))]


def test_consent_decision_may_be_sent_before_the_answer() -> None:
    relay, agent = connected(Role.AGENT)
    relay.open_channel(9, "shell")
    pump((relay, agent))
    agent.events_received()
    agent.send_channel_message(9, ConsentDecision(granted=False, how="timeout"))
    agent.reject_channel(9, ErrorCode.CONSENT_DENIED, "no answer")
    pump((relay, agent))
    events = relay.events_received()
    assert events[0] == ChannelMessage(9, ConsentDecision(granted=False, how="timeout"))
    assert events[1].code == ErrorCode.CONSENT_DENIED  # type: ignore[union-attr]


@pytest.mark.parametrize("message", [WindowAdjust(increment=1), ChannelClose(), Heartbeat(seq=1)])
def test_mechanics_and_connection_messages_are_refused(message: object) -> None:
    relay, agent = connected(Role.AGENT)
    open_shell(relay, agent)
    with pytest.raises(UsageError, match="not an application channel message"):
        relay.send_channel_message(5, message)  # type: ignore[arg-type]


def test_sender_role_is_checked() -> None:
    relay, agent = connected(Role.AGENT)
    open_shell(relay, agent)
    with pytest.raises(UsageError, match="does not send resize"):
        agent.send_channel_message(5, TerminalResize(cols=1, rows=1))


def test_unknown_or_closing_channel_is_refused() -> None:
    relay, agent = connected(Role.AGENT)
    assert not relay.has_channel(5)
    with pytest.raises(UsageError):
        relay.send_channel_message(1, ChannelEof())
    open_shell(relay, agent)
    assert relay.has_channel(5)
    relay.close_channel(5)
    assert relay.has_channel(5)  # closing, until the peer answers
    with pytest.raises(UsageError):
        relay.send_channel_message(5, ChannelEof())


def test_nothing_is_sent_after_close() -> None:
    relay, agent = connected(Role.AGENT)
    open_shell(relay, agent)
    relay.close()
    assert relay.state is ConnectionState.CLOSING
    relay.data_to_send()
    with pytest.raises(UsageError, match="cannot send eof"):
        relay.send_channel_message(5, ChannelEof())
    assert relay.data_to_send() == []


def test_message_for_a_channel_not_yet_open_is_a_protocol_error() -> None:
    relay, agent = connected(Role.AGENT)
    relay.open_channel(3, "shell")
    pump((relay, agent))
    agent.events_received()
    # The relay sends an exit status before the agent accepted: a peer fault.
    with pytest.raises(ProtocolError) as caught:
        agent.receive_data(control(ExitStatus(code=0), channel=3))
    assert caught.value.code == ErrorCode.UNEXPECTED_MESSAGE


def test_window_grants_do_not_count_against_the_control_rate() -> None:
    """A fast transfer sends a grant every half window; that must never trip the limit."""
    from protocol.limits import Limits

    from .protocol_helpers import FakeClock

    clock = FakeClock()
    relay, agent = connected(
        Role.AGENT,
        relay_limits=Limits(control_burst=5, control_rate=0.001, channel_window=2048),
        peer_limits=Limits(channel_window=2048),
        clock=clock,
    )
    open_shell(relay, agent)
    for _ in range(50):  # 50 grants from the agent, far beyond the relay's burst of 5
        relay.send_data(5, b"x" * relay.send_credit(5))
        pump((relay, agent))
        for event in agent.events_received():
            agent.acknowledge(5, len(event.data))  # type: ignore[union-attr]
        pump((relay, agent))
    assert relay.state is ConnectionState.OPEN
    assert agent.state is ConnectionState.OPEN
