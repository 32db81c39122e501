"""Store fixtures and queries only the tests need, kept out of the product.

``event``, ``deliveries_for`` and ``queue`` put events and their outbox rows in a store. The
queries go through the store's public queries where one answers the question; the attempt log,
which the product only ever reads as counts and the last answer, is read straight from the
store's backend.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from watcher.model import Event, EventType, SnapshotDelta, make_delivery_id, make_event_id
from watcher.store import Attempt, DeliveryRow, DueDelivery, NewDelivery, Store

NOW = 1_700_000_000.0
"""When ``queue`` queues rows, unless told otherwise."""


def event(model: str, version: str, to_stage: str = "Production", ts: int = 1_000) -> Event:
    """A stage transition of one version: distinct (model, version, stage, ts), distinct id."""
    kind = EventType.MODEL_VERSION_TRANSITIONED_STAGE
    return Event(
        event_id=make_event_id("reg", kind, model, version, 1, "None", to_stage, ts),
        type=kind,
        model_name=model,
        timestamp=ts,
        model_version=version,
        version_creation_timestamp=1,
        from_stage="None",
        to_stage=to_stage,
    )


def deliveries_for(events: list[Event], *webhooks: str) -> list[NewDelivery]:
    """One outbox row per webhook and event, webhook by webhook, in event order."""
    return [
        NewDelivery(make_delivery_id(e.event_id, w), e.event_id, w, e.model_name)
        for w in webhooks
        for e in events
    ]


def queue(
    store: Store, events: list[Event], deliveries: list[NewDelivery], now: float = NOW
) -> int:
    """Commit the events and their rows as a cycle that changed nothing else would."""
    return store.commit_cycle(SnapshotDelta(), events, deliveries, {}, now=now)


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
    rows = store.backend.query(
        "SELECT delivery_id, attempted_at, status_code, error, latency_ms, response"
        " FROM attempts WHERE delivery_id = ? ORDER BY id",
        (delivery_id,),
    )
    return [Attempt(*row.values()) for row in rows]


def file_schema(path: Path, table: str) -> tuple[int, set[str], set[str]]:
    """What a SQLite state file holds, read beside the store: its schema version, the
    columns of ``table`` and the names of every index."""
    conn = sqlite3.connect(path)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        conn.close()
    return version, columns, indexes
