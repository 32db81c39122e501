"""The outbox as the deliverer sees it: due lane heads, their events, each attempt's result.

A lane is one (webhook, model) pair. Only its oldest pending row is ever offered, so events for
one model reach one webhook in detection order; a later event waits while an earlier one is
retried.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from watcher.model import Event
from watcher.store.database import Database
from watcher.store.rows import DEAD, DELIVERED, PENDING, Attempt, DueDelivery, Head, OutboxSummary


class OutboxQueries(Database):
    """Dispatching and settling deliveries, and the outbox summary shown by status and
    /metrics."""

    def due_heads(
        self, now: float, *, ignore_schedule: bool = False, exclude: Iterable[str] = ()
    ) -> list[Head]:
        """The due lane heads, without their events: cheap enough to ask after every answer
        (a backlog on 1,000 lanes would otherwise decode 1,000 events to dispatch 4)."""
        excluded = set(exclude)
        rows = self._query(
            "SELECT d.delivery_id, d.webhook, d.model_name, d.next_attempt_at FROM deliveries d"
            " JOIN (SELECT MIN(id) AS id FROM deliveries WHERE status = 'pending'"
            "       GROUP BY webhook, model_name) heads ON heads.id = d.id"
            " ORDER BY d.id"
        )
        return [
            Head(str(r["delivery_id"]), str(r["webhook"]), str(r["model_name"]))
            for r in rows
            if r["delivery_id"] not in excluded
            and (ignore_schedule or float(r["next_attempt_at"]) <= now)
        ]

    def load_due(self, delivery_ids: Sequence[str]) -> list[DueDelivery]:
        """The given deliveries with their events, in outbox order."""
        if not delivery_ids:
            return []
        marks = ",".join("?" * len(delivery_ids))
        # Only "?" placeholders are formatted in; the ids are bound as parameters.
        sql = (
            "SELECT d.delivery_id, d.webhook, d.attempts, d.created_at, e.data FROM deliveries d"  # noqa: S608
            f" JOIN events e ON e.event_id = d.event_id WHERE d.delivery_id IN ({marks})"
            " ORDER BY d.id"
        )
        rows = self._query(sql, delivery_ids)
        return [
            DueDelivery(
                delivery_id=str(r["delivery_id"]),
                webhook=str(r["webhook"]),
                event=Event.from_dict(json.loads(r["data"])),
                attempts=int(r["attempts"]),
                created_at=float(r["created_at"]),
            )
            for r in rows
        ]

    def record_attempt(
        self,
        attempt: Attempt,
        *,
        status: str,
        next_attempt_at: float | None = None,
    ) -> None:
        """Log one attempt and move its delivery to ``status`` (pending: retry at that time),
        both in one transaction, so the log and the row never disagree. The row keeps the
        request of its last attempt that sent one (the console shows it). A leader of a shared
        state records only under its own epoch (LeaseLost, nothing written, otherwise)."""
        epoch = None if self.fence_token is None else self.fence_token.epoch
        with self._fenced() as tx:
            tx.execute(
                "INSERT INTO attempts"
                " (delivery_id, attempted_at, status_code, error, latency_ms, response, epoch)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt.delivery_id,
                    attempt.attempted_at,
                    attempt.status_code,
                    attempt.error,
                    attempt.latency_ms,
                    attempt.response,
                    epoch,
                ),
            )
            tx.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1,"
                " next_attempt_at = COALESCE(?, next_attempt_at), updated_at = ?,"
                " last_status_code = ?, last_error = ?, delivered_at = ?, dead_at = ?,"
                " request = COALESCE(?, request)"
                " WHERE delivery_id = ?",
                (
                    status,
                    next_attempt_at,
                    attempt.attempted_at,
                    attempt.status_code,
                    attempt.error,
                    attempt.attempted_at if status == DELIVERED else None,
                    attempt.attempted_at if status == DEAD else None,
                    attempt.request,
                    attempt.delivery_id,
                ),
            )

    def claim(self, delivery_id: str) -> bool:
        """Mark a pending delivery as sent by this leader's epoch, before its request starts;
        False when it is no longer pending. A SQLite state has one writer and skips this."""
        token = self.fence_token
        if token is None:
            return True
        with self._fenced() as tx:
            cursor = tx.execute(
                "UPDATE deliveries SET claimed_epoch = ? WHERE delivery_id = ? AND status = ?",
                (token.epoch, delivery_id, PENDING),
            )
            return cursor.rowcount == 1

    def recent_events(self, limit: int = 100) -> list[Event]:
        """The most recently detected events, newest first."""
        return [
            Event.from_dict(json.loads(r["data"]))
            for r in self._query(
                "SELECT data FROM events"  # noqa: S608 - a fixed column name
                f" ORDER BY detected_at DESC, {self.backend.rowid} DESC LIMIT ?",
                (limit,),
            )
        ]

    def status_counts(self) -> dict[str, dict[str, int]]:
        """{webhook: {status: count}} over the whole outbox."""
        return status_counts(self)

    def summary(self) -> OutboxSummary:
        """Counts by webhook and status, and the age of the oldest pending rows."""
        oldest = {
            str(r["webhook"]): float(r["t"])
            for r in self._query(
                "SELECT webhook, MIN(created_at) AS t FROM deliveries"
                " WHERE status = 'pending' GROUP BY webhook"
            )
        }
        return OutboxSummary(
            counts=self.status_counts(),
            oldest_pending=min(oldest.values()) if oldest else None,
            oldest_pending_by_webhook=oldest,
        )


def status_counts(db: Database) -> dict[str, dict[str, int]]:
    """{webhook: {status: count}} over the whole outbox: what ``status`` and the console
    count alike."""
    counts: dict[str, dict[str, int]] = {}
    for r in db._query(
        "SELECT webhook, status, COUNT(*) AS n FROM deliveries GROUP BY webhook, status"
    ):
        counts.setdefault(str(r["webhook"]), {})[str(r["status"])] = int(r["n"])
    return counts
