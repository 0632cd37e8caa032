"""Reconnection backoff: exponential ceiling, cap, full jitter, reset."""

from __future__ import annotations

import pytest

from agent.backoff import Backoff


def test_ceiling_doubles_up_to_the_cap() -> None:
    calls: list[tuple[float, float]] = []
    backoff = Backoff(1.0, 60.0, rand=lambda low, high: calls.append((low, high)) or high)
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]
    assert all(low == 0.0 for low, _ in calls)  # full jitter: from zero


def test_reset_starts_over() -> None:
    backoff = Backoff(0.5, 10.0, rand=lambda low, high: high)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_real_jitter_stays_in_range_and_spreads() -> None:
    backoff = Backoff(1.0, 8.0)
    backoff.failures = 10
    samples = [Backoff(1.0, 8.0).next_delay() for _ in range(200)]
    assert all(0.0 <= s <= 1.0 for s in samples)
    late = []
    for _ in range(200):
        backoff.failures = 10
        late.append(backoff.next_delay())
    assert all(0.0 <= s <= 8.0 for s in late)
    assert max(late) - min(late) > 4.0  # spread over the window, not clustered


def test_huge_failure_counts_do_not_overflow() -> None:
    backoff = Backoff(1.0, 30.0, rand=lambda low, high: high)
    backoff.failures = 10_000
    assert backoff.next_delay() == 30.0


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 5.0)])
def test_invalid_parameters_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(base, cap)
