"""Channel bookkeeping and credit-based flow control."""

from __future__ import annotations

import pytest

from protocol.channels import ACK_STEP, Channel, ChannelState
from protocol.errors import ErrorCode, FlowControlError, UsageError
from protocol.messages import MAX_WINDOW


def receiving(window: int = 100) -> Channel:
    """A channel as the side that granted ``window`` to its peer holds it."""
    return Channel(7, "shell", ChannelState.OPEN, receive_credit=window, receive_window=window)


# -- sending ----------------------------------------------------------------------------


def test_spend_uses_up_credit() -> None:
    channel = Channel(1, "shell", ChannelState.OPEN, send_credit=10)
    channel.spend(4)
    assert channel.send_credit == 6
    channel.spend(6)
    assert channel.send_credit == 0
    channel.spend(0)
    assert channel.send_credit == 0


def test_spend_beyond_credit_is_a_usage_error_and_spends_nothing() -> None:
    channel = Channel(1, "shell", ChannelState.OPEN, send_credit=10)
    with pytest.raises(UsageError, match="exceed the send credit of 10"):
        channel.spend(11)
    assert channel.send_credit == 10


def test_grant_adds_credit() -> None:
    channel = Channel(1, "shell", ChannelState.OPEN, send_credit=5)
    channel.grant(10)
    assert channel.send_credit == 15


def test_grant_up_to_max_window() -> None:
    channel = Channel(1, "shell", ChannelState.OPEN, send_credit=MAX_WINDOW - 10)
    channel.grant(10)
    assert channel.send_credit == MAX_WINDOW


def test_grant_past_max_window_is_a_flow_control_error() -> None:
    channel = Channel(1, "shell", ChannelState.OPEN, send_credit=MAX_WINDOW - 10)
    with pytest.raises(FlowControlError) as caught:
        channel.grant(11)
    assert caught.value.code is ErrorCode.FLOW_CONTROL
    assert channel.send_credit == MAX_WINDOW - 10


# -- receiving --------------------------------------------------------------------------


def test_receive_within_the_window() -> None:
    channel = receiving(100)
    channel.receive(60)
    channel.receive(40)
    assert channel.receive_credit == 0


def test_receive_beyond_the_window_is_a_flow_control_error() -> None:
    channel = receiving(100)
    channel.receive(60)
    with pytest.raises(FlowControlError) as caught:
        channel.receive(41)
    assert caught.value.code is ErrorCode.FLOW_CONTROL
    assert channel.receive_credit == 40


def test_consume_batches_until_half_a_window() -> None:
    channel = receiving(100)
    channel.receive(80)
    assert channel.consume(30) == 0
    assert channel.consume(19) == 0
    assert channel.receive_credit == 20
    # 49 + 1 = 50 consumed: half the window, grant it all back at once
    assert channel.consume(1) == 50
    assert channel.receive_credit == 70
    assert channel.unacknowledged == 0
    assert channel.consume(30) == 0
    assert channel.unacknowledged == 30


def test_a_big_window_is_granted_back_every_ack_step() -> None:
    channel = receiving(4 * ACK_STEP)
    channel.receive(3 * ACK_STEP)
    assert channel.consume(ACK_STEP - 1) == 0
    # a step, not half of this window: a sender capped below half a window still moves
    assert channel.consume(1) == ACK_STEP
    assert channel.consume(ACK_STEP) == ACK_STEP
    assert channel.receive_credit == 3 * ACK_STEP


def test_consume_of_a_whole_window_at_once() -> None:
    channel = receiving(100)
    channel.receive(100)
    assert channel.consume(100) == 100
    assert channel.receive_credit == 100


def test_consume_odd_window_rounds_up() -> None:
    channel = receiving(5)
    channel.receive(5)
    assert channel.consume(2) == 0
    assert channel.consume(1) == 3


def test_consume_zero_grants_nothing() -> None:
    channel = receiving(100)
    assert channel.consume(0) == 0
    assert channel.receive_credit == 100


def test_consume_more_than_received_is_a_usage_error() -> None:
    channel = receiving(100)
    with pytest.raises(UsageError, match="consumed more than was received"):
        channel.consume(1)
    channel.receive(10)
    channel.consume(8)
    with pytest.raises(UsageError):
        channel.consume(3)
    assert channel.unacknowledged == 8
    assert channel.consume(2) == 0


def test_consume_negative_is_a_usage_error() -> None:
    channel = receiving(100)
    channel.receive(10)
    with pytest.raises(UsageError):
        channel.consume(-1)
    assert channel.unacknowledged == 0


def test_consume_after_a_grant_counts_only_new_data() -> None:
    channel = receiving(100)
    channel.receive(100)
    assert channel.consume(60) == 60
    # 40 received and not yet consumed
    with pytest.raises(UsageError):
        channel.consume(41)
    assert channel.consume(40) == 0
