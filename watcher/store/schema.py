"""The SQLite schema: migrations, applied in order, and the version the file records.

The schema version lives in SQLite's ``user_version``, so a file written by a newer watcher is
refused before anything reads it, rather than misread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from watcher.errors import StoreError
from watcher.store.database import Tx

CONSOLE_MIGRATION = """
    ALTER TABLE deliveries ADD COLUMN request TEXT;
    CREATE INDEX deliveries_webhook ON deliveries (webhook, id);
    CREATE INDEX deliveries_model ON deliveries (model_name, id);
    CREATE INDEX deliveries_status ON deliveries (status, id);
    CREATE INDEX events_model ON events (model_name, detected_at);
    CREATE INDEX attempts_time ON attempts (attempted_at);
    CREATE INDEX attempts_failed ON attempts (id) WHERE error IS NOT NULL;
"""
"""The console's migration, in SQL both databases speak: each row keeps the last request as
sent (secrets redacted), and the listings the console pages through (newest first, by
webhook, model or status; a model's events; the attempts of the last day; the last failure)
are read along an index instead of a scan. Never edit: it is a migration of both."""

# Each migration takes the schema from its index to index + 1. Append, never edit.
_MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE snapshot_models (name TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE snapshot_versions (
        name TEXT NOT NULL, version TEXT NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE events (
        event_id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        model_name TEXT NOT NULL,
        model_version TEXT,
        data TEXT NOT NULL,
        detected_at REAL NOT NULL
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id TEXT NOT NULL UNIQUE,
        event_id TEXT NOT NULL REFERENCES events(event_id),
        webhook TEXT NOT NULL,
        model_name TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_status_code INTEGER,
        last_error TEXT
    );
    CREATE INDEX deliveries_lane ON deliveries (status, webhook, model_name, id);
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id TEXT NOT NULL,
        attempted_at REAL NOT NULL,
        status_code INTEGER,
        error TEXT,
        latency_ms REAL NOT NULL
    );
    CREATE INDEX attempts_delivery ON attempts (delivery_id, id);
    """,
    # 2: the delivery log keeps the start of each answer and when a row was settled, and is
    # indexed for listing, redelivery, purging and pruning.
    """
    ALTER TABLE attempts ADD COLUMN response TEXT;
    ALTER TABLE deliveries ADD COLUMN delivered_at REAL;
    ALTER TABLE deliveries ADD COLUMN dead_at REAL;
    UPDATE deliveries SET delivered_at = updated_at WHERE status = 'delivered';
    UPDATE deliveries SET dead_at = updated_at WHERE status = 'dead';
    CREATE INDEX deliveries_updated ON deliveries (updated_at);
    CREATE INDEX deliveries_created ON deliveries (created_at);
    CREATE INDEX deliveries_event ON deliveries (event_id);
    CREATE INDEX deliveries_delivered_at ON deliveries (delivered_at)
        WHERE delivered_at IS NOT NULL;
    CREATE INDEX deliveries_dead_at ON deliveries (dead_at) WHERE dead_at IS NOT NULL;
    CREATE INDEX events_detected ON events (detected_at);
    """,
    # 3: the epoch that claimed a delivery and made an attempt (always empty on SQLite, which
    # has one writer; kept so both backends answer the same queries and a state can be copied).
    """
    ALTER TABLE deliveries ADD COLUMN claimed_epoch INTEGER;
    ALTER TABLE attempts ADD COLUMN epoch INTEGER;
    """,
    # 4: the console (the same statements as PostgreSQL's migration 2).
    CONSOLE_MIGRATION,
)
SCHEMA_VERSION = len(_MIGRATIONS)


def migrate(
    conn: sqlite3.Connection,
    path: Path,
    transaction: Callable[[], AbstractContextManager[Tx]],
) -> None:
    """Bring the file's schema up to SCHEMA_VERSION, one migration per transaction, so a crash
    mid-way leaves a schema version that matches the tables."""
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"state file {str(path)!r} has schema version {current}, newer than this "
            f"watcher understands ({SCHEMA_VERSION}); upgrade the watcher"
        )
    for version in range(current, SCHEMA_VERSION):
        with transaction() as tx:
            for statement in _MIGRATIONS[version].split(";"):
                if statement.strip():
                    tx.execute(statement)
            tx.execute(f"PRAGMA user_version = {version + 1}")
