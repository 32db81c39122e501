"""The state store: the only package that touches a database (SQLite or PostgreSQL).

It keeps the snapshot of the registry, the events detected from it, the outbox of deliveries
and their attempts, and a few meta keys: in one SQLite file, or in one schema of a PostgreSQL
database shared by replicas.

- ``rows``: the statuses and row types callers get back (no SQL, shared by both backends);
- ``database``: the backend interface the query groups stand on, and meta;
- ``schema``: the SQLite migrations and the schema version;
- ``sqlite``: the SQLite file, its single-writer lock and its transactions;
- ``snapshot``: loading the snapshot and committing a cycle (snapshot, events, outbox in one
  transaction);
- ``outbox``: what the deliverer asks and records;
- ``log``: listing, redelivering, purging and pruning for the operator.

``Store`` puts the query groups together on one connection; import everything from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from watcher.store.database import Backend
from watcher.store.log import DeliveryLogQueries
from watcher.store.outbox import OutboxQueries
from watcher.store.rows import (
    DEAD,
    DELIVERED,
    MIN_ID_PREFIX,
    PENDING,
    Attempt,
    DeliveryRow,
    DueDelivery,
    Head,
    NewDelivery,
    OutboxSummary,
)
from watcher.store.schema import _MIGRATIONS, SCHEMA_VERSION
from watcher.store.snapshot import SnapshotQueries
from watcher.store.sqlite import SqliteBackend


class Store(SnapshotQueries, OutboxQueries, DeliveryLogQueries):
    """The state database. One instance per process; safe to share between threads."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)

    @classmethod
    def open(cls, path: Path, *, lock: bool = True, wait_for_lock: bool = False) -> Self:
        """The SQLite state file at ``path``, created and migrated as needed. With ``lock``,
        the single-writer lock is taken first (LockError if another watcher holds it)."""
        return cls(SqliteBackend.open(path, lock=lock, wait_for_lock=wait_for_lock))


__all__ = [
    "DEAD",
    "DELIVERED",
    "MIN_ID_PREFIX",
    "PENDING",
    "SCHEMA_VERSION",
    "_MIGRATIONS",
    "Attempt",
    "DeliveryRow",
    "DueDelivery",
    "Head",
    "NewDelivery",
    "OutboxSummary",
    "Store",
]
