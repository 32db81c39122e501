"""The store's row types and delivery statuses: what callers get back, whatever the database.

Nothing here knows SQL, so a second backend returns the very same types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from watcher.model import Event

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"

MIN_ID_PREFIX = 8
"""Shortest delivery id prefix that redelivery accepts."""


@dataclass(frozen=True)
class NewDelivery:
    """An outbox row to queue with the cycle that detected its event."""

    delivery_id: str
    event_id: str
    webhook: str
    model_name: str


@dataclass(frozen=True)
class Head:
    """The oldest pending delivery of one (webhook, model) lane."""

    delivery_id: str
    webhook: str
    model_name: str


@dataclass(frozen=True)
class DueDelivery:
    """The head of one (webhook, model) lane, ready for an attempt."""

    delivery_id: str
    webhook: str
    event: Event
    attempts: int
    created_at: float


@dataclass(frozen=True)
class Attempt:
    """One POST of one delivery, as the delivery log keeps it."""

    delivery_id: str
    attempted_at: float
    status_code: int | None
    error: str | None
    latency_ms: float
    response: str | None = None
    """The start of the response body; the caller caps it."""
    request: str | None = None
    """The request as sent (JSON, secrets redacted); None keeps the row's last one (nothing
    was sent: the body could not be rendered)."""


@dataclass(frozen=True)
class DeliveryRow:
    """One outbox row with its event, as listed by the ``deliveries`` command."""

    delivery_id: str
    event_id: str
    event_type: str
    webhook: str
    model_name: str
    model_version: str | None
    status: str
    attempts: int
    """Attempts since the row was last queued: what the retry policy counts."""
    created_at: float
    """When the row was queued (again, after a redelivery): what ``max_age`` counts from."""
    next_attempt_at: float
    last_status_code: int | None
    last_error: str | None
    updated_at: float = 0.0
    delivered_at: float | None = None
    dead_at: float | None = None
    detected_at: float = 0.0
    """When the event was detected."""
    total_attempts: int = 0
    """Every attempt in the log, including those before a redelivery."""
    last_response: str | None = None
    row_id: int = 0
    """The row's place in the outbox (``deliveries.id``): what the console pages by."""


@dataclass(frozen=True)
class OutboxSummary:
    """The outbox at a glance, for the ``status`` command."""

    counts: dict[str, dict[str, int]]
    """{webhook: {status: count}}."""
    oldest_pending: float | None
    """created_at of the oldest pending row, over every webhook."""
    oldest_pending_by_webhook: dict[str, float]

    def total(self, status: str) -> int:
        return sum(by_status.get(status, 0) for by_status in self.counts.values())


@dataclass(frozen=True)
class WebhookStats:
    """One webhook's deliveries at a glance, for the console's overview."""

    webhook: str
    delivered_hour: int
    """Deliveries settled as delivered in the last hour."""
    delivered_day: int
    """... in the last 24 hours."""
    attempts_day: int
    """Attempts made in the last 24 hours."""
    success_rate: float | None
    """2xx attempts / attempts in the last 24 hours; None without attempts."""
    p50_ms: float | None
    """Latency percentiles of the attempts of the last 24 hours."""
    p95_ms: float | None
    pending: int
    dead: int
    delivered: int
    """Every delivered row, as ``status`` counts them."""
    last_error: str | None
    """The error of the newest failed attempt, however old."""
    last_error_at: float | None


@dataclass(frozen=True)
class ChartBucket:
    """One hour of the console's chart."""

    start: float
    """Epoch seconds the bucket starts at."""
    delivered: int
    """Attempts that succeeded in the bucket."""
    failed: int
    """Attempts that failed (no answer, or not a 2xx)."""
    dead: int
    """Deliveries that went dead in the bucket."""


@dataclass(frozen=True)
class DeliveryFilter:
    """What the console's deliveries page narrows the outbox to; None: anything."""

    webhook: str | None = None
    model: str | None = None
    event_type: str | None = None
    status: str | None = None
    since: float | None = None
    """created_at >= since."""
    until: float | None = None
    """created_at < until."""


@dataclass(frozen=True)
class AttemptRow:
    """One logged attempt, as the console shows it."""

    attempted_at: float
    status_code: int | None
    error: str | None
    latency_ms: float
    response: str | None
    epoch: int | None


@dataclass(frozen=True)
class DeliveryDetail:
    """One delivery with everything the console shows of it."""

    row: DeliveryRow
    event: Event
    request: dict[str, Any] | None
    """The last request as sent (secrets redacted); None before the first attempt."""
    attempts: list[AttemptRow]
    """Oldest first."""


@dataclass(frozen=True)
class EventRow:
    """One event of the log with how its deliveries stand."""

    event_id: str
    type: str
    model_name: str
    model_version: str | None
    detected_at: float
    data: dict[str, Any]
    deliveries: dict[str, int]
    """{status: count} of this event's deliveries."""
