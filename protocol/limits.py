"""Limits a :class:`~protocol.connection.Connection` enforces on what a peer sends.

Every limit is checked *before* the data it guards is buffered or decoded: a
frame header announcing more than ``max_frame_size`` (``max_control_size`` for a
control frame) is refused as soon as its nine header bytes have arrived, not
after a megabyte has piled up.

Limits are also checked against what the peer accepts: ``max_frame_size`` is
announced in ``Hello`` and ``channel_window`` in ``ChannelOpen``/``ChannelAccept``,
so values the peer would refuse are refused here, when the Limits are made.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_FRAME_SIZE", "MAX_WINDOW", "MIN_FRAME_SIZE", "Limits"]

#: Bounds of ``Hello.max_frame_size``: a peer refuses a Hello outside them.
MIN_FRAME_SIZE = 1024
MAX_FRAME_SIZE = 2**30
#: Largest channel window (``ChannelOpen``/``ChannelAccept``) and credit, as in SSH.
MAX_WINDOW = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on a peer's frames, messages and channels.

    The defaults suit an agent or console talking to a relay. Both ends of a
    connection may use different limits; each enforces its own on what it
    receives.
    """

    #: Largest frame body (control or data) accepted, in bytes; announced in Hello.
    max_frame_size: int = 256 * 1024
    #: Largest control message body, in bytes (control bodies are small maps).
    max_control_size: int = 64 * 1024
    #: Longest string field, in characters.
    max_string: int = 4096
    #: Longest list field, in items.
    max_list: int = 256
    #: Most channels open at once on one connection.
    max_channels: int = 256
    #: Sustained control messages per second the peer may send...
    control_rate: float = 200.0
    #: ...and the burst allowed above that rate.
    control_burst: int = 400
    #: Receive window granted to the peer for each channel, in bytes.
    channel_window: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in (
            "max_frame_size",
            "max_control_size",
            "max_string",
            "max_list",
            "max_channels",
            "control_burst",
            "channel_window",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.control_rate <= 0:
            raise ValueError("control_rate must be positive")
        if not MIN_FRAME_SIZE <= self.max_frame_size <= MAX_FRAME_SIZE:
            raise ValueError(
                f"max_frame_size must be within {MIN_FRAME_SIZE}..{MAX_FRAME_SIZE}"
                " (the bounds a peer accepts in Hello)"
            )
        if self.channel_window > MAX_WINDOW:
            raise ValueError(f"channel_window cannot exceed {MAX_WINDOW} (the protocol's maximum)")
        if self.max_control_size > self.max_frame_size:
            raise ValueError("max_control_size cannot exceed max_frame_size")
