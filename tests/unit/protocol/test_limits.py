"""Limits validate themselves."""

from __future__ import annotations

import dataclasses

import pytest

from protocol.limits import Limits

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
