"""Channel state and credit-based flow control, one :class:`Channel` per id.

Each direction of a channel has a window, like an SSH channel: the receiver
grants bytes, the sender spends them and stops at zero, and the receiver grants
more (``WindowAdjust``) as its application consumes data. Memory held for a
slow peer is therefore bounded by the window the receiver chose, never by how
fast the sender writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import FlowControlError, UsageError
from .limits import MAX_WINDOW

#: A receiver grants consumed bytes back once half its window, or this much, was consumed,
#: whichever is less: big windows (for long fat links) then still return credit in small
#: steps, so a sender may keep little in flight (beside a shell, say) and never stall.
ACK_STEP = 128 * 1024

__all__ = ["Channel", "ChannelState"]


class ChannelState(Enum):
    #: Opened by this side (relay), waiting for the peer's accept or reject.
    OPENING = "opening"
    #: Opened by the peer, waiting for this side's accept or reject.
    OFFERED = "offered"
    OPEN = "open"
    #: This side sent ChannelClose and waits for the peer's.
    CLOSING = "closing"


@dataclass(slots=True)
class Channel:
    """Bookkeeping for one channel; the :class:`Connection` drives the transitions."""

    id: int
    kind: str
    state: ChannelState
    #: Bytes this side may still send before the peer grants more.
    send_credit: int = 0
    #: Bytes the peer may still send before this side grants more.
    receive_credit: int = 0
    #: The window this side grants; adjustments top the credit back up to it.
    receive_window: int = 0
    #: Bytes received and consumed by the application but not yet granted back.
    unacknowledged: int = 0

    def spend(self, size: int) -> None:
        """This side sends ``size`` bytes."""
        if size > self.send_credit:
            raise UsageError(
                f"channel {self.id}: {size} bytes exceed the send credit of {self.send_credit}"
            )
        self.send_credit -= size

    def grant(self, increment: int) -> None:
        """The peer granted ``increment`` more bytes."""
        if self.send_credit + increment > MAX_WINDOW:
            raise FlowControlError(f"channel {self.id}: window grown past {MAX_WINDOW}")
        self.send_credit += increment

    def receive(self, size: int) -> None:
        """The peer sent ``size`` bytes."""
        if size > self.receive_credit:
            raise FlowControlError(f"channel {self.id}: data beyond the granted window")
        self.receive_credit -= size

    def consume(self, size: int) -> int:
        """The application consumed ``size`` received bytes.

        Returns the increment to grant now: adjustments are batched until half
        a window (or :data:`ACK_STEP`, if less) has been consumed, so a stream of
        small writes does not cost a control frame each.
        """
        outstanding = self.receive_window - self.receive_credit - self.unacknowledged
        if size < 0 or size > outstanding:
            raise UsageError(f"channel {self.id}: consumed more than was received")
        self.unacknowledged += size
        if self.unacknowledged < min((self.receive_window + 1) // 2, ACK_STEP):
            return 0
        increment, self.unacknowledged = self.unacknowledged, 0
        self.receive_credit += increment
        return increment
