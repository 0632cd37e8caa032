"""Limits validate themselves."""

from __future__ import annotations

import dataclasses

import pytest

from protocol import messages
from protocol.limits import MAX_FRAME_SIZE, MAX_WINDOW, MIN_FRAME_SIZE, Limits

POSITIVE = [
    "max_frame_size",
    "max_control_size",
    "max_string",
    "max_list",
    "max_channels",
    "control_burst",
    "channel_window",
]


def test_defaults() -> None:
    limits = Limits()
    assert limits.max_frame_size == 256 * 1024
    assert limits.max_control_size == 64 * 1024
    assert limits.max_channels == 256
    assert limits.channel_window == 1024 * 1024


def test_limits_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Limits().max_list = 1  # type: ignore[misc]


@pytest.mark.parametrize("name", POSITIVE)
@pytest.mark.parametrize("value", [0, -1])
def test_counts_must_be_positive(name: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"{name} must be positive"):
        Limits(**{name: value})
    if name != "max_frame_size":  # which has a larger minimum, below
        # and 1 is fine (max_control_size may not exceed max_frame_size)
        assert getattr(Limits(**{name: 1, "max_control_size": 1}), name) == 1


@pytest.mark.parametrize("rate", [0.0, -5.0])
def test_control_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="control_rate must be positive"):
        Limits(control_rate=rate)
    assert Limits(control_rate=0.001).control_rate == 0.001


def test_control_size_cannot_exceed_frame_size() -> None:
    with pytest.raises(ValueError, match="cannot exceed"):
        Limits(max_frame_size=1024, max_control_size=1025)
    assert Limits(max_frame_size=1024, max_control_size=1024).max_control_size == 1024


def test_frame_size_must_be_one_a_peer_accepts_in_hello() -> None:
    assert (MIN_FRAME_SIZE, MAX_FRAME_SIZE) == (1024, 2**30)
    for good in (MIN_FRAME_SIZE, MAX_FRAME_SIZE):
        assert Limits(max_frame_size=good, max_control_size=1024).max_frame_size == good
    for bad in (1, MIN_FRAME_SIZE - 1, MAX_FRAME_SIZE + 1, 2**32):
        with pytest.raises(ValueError, match=r"max_frame_size must be within 1024\.\.1073741824"):
            Limits(max_frame_size=bad, max_control_size=1)


def test_channel_window_must_be_one_a_peer_accepts() -> None:
    assert Limits(channel_window=MAX_WINDOW).channel_window == MAX_WINDOW == 2**31 - 1
    with pytest.raises(ValueError, match="channel_window cannot exceed 2147483647"):
        Limits(channel_window=MAX_WINDOW + 1)


def test_messages_use_the_same_bounds() -> None:
    # one definition, shared by the limits and the message fields
    assert messages.MAX_WINDOW is MAX_WINDOW
    assert "MAX_WINDOW" in messages.__all__
