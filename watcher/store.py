"""The only module that touches SQLite: snapshot, outbox, delivery log, meta, migrations.

The snapshot of one cycle and the outbox rows it produced are written in one transaction, so a
crash (even ``kill -9``) either keeps both or neither: an event, once detected, is never lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from watcher.errors import LockError, StoreError
from watcher.model import (
    Event,
    ModelState,
    Observation,
    SnapshotDelta,
    VersionState,
)

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"

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
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True)
class NewDelivery:
    delivery_id: str
    event_id: str
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
    delivery_id: str
    attempted_at: float
    status_code: int | None
    error: str | None
    latency_ms: float


@dataclass(frozen=True)
class DeliveryRow:
    delivery_id: str
    event_id: str
    event_type: str
    webhook: str
    model_name: str
    model_version: str | None
    status: str
    attempts: int
    created_at: float
    next_attempt_at: float
    last_status_code: int | None
    last_error: str | None


class Store:
    """The state database. One instance per process; safe to share between threads."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_file: IO[bytes] | None) -> None:
        self.path = path
        self._conn = conn
        self._lock_file = lock_file
        self._mutex = threading.RLock()

    # ----------------------------------------------------------------- opening and closing

    @classmethod
    def open(cls, path: Path, *, lock: bool = True, wait_for_lock: bool = False) -> Store:
        """Open (creating with mode 0600 if needed) and migrate the state database.

        With ``lock``, take the single-writer lock first: a second watcher on the same state
        raises LockError instead of delivering twice.
        """
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_file = _take_lock(path, wait_for_lock) if lock else None
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
        except OSError as exc:
            raise StoreError(f"cannot open state file {str(path)!r}: {exc.strerror}") from None
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(path, conn, lock_file)
            store._migrate()
        except (sqlite3.DatabaseError, StoreError) as exc:
            if conn is not None:
                conn.close()
            if lock_file is not None:
                lock_file.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"state file {str(path)!r} is not usable: {exc}") from None
        return store

    def close(self) -> None:
        with self._mutex:
            self._conn.close()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        current = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"state file {str(self.path)!r} has schema version {current}, newer than this "
                f"watcher understands ({SCHEMA_VERSION}); upgrade the watcher"
            )
        for version in range(current, SCHEMA_VERSION):
            with self._transaction() as conn:
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._mutex:
            cursor = self._conn.execute(sql, tuple(params))
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()

    # ----------------------------------------------------------------- meta

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, values: dict[str, str]) -> None:
        with self._transaction() as conn:
            _set_meta(conn, values)

    def all_meta(self) -> dict[str, str]:
        return {str(r["key"]): str(r["value"]) for r in self._query("SELECT key, value FROM meta")}

    # ----------------------------------------------------------------- snapshot

    def load_snapshot(self) -> Observation | None:
        """The last complete snapshot, or None before the first (baseline) cycle."""
        baseline = self.get_meta("baseline_at")
        if baseline is None:
            return None
        models = {
            str(r["name"]): ModelState.from_dict(json.loads(r["data"]))
            for r in self._query("SELECT name, data FROM snapshot_models")
        }
        versions: dict[tuple[str, str], VersionState] = {}
        for row in self._query("SELECT data FROM snapshot_versions"):
            version = VersionState.from_dict(json.loads(row["data"]))
            versions[version.key] = version
        read_at = int(self.get_meta("snapshot_read_at") or 0)
        return Observation(models=models, versions=versions, read_at=read_at)

    def commit_cycle(
        self,
        delta: SnapshotDelta,
        events: Sequence[Event],
        deliveries: Sequence[NewDelivery],
        meta: dict[str, str],
        now: float | None = None,
    ) -> int:
        """Write the snapshot change, the events and their outbox rows in one transaction.

        Returns how many new deliveries were queued. Rows that already exist (the same change
        detected again after a crash) are left as they are.
        """
        now = time.time() if now is None else now
        with self._transaction() as conn:
            conn.executemany(
                "DELETE FROM snapshot_models WHERE name = ?", ((n,) for n in delta.delete_models)
            )
            conn.executemany(
                "DELETE FROM snapshot_versions WHERE name = ? AND version = ?",
                delta.delete_versions,
            )
            conn.executemany(
                "INSERT OR REPLACE INTO snapshot_models (name, data) VALUES (?, ?)",
                ((m.name, _dumps(m.to_dict())) for m in delta.upsert_models),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO snapshot_versions (name, version, data) VALUES (?, ?, ?)",
                ((v.name, v.version, _dumps(v.to_dict())) for v in delta.upsert_versions),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO events"
                " (event_id, type, model_name, model_version, data, detected_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (
                        e.event_id,
                        e.type.value,
                        e.model_name,
                        e.model_version,
                        _dumps(e.to_dict()),
                        now,
                    )
                    for e in events
                ),
            )
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO deliveries (delivery_id, event_id, webhook, model_name,"
                " status, created_at, next_attempt_at, updated_at)"
                " VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
                (
                    (d.delivery_id, d.event_id, d.webhook, d.model_name, now, now, now)
                    for d in deliveries
                ),
            )
            queued = conn.total_changes - before
            _set_meta(conn, meta)
        return queued

    # ----------------------------------------------------------------- outbox

    def due_deliveries(
        self, now: float, *, ignore_schedule: bool = False, exclude: Iterable[str] = ()
    ) -> list[DueDelivery]:
        """The head of every (webhook, model) lane that is due.

        Only the oldest pending row of a lane is ever offered, so events for one model reach one
        webhook in detection order; a later event waits while an earlier one is retried.
        """
        excluded = set(exclude)
        rows = self._query(
            "SELECT d.delivery_id, d.webhook, d.attempts, d.created_at, d.next_attempt_at,"
            " e.data FROM deliveries d"
            " JOIN (SELECT MIN(id) AS id FROM deliveries WHERE status = 'pending'"
            "       GROUP BY webhook, model_name) heads ON heads.id = d.id"
            " JOIN events e ON e.event_id = d.event_id"
            " ORDER BY d.id"
        )
        return [
            DueDelivery(
                delivery_id=str(r["delivery_id"]),
                webhook=str(r["webhook"]),
                event=Event.from_dict(json.loads(r["data"])),
                attempts=int(r["attempts"]),
                created_at=float(r["created_at"]),
            )
            for r in rows
            if r["delivery_id"] not in excluded
            and (ignore_schedule or float(r["next_attempt_at"]) <= now)
        ]

    def record_attempt(
        self,
        attempt: Attempt,
        *,
        status: str,
        next_attempt_at: float | None = None,
    ) -> None:
        """Log one attempt and move its delivery to ``status`` (pending: retry at that time)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO attempts (delivery_id, attempted_at, status_code, error, latency_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    attempt.delivery_id,
                    attempt.attempted_at,
                    attempt.status_code,
                    attempt.error,
                    attempt.latency_ms,
                ),
            )
            conn.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1,"
                " next_attempt_at = COALESCE(?, next_attempt_at), updated_at = ?,"
                " last_status_code = ?, last_error = ? WHERE delivery_id = ?",
                (
                    status,
                    next_attempt_at,
                    attempt.attempted_at,
                    attempt.status_code,
                    attempt.error,
                    attempt.delivery_id,
                ),
            )

    def deliveries(self, status: str | None = None) -> list[DeliveryRow]:
        rows = self._query(
            "SELECT d.*, e.type AS event_type, e.model_version FROM deliveries d"
            " JOIN events e ON e.event_id = d.event_id"
            " WHERE ? IS NULL OR d.status = ? ORDER BY d.id",
            (status, status),
        )
        return [
            DeliveryRow(
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
            )
            for r in rows
        ]

    def attempts(self, delivery_id: str) -> list[Attempt]:
        return [
            Attempt(
                delivery_id=str(r["delivery_id"]),
                attempted_at=float(r["attempted_at"]),
                status_code=r["status_code"],
                error=r["error"],
                latency_ms=float(r["latency_ms"]),
            )
            for r in self._query(
                "SELECT * FROM attempts WHERE delivery_id = ? ORDER BY id", (delivery_id,)
            )
        ]

    def recent_events(self, limit: int = 100) -> list[Event]:
        """The most recently detected events, newest first."""
        return [
            Event.from_dict(json.loads(r["data"]))
            for r in self._query(
                "SELECT data FROM events ORDER BY detected_at DESC, rowid DESC LIMIT ?", (limit,)
            )
        ]

    def status_counts(self) -> dict[str, dict[str, int]]:
        """{webhook: {status: count}} over the whole outbox."""
        counts: dict[str, dict[str, int]] = {}
        for r in self._query(
            "SELECT webhook, status, COUNT(*) AS n FROM deliveries GROUP BY webhook, status"
        ):
            counts.setdefault(str(r["webhook"]), {})[str(r["status"])] = int(r["n"])
        return counts

    def oldest_pending(self) -> float | None:
        rows = self._query("SELECT MIN(created_at) AS t FROM deliveries WHERE status = 'pending'")
        value = rows[0]["t"] if rows else None
        return float(value) if value is not None else None


def _set_meta(conn: sqlite3.Connection, values: dict[str, str]) -> None:
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        values.items(),
    )


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _take_lock(path: Path, wait: bool) -> IO[bytes]:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    lock_file = os.fdopen(fd, "r+b")
    flags: Callable[[], int] = lambda: fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)  # noqa: E731
    try:
        fcntl.flock(lock_file, flags())
    except BlockingIOError:
        holder = lock_file.read().decode("ascii", "replace").strip() or "unknown"
        lock_file.close()
        raise LockError(
            f"another watcher (pid {holder}) holds the lock on state file {str(path)!r}; "
            "use --wait-for-lock to wait for it"
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(str(os.getpid()).encode("ascii"))
    lock_file.flush()
    return lock_file
