"""The store's row types and delivery statuses: what callers get back, whatever the database.

Nothing here knows SQL, so a second backend returns the very same types.
"""

from __future__ import annotations

from dataclasses import dataclass

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
