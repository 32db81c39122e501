"""What the delivery console reads and writes: the overview's figures and chart, the pages of
deliveries and events, one delivery in full, and the test event it queues.

Every listing is read along an index (migration 4 on SQLite, 2 on PostgreSQL): the deliveries
newest first by ``id`` (keyset pagination, so page 50 costs what page 1 does), alone or by
webhook, model or status; a model's events by time; the attempts of the last day by time. The
percentiles are computed here over the day's attempts of each webhook, the same on both
backends.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from watcher.model import Event
from watcher.store.database import Database, Row
from watcher.store.log import ROW_COLUMNS, ROW_TABLES, delivery_row
from watcher.store.outbox import status_counts
from watcher.store.rows import (
    DEAD,
    DELIVERED,
    PENDING,
    AttemptRow,
    ChartBucket,
    DeliveryDetail,
    DeliveryFilter,
    DeliveryRow,
    EventRow,
    NewDelivery,
    WebhookStats,
)
from watcher.store.snapshot import insert_deliveries, insert_events

HOUR = 3600.0
DAY = 24 * HOUR


class ConsoleQueries(Database):
    """The console's reads, and its two writes (a test delivery; redelivery is ``log``'s)."""

    def webhook_stats(self, now: float) -> list[WebhookStats]:
        """One row per webhook seen in the outbox, by name: counts as ``status`` shows them,
        deliveries and attempts of the last hour and day, latency and the last error."""
        counts = status_counts(self)
        delivered = self._delivered_since(now - DAY, now - HOUR)
        day = _by_webhook(self._attempts_since(now - DAY))
        errors = self._last_errors()
        stats = []
        for name in sorted(counts.keys() | day.keys()):
            attempts = day.get(name, [])
            latencies = sorted(float(r["latency_ms"]) for r in attempts)
            ok = sum(1 for r in attempts if _ok(r["status_code"]))
            hour, whole_day = delivered.get(name, (0, 0))
            error, error_at = errors.get(name, (None, None))
            stats.append(
                WebhookStats(
                    webhook=name,
                    delivered_hour=hour,
                    delivered_day=whole_day,
                    attempts_day=len(attempts),
                    success_rate=ok / len(attempts) if attempts else None,
                    p50_ms=percentile(latencies, 50),
                    p95_ms=percentile(latencies, 95),
                    pending=counts.get(name, {}).get(PENDING, 0),
                    dead=counts.get(name, {}).get(DEAD, 0),
                    delivered=counts.get(name, {}).get(DELIVERED, 0),
                    last_error=error,
                    last_error_at=error_at,
                )
            )
        return stats

    def delivery_chart(self, now: float, *, hours: int = 24) -> list[ChartBucket]:
        """Attempts by outcome and deliveries gone dead, one bucket per clock hour, oldest
        first, the last one the hour ``now`` is in; empty hours included."""
        first = math.floor(now / HOUR) * HOUR - (hours - 1) * HOUR
        delivered, failed, dead = [0] * hours, [0] * hours, [0] * hours
        for r in self._query(
            "SELECT attempted_at, status_code FROM attempts WHERE attempted_at >= ?", (first,)
        ):
            index = int((float(r["attempted_at"]) - first) // HOUR)
            if 0 <= index < hours:
                (delivered if _ok(r["status_code"]) else failed)[index] += 1
        for r in self._query("SELECT dead_at FROM deliveries WHERE dead_at >= ?", (first,)):
            index = int((float(r["dead_at"]) - first) // HOUR)
            if 0 <= index < hours:
                dead[index] += 1
        return [
            ChartBucket(first + i * HOUR, delivered[i], failed[i], dead[i]) for i in range(hours)
        ]

    def delivery_page(
        self, f: DeliveryFilter, *, before: int | None = None, limit: int = 50
    ) -> tuple[list[DeliveryRow], int | None]:
        """One page of deliveries, newest first (by ``deliveries.id``), and the ``before`` of
        the next page (None: this was the last). Keyset pagination: a page below ``before``
        reads only its own rows, along the (webhook | model_name | status, id) index or the
        primary key, however deep it is."""
        clauses, params = _page_filters(f)
        if before is not None:
            clauses.append("d.id < ?")
            params.append(before)
        where = " AND ".join(clauses) or "TRUE"
        rows = self._query(
            f"SELECT {ROW_COLUMNS} FROM {ROW_TABLES}"  # noqa: S608 - fixed SQL
            f" WHERE {where} ORDER BY d.id DESC LIMIT ?",
            [*params, limit + 1],
        )
        page = [delivery_row(r) for r in rows[:limit]]
        return page, page[-1].row_id if len(rows) > limit else None

    def delivery_detail(self, delivery_id: str) -> DeliveryDetail | None:
        """One delivery (full id) with its event, its last request and every attempt."""
        rows = self._query(
            f"SELECT {ROW_COLUMNS}, d.request, e.data FROM {ROW_TABLES}"  # noqa: S608
            " WHERE d.delivery_id = ?",
            (delivery_id,),
        )
        if not rows:
            return None
        attempts = [
            AttemptRow(
                attempted_at=float(r["attempted_at"]),
                status_code=r["status_code"],
                error=r["error"],
                latency_ms=float(r["latency_ms"]),
                response=r["response"],
                epoch=r["epoch"],
            )
            for r in self._query(
                "SELECT attempted_at, status_code, error, latency_ms, response, epoch"
                " FROM attempts WHERE delivery_id = ? ORDER BY id",
                (delivery_id,),
            )
        ]
        return DeliveryDetail(
            row=delivery_row(rows[0]),
            event=Event.from_dict(json.loads(rows[0]["data"])),
            request=None if rows[0]["request"] is None else json.loads(rows[0]["request"]),
            attempts=attempts,
        )

    def version_timeline(self, model: str, version: str | None) -> list[EventRow]:
        """Every event of one model version (None: the model's own events, which have no
        version), oldest first."""
        same_version = "model_version IS NULL" if version is None else "model_version = ?"
        params: list[Any] = [model] if version is None else [model, version]
        return self._event_rows(
            self._query(
                f"SELECT {_EVENT_COLUMNS} FROM events"  # noqa: S608 - fixed SQL
                f" WHERE model_name = ? AND {same_version}"
                f" ORDER BY detected_at, {self.backend.rowid}",
                params,
            )
        )

    def model_events(
        self,
        model: str | None,
        *,
        since: float | None = None,
        before: float | None = None,
        limit: int = 100,
    ) -> list[EventRow]:
        """The event log, newest first: one model's (None: every model's), detected at or
        after ``since`` and before ``before``."""
        clauses, params = [], []
        for clause, value in (
            ("model_name = ?", model),
            ("detected_at >= ?", since),
            ("detected_at < ?", before),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = " AND ".join(clauses) or "TRUE"
        return self._event_rows(
            self._query(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE {where}"  # noqa: S608 - fixed SQL
                f" ORDER BY detected_at DESC, {self.backend.rowid} DESC LIMIT ?",
                [*params, limit],
            )
        )

    def model_names(self, prefix: str = "", limit: int = 50) -> list[str]:
        """Distinct model names of the event log starting with ``prefix`` (case-sensitive on
        both backends), in order."""
        rows = self._query(
            "SELECT DISTINCT model_name FROM events WHERE substr(model_name, 1, ?) = ?"
            " ORDER BY model_name LIMIT ?",
            (len(prefix), prefix, limit),
        )
        return [str(r["model_name"]) for r in rows]

    def queue_test_delivery(self, event: Event, webhook: str, delivery_id: str, now: float) -> None:
        """Queue ``event`` for ``webhook`` alone, due now, as a cycle queues a detected one.

        Not fenced, as ``redeliver`` is not: any replica (or the console of a cron install)
        may queue it, and whichever deliverer leads sends it."""
        with self._transaction() as tx:
            insert_events(tx, [event], now)
            insert_deliveries(
                tx, [NewDelivery(delivery_id, event.event_id, webhook, event.model_name)], now
            )

    # ----------------------------------------------------------------- helpers

    def _delivered_since(self, day: float, hour: float) -> dict[str, tuple[int, int]]:
        """{webhook: (delivered since ``hour``, since ``day``)}, along the delivered_at index."""
        return {
            str(r["webhook"]): (int(r["hour"]), int(r["day"]))
            for r in self._query(
                "SELECT webhook, COUNT(*) AS day,"
                " SUM(CASE WHEN delivered_at >= ? THEN 1 ELSE 0 END) AS hour"
                " FROM deliveries WHERE delivered_at >= ? GROUP BY webhook",
                (hour, day),
            )
        }

    def _attempts_since(self, since: float) -> list[Row]:
        """The attempts made since ``since``, with their webhook, along the attempts' time
        index."""
        return self._query(
            "SELECT d.webhook, a.status_code, a.latency_ms FROM attempts a"
            " JOIN deliveries d ON d.delivery_id = a.delivery_id WHERE a.attempted_at >= ?",
            (since,),
        )

    def _last_errors(self) -> dict[str, tuple[str, float]]:
        """{webhook: (error, when)} of each webhook's newest failed attempt (the last the log
        recorded), along the partial index of failed attempts."""
        rows = self._query(
            "SELECT d.webhook, a.error, a.attempted_at FROM attempts a"
            " JOIN deliveries d ON d.delivery_id = a.delivery_id"
            " WHERE a.id IN (SELECT MAX(f.id) FROM attempts f"
            "   JOIN deliveries fd ON fd.delivery_id = f.delivery_id"
            "   WHERE f.error IS NOT NULL GROUP BY fd.webhook)"
        )
        return {str(r["webhook"]): (str(r["error"]), float(r["attempted_at"])) for r in rows}

    def _event_rows(self, rows: Sequence[Row]) -> list[EventRow]:
        """Events with the {status: count} of their deliveries (one query for them all)."""
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        ids = [str(r["event_id"]) for r in rows]
        if ids:
            marks = ", ".join("?" * len(ids))
            for c in self._query(
                "SELECT event_id, status, COUNT(*) AS n FROM deliveries"  # noqa: S608
                f" WHERE event_id IN ({marks}) GROUP BY event_id, status",
                ids,
            ):
                counts[str(c["event_id"])][str(c["status"])] = int(c["n"])
        return [
            EventRow(
                event_id=str(r["event_id"]),
                type=str(r["type"]),
                model_name=str(r["model_name"]),
                model_version=r["model_version"],
                detected_at=float(r["detected_at"]),
                data=json.loads(r["data"]),
                deliveries=counts.get(str(r["event_id"]), {}),
            )
            for r in rows
        ]


_EVENT_COLUMNS = "event_id, type, model_name, model_version, detected_at, data"


def _page_filters(f: DeliveryFilter) -> tuple[list[str], list[Any]]:
    """The WHERE clauses of a deliveries page over ``deliveries d`` and ``events e``."""
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("d.webhook = ?", f.webhook),
        ("d.model_name = ?", f.model),
        ("d.status = ?", f.status),
        ("e.type = ?", f.event_type),
        ("d.created_at >= ?", f.since),
        ("d.created_at < ?", f.until),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return clauses, params


def _ok(status_code: int | None) -> bool:
    return status_code is not None and 200 <= status_code < 300


def _by_webhook(rows: Iterable[Row]) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        grouped[str(r["webhook"])].append(r)
    return grouped


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile of sorted values, interpolated between the closest ranks (as
    numpy's default does); None for no values."""
    if not ordered:
        return None
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
