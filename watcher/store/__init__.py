"""The state store: the only package that touches SQLite.

It keeps the snapshot of the registry, the events detected from it, the outbox of deliveries
and their attempts, and a few meta keys, in one SQLite file. Its modules follow the seams a
second backend would follow:

- ``rows``: the statuses and row types callers get back (no SQL, shared by any backend);
- ``schema``: the SQLite migrations and the schema version;
- ``sqlite``: the connection, the single-writer lock, transactions and meta;
- ``snapshot``: loading the snapshot and committing a cycle (snapshot, events, outbox in one
  transaction);
- ``outbox``: what the deliverer asks and records;
- ``log``: listing, redelivering, purging and pruning for the operator.

``Store`` puts the query groups together on one connection; import everything from here.
"""

from __future__ import annotations

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


class Store(SnapshotQueries, OutboxQueries, DeliveryLogQueries):
    """The state database. One instance per process; safe to share between threads."""


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
