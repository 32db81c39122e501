"""The pure parts of delivery: backoff, Retry-After, and how an answer is classified."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from watcher.config import RetryPolicy
from watcher.deliver import Result, backoff_delay, parse_retry_after

POLICY = RetryPolicy(initial_delay=2.0, max_delay=60.0, max_age=3600.0, max_attempts=10)
NOW = 1_700_000_000.0


class HighestDraw(random.Random):
    """Always draws the top of the jitter range, exposing the backoff ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


class LowestDraw(random.Random):
    """Always draws the bottom of the jitter range."""

    def uniform(self, a: float, b: float) -> float:
        return a


def test_backoff_ceiling_doubles_then_is_capped_by_max_delay() -> None:
    ceilings = [backoff_delay(POLICY, n, None, HighestDraw()) for n in range(8)]
    assert ceilings == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_backoff_floor_is_half_the_initial_delay_then_zero() -> None:
    floors = [backoff_delay(POLICY, n, None, LowestDraw()) for n in range(4)]
    assert floors == [1.0, 0.0, 0.0, 0.0]


def test_backoff_huge_attempt_counts_stay_capped() -> None:
    assert backoff_delay(POLICY, 10_000, None, HighestDraw()) == 60.0


@pytest.mark.parametrize("seed", range(5))
def test_backoff_stays_within_zero_and_the_cap(seed: int) -> None:
    rng = random.Random(seed)
    for attempts in range(40):
        ceiling = min(POLICY.max_delay, POLICY.initial_delay * 2**attempts)
        for _ in range(20):
            delay = backoff_delay(POLICY, attempts, None, rng)
            assert 0.0 <= delay <= ceiling <= POLICY.max_delay


def test_backoff_grows_on_average_with_full_jitter() -> None:
    rng = random.Random(1234)
    means = [
        sum(backoff_delay(POLICY, attempts, None, rng) for _ in range(2_000)) / 2_000
        for attempts in range(6)
    ]
    assert means == sorted(means)
    assert means[-1] > means[0] * 5


def test_backoff_is_reproducible_with_a_seed() -> None:
    first = [backoff_delay(POLICY, n, None, random.Random(7)) for n in range(10)]
    again = [backoff_delay(POLICY, n, None, random.Random(7)) for n in range(10)]
    assert first == again


def test_retry_after_is_honoured_as_a_minimum() -> None:
    rng = random.Random(3)
    for attempts in range(6):
        delay = backoff_delay(POLICY, attempts, 45.0, rng)
        assert 45.0 <= delay <= POLICY.max_delay
    assert backoff_delay(POLICY, 0, 45.0, LowestDraw()) == 45.0


def test_retry_after_is_capped_by_max_delay() -> None:
    assert backoff_delay(POLICY, 0, 86_400.0, LowestDraw()) == POLICY.max_delay
    assert backoff_delay(POLICY, 3, 86_400.0, random.Random(5)) == POLICY.max_delay


def test_short_retry_after_does_not_shorten_the_backoff() -> None:
    assert backoff_delay(POLICY, 4, 1.0, HighestDraw()) == 32.0


@pytest.mark.parametrize(("value", "seconds"), [("120", 120.0), ("0", 0.0), (" 30 ", 30.0)])
def test_parse_retry_after_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_parse_retry_after_http_date() -> None:
    assert parse_retry_after(formatdate(NOW + 90, usegmt=True), NOW) == pytest.approx(90.0)


def test_parse_retry_after_date_in_the_past_is_zero() -> None:
    assert parse_retry_after(formatdate(NOW - 90, usegmt=True), NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5"])
def test_parse_retry_after_rejects_garbage(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize("code", [500, 502, 503, 504, 429, 408, 425, None])
def test_retryable_failures(code: int | None) -> None:
    result = Result(code, "failed", 1.0)
    assert result.retryable
    assert not result.ok


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 413, 422])
def test_other_4xx_are_dead_at_once(code: int) -> None:
    result = Result(code, f"HTTP {code}", 1.0)
    assert not result.retryable
    assert not result.ok


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_redirects_are_retryable_failures(code: int) -> None:
    result = Result(code, "redirect not followed", 1.0)
    assert not result.ok
    assert result.retryable


@pytest.mark.parametrize("code", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(code: int) -> None:
    assert Result(code, None, 1.0).ok
