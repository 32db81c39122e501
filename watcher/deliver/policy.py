"""The retry policy of one delivery: how an answer is classified and how long to wait.

Pure functions of an answer and a policy (the randomness is passed in), so they are tested on
their own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from watcher.config import RetryPolicy

RETRYABLE_4XX = frozenset({408, 425, 429})
"""Client errors that say "later", not "never": timeout, too early, too many requests."""


@dataclass(frozen=True)
class Result:
    """What one POST came to."""

    status_code: int | None
    error: str | None
    latency_ms: float
    retry_after: float | None = None
    body: str = ""
    """The start of the response body (capped), for the log and for test-webhook."""
    permanent: bool = False
    """Failed before sending (the body could not be rendered): retrying cannot help."""
    request: str | None = None
    """The request as sent, secrets redacted (JSON, see ``http.redact_request``); None when
    nothing was sent."""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        if self.permanent:
            return False
        code = self.status_code
        return code is None or code < 400 or code >= 500 or code in RETRYABLE_4XX


def is_dead_at_once(result: Result, dead_on: frozenset[int] | None) -> bool:
    """A failure that no retry can mend: the default rule, or the webhook's dead_on list."""
    if result.permanent:
        return True
    if dead_on is not None and result.status_code is not None and 400 <= result.status_code < 500:
        return result.status_code in dead_on
    return not result.retryable


def backoff_delay(
    policy: RetryPolicy,
    attempts: int,
    retry_after: float | None,
    rng: random.Random,
) -> float:
    """Exponential backoff with full jitter; a Retry-After answer is honoured up to max_delay."""
    ceiling = min(policy.max_delay, policy.initial_delay * (2 ** min(attempts, 32)))
    delay = (
        rng.uniform(policy.initial_delay / 2, ceiling) if attempts == 0 else rng.uniform(0, ceiling)
    )
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_delay))
    return delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks for (delay-seconds or an HTTP date), None if absent
    or unreadable: a bad header must not stop retries."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
