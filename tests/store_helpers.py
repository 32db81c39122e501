"""Store queries only the tests need, kept out of the product.

They go through the store's public queries where one answers the question; the attempt log,
which the product only ever reads as counts and the last answer, is read straight from the
state file (SQLite in WAL mode, so a second connection sees every committed attempt).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable

from watcher.store import Attempt, DeliveryRow, DueDelivery, Store


def deliveries(store: Store, status: str | None = None) -> list[DeliveryRow]:
    """Every row (or every row with ``status``), as list_deliveries orders them."""
    return store.list_deliveries(status=status)


def due_deliveries(
    store: Store, now: float, *, ignore_schedule: bool = False, exclude: Iterable[str] = ()
) -> list[DueDelivery]:
    """The head of every (webhook, model) lane that is due, with its event: what the deliverer
    would dispatch now with no cap on workers."""
    heads = store.due_heads(now, ignore_schedule=ignore_schedule, exclude=exclude)
    return store.load_due([h.delivery_id for h in heads])


def oldest_pending(store: Store) -> float | None:
    """created_at of the oldest pending row over every webhook."""
    return store.summary().oldest_pending


def attempts(store: Store, delivery_id: str) -> list[Attempt]:
    """Every logged attempt of one delivery, oldest first."""
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM attempts WHERE delivery_id = ? ORDER BY id", (delivery_id,)
        ).fetchall()
    return [
        Attempt(
            delivery_id=str(r["delivery_id"]),
            attempted_at=float(r["attempted_at"]),
            status_code=r["status_code"],
            error=r["error"],
            latency_ms=float(r["latency_ms"]),
            response=r["response"],
        )
        for r in rows
    ]
