"""Reconnection delays: capped exponential backoff with full jitter.

After the n-th consecutive failure the agent waits a uniformly random time in
``[0, min(cap, base * 2**n)]``. Full jitter (rather than a fixed or "equal"
jitter) spreads thousands of agents evenly over the window when a relay
restarts, instead of bringing them back in synchronised waves.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self, base: float, cap: float, rand: Callable[[float, float], float] = random.uniform
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rand = rand

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap, self.base * float(2 ** min(self.failures, 62)))

    def next_delay(self) -> float:
        delay = self._rand(0.0, self.ceiling())
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
