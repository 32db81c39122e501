"""Repeated identical poll failures: logged sparsely, polled less often, forgotten on recovery."""

from __future__ import annotations

from watcher.pipeline import MAX_FAILURE_BACKOFF, FailureStreak, _is_power_of_two


def test_identical_failures_back_off_exponentially_up_to_the_cap() -> None:
    streak = FailureStreak(interval=1.0)
    delays = []
    for i in range(8):
        streak.failed("MLflow answered 401", now=float(i))
        delays.append(streak.delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, MAX_FAILURE_BACKOFF, 30.0, 30.0]
    assert streak.count == 8


def test_the_first_failure_does_not_delay_the_next_poll() -> None:
    streak = FailureStreak(interval=5.0)
    streak.failed("connection refused", now=100.0)
    assert not streak.waiting(100.0)
    streak.failed("connection refused", now=105.0)
    assert streak.waiting(106.0)  # 10 s backoff, of which the scheduler's 5 s interval is one
    assert not streak.waiting(110.0)


def test_a_different_error_starts_a_new_streak_and_recovery_resets() -> None:
    streak = FailureStreak(interval=1.0)
    for i in range(4):
        streak.failed("connection refused", now=float(i))
    assert streak.failed("answered 500", now=5.0) == 1
    assert streak.delay == 1.0
    assert streak.recovered() == 1
    assert streak.count == 0
    assert not streak.waiting(5.5)


def test_a_slow_poll_interval_is_never_shortened() -> None:
    streak = FailureStreak(interval=120.0)
    streak.failed("x", now=0.0)
    assert streak.delay == 120.0


def test_logged_at_powers_of_two() -> None:
    assert [n for n in range(1, 20) if _is_power_of_two(n)] == [1, 2, 4, 8, 16]
