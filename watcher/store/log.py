"""The delivery log: listing, redelivering, purging and pruning outbox rows and their attempts.

What the ``deliveries``, ``redeliver`` and ``purge`` commands and the retention of delivered
rows read and change; the deliverer itself uses ``outbox``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from watcher.errors import StoreError
from watcher.store.database import Database, Row, Tx
from watcher.store.rows import DEAD, DELIVERED, MIN_ID_PREFIX, DeliveryRow

ROW_COLUMNS = (
    "d.id, d.delivery_id, d.event_id, d.webhook, d.model_name, d.status, d.attempts,"
    " d.created_at, d.next_attempt_at, d.updated_at, d.last_status_code, d.last_error,"
    " d.delivered_at, d.dead_at,"
    " e.type AS event_type, e.model_version, e.detected_at,"
    " (SELECT COUNT(*) FROM attempts a WHERE a.delivery_id = d.delivery_id)"
    "   AS total_attempts,"
    " (SELECT a.response FROM attempts a WHERE a.delivery_id = d.delivery_id"
    "   ORDER BY a.id DESC LIMIT 1) AS last_response"
)
"""The columns of a ``DeliveryRow`` (``delivery_row`` reads them) from ``ROW_TABLES``."""
ROW_TABLES = "deliveries d JOIN events e ON e.event_id = d.event_id"


class DeliveryLogQueries(Database):
    """The operator's view of the outbox, and the rules for removing settled rows."""

    def list_deliveries(
        self,
        status: str | None = None,
        webhook: str | None = None,
        model: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[DeliveryRow]:
        """Outbox rows with their event, newest last: in the order they were queued (a
        redelivered row counts as queued when it was redelivered), then detected.

        ``since`` (epoch seconds) keeps rows created or updated at or after it; ``limit`` keeps
        the newest rows.
        """
        where, params = _filters(status=status, webhook=webhook, model=model, since=since)
        sql = (
            f"SELECT {ROW_COLUMNS} FROM {ROW_TABLES}"  # noqa: S608 - fixed SQL
            f" WHERE {where} ORDER BY d.created_at DESC, d.id DESC"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._query(sql, params)
        return [delivery_row(r) for r in reversed(rows)]

    def redeliver(
        self,
        ids: Sequence[str] | None = None,
        *,
        dead: bool = False,
        webhook: str | None = None,
        since: float | None = None,
        now: float,
    ) -> int:
        """Queue rows again, under their own delivery id, and return how many.

        The selectors narrow each other: ``ids`` (full delivery ids or unique prefixes of at
        least MIN_ID_PREFIX characters), ``webhook``, ``since`` (created or updated at or
        after). Rows of any status are taken when ``ids`` or ``since`` is given and ``dead`` is
        not; otherwise only dead rows are. A requeued row is due now, its retry policy starts
        afresh (``attempts`` and ``created_at``, so ``max_age`` counts from now), and its
        attempts stay in the log.
        """
        if not ids and not dead and webhook is None and since is None:
            raise ValueError("redeliver needs ids, dead, webhook or since")
        with self._transaction() as tx:
            resolved = _resolve_ids(tx, ids) if ids else None
            status = DEAD if dead or (resolved is None and since is None) else None
            where, params = _filters(status=status, webhook=webhook, since=since)
            if resolved is not None:
                where += f" AND d.delivery_id IN ({', '.join('?' * len(resolved))})"
                params.extend(resolved)
            cursor = tx.execute(
                "UPDATE deliveries SET status = 'pending', attempts = 0, created_at = ?,"  # noqa: S608
                " next_attempt_at = ?, updated_at = ?, delivered_at = NULL, dead_at = NULL"
                f" WHERE delivery_id IN (SELECT d.delivery_id FROM deliveries d WHERE {where})",
                [now, now, now, *params],
            )
            return int(cursor.rowcount)

    def purge(self, *, older_than: float, now: float) -> int:
        """Delete dead rows that died more than ``older_than`` seconds ago, with their attempts
        (and their events, when nothing else refers to them). Returns how many rows went.

        Only dead rows are ever purged: delivered rows go by retention, pending ones never."""
        return self._delete_settled(DEAD, "dead_at", now - older_than, None)

    def prune_delivered(self, retention: float, now: float) -> int:
        """Delete delivered rows settled more than ``retention`` seconds ago, with their
        attempts, and events older than that which no row refers to. Dead rows are kept: only
        ``purge`` removes them. Returns how many delivery rows went."""
        cutoff = now - retention
        return self._delete_settled(DELIVERED, "delivered_at", cutoff, cutoff)

    def _delete_settled(
        self, status: str, column: str, cutoff: float, events_before: float | None
    ) -> int:
        """Delete rows of ``status`` settled before ``cutoff``, their attempts, and the events
        they leave unreferenced (and, with ``events_before``, older orphan events too): an
        event goes only when no row needs it, so a listed delivery always has its event."""
        with self._transaction() as tx:
            doomed = [
                (str(r[0]), str(r[1]))
                for r in tx.execute(
                    f"SELECT delivery_id, event_id FROM deliveries"  # noqa: S608 - fixed names
                    f" WHERE {column} < ? AND status = ?",
                    (cutoff, status),
                )
            ]
            tx.executemany("DELETE FROM attempts WHERE delivery_id = ?", ((d,) for d, _ in doomed))
            tx.executemany(
                "DELETE FROM deliveries WHERE delivery_id = ?", ((d,) for d, _ in doomed)
            )
            unreferenced = (
                "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.event_id)"
            )
            tx.executemany(
                f"DELETE FROM events WHERE event_id = ? AND {unreferenced}",  # noqa: S608
                {(e,) for _, e in doomed},
            )
            if events_before is not None:
                tx.execute(
                    f"DELETE FROM events WHERE detected_at < ? AND {unreferenced}",  # noqa: S608
                    (events_before,),
                )
        return len(doomed)


def _filters(
    *,
    status: str | None = None,
    webhook: str | None = None,
    model: str | None = None,
    since: float | None = None,
) -> tuple[str, list[Any]]:
    """A WHERE clause over ``deliveries d`` and its parameters."""
    clauses = ["TRUE"]
    params: list[Any] = []
    for column, value in (("status", status), ("webhook", webhook), ("model_name", model)):
        if value is not None:
            clauses.append(f"d.{column} = ?")
            params.append(value)
    if since is not None:
        clauses.append("(d.updated_at >= ? OR d.created_at >= ?)")
        params.extend((since, since))
    return " AND ".join(clauses), params


def _resolve_ids(tx: Tx, ids: Sequence[str]) -> list[str]:
    """Full delivery ids for ids or unique prefixes; StoreError naming every one that is not."""
    resolved: list[str] = []
    unknown: list[str] = []
    short: list[str] = []
    ambiguous: list[str] = []
    for given in ids:
        key = given.strip().lower()
        if len(key) < MIN_ID_PREFIX:
            short.append(given)
            continue
        matches = [
            str(r[0])
            for r in tx.execute(
                "SELECT delivery_id FROM deliveries WHERE substr(delivery_id, 1, ?) = ? LIMIT 2",
                (len(key), key),
            )
        ]
        if not matches:
            unknown.append(given)
        elif len(matches) > 1:
            ambiguous.append(given)
        else:
            resolved.append(matches[0])
    problems = []
    if short:
        problems.append(f"too short (give at least {MIN_ID_PREFIX} characters): {', '.join(short)}")
    if unknown:
        problems.append(f"no delivery with id {', '.join(unknown)}")
    if ambiguous:
        problems.append(f"more than one delivery starts with {', '.join(ambiguous)}")
    if problems:
        raise StoreError("; ".join(problems))
    return resolved


def delivery_row(r: Row) -> DeliveryRow:
    return DeliveryRow(
        delivery_id=str(r["delivery_id"]),
        event_id=str(r["event_id"]),
        event_type=str(r["event_type"]),
        webhook=str(r["webhook"]),
        model_name=str(r["model_name"]),
        model_version=r["model_version"],
        status=str(r["status"]),
        attempts=int(r["attempts"]),
        created_at=float(r["created_at"]),
        next_attempt_at=float(r["next_attempt_at"]),
        last_status_code=r["last_status_code"],
        last_error=r["last_error"],
        updated_at=float(r["updated_at"]),
        delivered_at=r["delivered_at"],
        dead_at=r["dead_at"],
        detected_at=float(r["detected_at"]),
        total_attempts=int(r["total_attempts"]),
        last_response=r["last_response"],
        row_id=int(r["id"]),
    )
