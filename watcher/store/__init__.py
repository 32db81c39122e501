"""The state store: the only package that touches a database (SQLite or PostgreSQL).

It keeps the snapshot of the registry, the events detected from it, the outbox of deliveries
and their attempts, and a few meta keys: in one SQLite file, or in one schema of a PostgreSQL
database shared by replicas.

- ``rows``: the statuses and row types callers get back (no SQL, shared by both backends);
- ``database``: the backend interface the query groups stand on, and meta;
- ``schema``: the SQLite migrations and the schema version;
- ``sqlite``: the SQLite file, its single-writer lock and its transactions;
- ``postgres`` and ``pg_schema``: the PostgreSQL pool, one schema per namespace, its
  migrations and the leader lease's tables;
- ``snapshot``: loading the snapshot and committing a cycle (snapshot, events, outbox in one
  transaction);
- ``outbox``: what the deliverer asks and records;
- ``lease``: the leader lease of a shared state (the fence itself is in ``database``);
- ``log``: listing, redelivering, purging and pruning for the operator;
- ``console``: what the delivery console reads (overview, pages of deliveries and events, one
  delivery in full) and the test delivery it queues;
- ``copy``: a whole state copied into another (a SQLite install moving to PostgreSQL).

``Store`` puts the query groups together on one connection; import everything from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from watcher.config import StateConfig
from watcher.store.console import ConsoleQueries
from watcher.store.copy import CopyReport, copy_state, open_sqlite_source
from watcher.store.database import Backend, LeaseLost, Token
from watcher.store.lease import LeaseInfo, LeaseQueries
from watcher.store.log import DeliveryLogQueries
from watcher.store.outbox import OutboxQueries
from watcher.store.postgres import PgSettings, PostgresBackend, StateUnavailable
from watcher.store.rows import (
    DEAD,
    DELIVERED,
    MIN_ID_PREFIX,
    PENDING,
    Attempt,
    AttemptRow,
    ChartBucket,
    DeliveryDetail,
    DeliveryFilter,
    DeliveryRow,
    DueDelivery,
    EventRow,
    Head,
    NewDelivery,
    OutboxSummary,
    WebhookStats,
)
from watcher.store.schema import _MIGRATIONS, SCHEMA_VERSION
from watcher.store.snapshot import SnapshotQueries
from watcher.store.sqlite import SqliteBackend


class Store(SnapshotQueries, OutboxQueries, DeliveryLogQueries, LeaseQueries, ConsoleQueries):
    """The state database. One instance per process; safe to share between threads."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)

    @classmethod
    def open(cls, path: Path, *, lock: bool = True, wait_for_lock: bool = False) -> Self:
        """The SQLite state file at ``path``, created and migrated as needed. With ``lock``,
        the single-writer lock is taken first (LockError if another watcher holds it)."""
        return cls(SqliteBackend.open(path, lock=lock, wait_for_lock=wait_for_lock))

    @classmethod
    def connect(cls, settings: PgSettings) -> Self:
        """The PostgreSQL state of ``settings.namespace``, its schema created and migrated as
        needed (StoreError, one line and no password, when the database cannot be used)."""
        return cls(PostgresBackend.connect(settings))

    @classmethod
    def for_config(
        cls, state: StateConfig, *, lock: bool = True, wait_for_lock: bool = False
    ) -> Self:
        """The state ``[state]`` names: the SQLite file (``lock`` as in ``open``), or the
        PostgreSQL namespace at ``url`` (replicas share it; the leader lease, not a lock,
        decides who writes)."""
        if state.url is None:
            return cls.open(state.path, lock=lock, wait_for_lock=wait_for_lock)
        return cls.connect(
            PgSettings(
                url=state.url,
                namespace=state.namespace,
                password=None if state.password is None else state.password.reveal(),
                connect_timeout=state.connect_timeout,
                statement_timeout=state.statement_timeout,
            )
        )


__all__ = [
    "DEAD",
    "DELIVERED",
    "MIN_ID_PREFIX",
    "PENDING",
    "SCHEMA_VERSION",
    "_MIGRATIONS",
    "Attempt",
    "AttemptRow",
    "ChartBucket",
    "ConsoleQueries",
    "CopyReport",
    "DeliveryDetail",
    "DeliveryFilter",
    "DeliveryRow",
    "DueDelivery",
    "EventRow",
    "Head",
    "LeaseInfo",
    "LeaseLost",
    "NewDelivery",
    "OutboxSummary",
    "PgSettings",
    "StateUnavailable",
    "Store",
    "Token",
    "WebhookStats",
    "copy_state",
    "open_sqlite_source",
]
