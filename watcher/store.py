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

from watcher import state_meta as sm
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
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True)
class NewDelivery:
    delivery_id: str
    event_id: str
    webhook: str
    model_name: str


@dataclass(frozen=True)
class Head:
    """The oldest pending delivery of one (webhook, model) lane."""

    delivery_id: str
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
    response: str | None = None
    """The start of the response body; the caller caps it."""


@dataclass(frozen=True)
class DeliveryRow:
    """One outbox row with its event, as listed by the ``deliveries`` command."""

    delivery_id: str
    event_id: str
    event_type: str
    webhook: str
    model_name: str
    model_version: str | None
    status: str
    attempts: int
    """Attempts since the row was last queued: what the retry policy counts."""
    created_at: float
    """When the row was queued (again, after a redelivery): what ``max_age`` counts from."""
    next_attempt_at: float
    last_status_code: int | None
    last_error: str | None
    updated_at: float = 0.0
    delivered_at: float | None = None
    dead_at: float | None = None
    detected_at: float = 0.0
    """When the event was detected."""
    total_attempts: int = 0
    """Every attempt in the log, including those before a redelivery."""
    last_response: str | None = None


@dataclass(frozen=True)
class OutboxSummary:
    """The outbox at a glance, for the ``status`` command."""

    counts: dict[str, dict[str, int]]
    """{webhook: {status: count}}."""
    oldest_pending: float | None
    """created_at of the oldest pending row, over every webhook."""
    oldest_pending_by_webhook: dict[str, float]

    def total(self, status: str) -> int:
        return sum(by_status.get(status, 0) for by_status in self.counts.values())


MIN_ID_PREFIX = 8
"""Shortest delivery id prefix that redelivery accepts."""


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
            # In WAL mode NORMAL loses nothing on a process crash (kill -9); a power loss can
            # undo the last transactions, snapshot and outbox together, which the next poll
            # then detects again under the same event ids. FULL would fsync every attempt.
            conn.execute("PRAGMA synchronous=NORMAL")
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
        baseline = self.get_meta(sm.BASELINE_AT.name)
        if baseline is None:
            return None
        models = {
            str(r["name"]): ModelState.from_dict(json.loads(r["data"]))
            for r in self._query("SELECT name, data FROM snapshot_models")
        }
        versions: dict[tuple[str, str], VersionState] = {}
        with self._mutex:  # row by row: 100k rows of JSON are never all in memory at once
            for (data,) in self._conn.execute("SELECT data FROM snapshot_versions"):
                version = VersionState.from_dict(json.loads(data))
                versions[version.key] = version
        read_at = int(self.get_meta(sm.SNAPSHOT_READ_AT.name) or 0)
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
        heads = self.due_heads(now, ignore_schedule=ignore_schedule, exclude=exclude)
        return self.load_due([h.delivery_id for h in heads])

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
        """Log one attempt and move its delivery to ``status`` (pending: retry at that time)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO attempts"
                " (delivery_id, attempted_at, status_code, error, latency_ms, response)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    attempt.delivery_id,
                    attempt.attempted_at,
                    attempt.status_code,
                    attempt.error,
                    attempt.latency_ms,
                    attempt.response,
                ),
            )
            conn.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1,"
                " next_attempt_at = COALESCE(?, next_attempt_at), updated_at = ?,"
                " last_status_code = ?, last_error = ?, delivered_at = ?, dead_at = ?"
                " WHERE delivery_id = ?",
                (
                    status,
                    next_attempt_at,
                    attempt.attempted_at,
                    attempt.status_code,
                    attempt.error,
                    attempt.attempted_at if status == DELIVERED else None,
                    attempt.attempted_at if status == DEAD else None,
                    attempt.delivery_id,
                ),
            )

    def deliveries(self, status: str | None = None) -> list[DeliveryRow]:
        """Every row (or every row with ``status``), as list_deliveries orders them."""
        return self.list_deliveries(status=status)

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
            "SELECT d.*, e.type AS event_type, e.model_version, e.detected_at,"  # noqa: S608
            " (SELECT COUNT(*) FROM attempts a WHERE a.delivery_id = d.delivery_id)"
            "   AS total_attempts,"
            " (SELECT a.response FROM attempts a WHERE a.delivery_id = d.delivery_id"
            "   ORDER BY a.id DESC LIMIT 1) AS last_response"
            " FROM deliveries d JOIN events e ON e.event_id = d.event_id"
            f" WHERE {where} ORDER BY d.created_at DESC, d.id DESC"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._query(sql, params)
        return [_delivery_row(r) for r in reversed(rows)]

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
        with self._transaction() as conn:
            resolved = _resolve_ids(conn, ids) if ids else None
            status = DEAD if dead or (resolved is None and since is None) else None
            where, params = _filters(status=status, webhook=webhook, since=since)
            if resolved is not None:
                where += f" AND d.delivery_id IN ({', '.join('?' * len(resolved))})"
                params.extend(resolved)
            cursor = conn.execute(
                "UPDATE deliveries SET status = 'pending', attempts = 0, created_at = ?,"  # noqa: S608
                " next_attempt_at = ?, updated_at = ?, delivered_at = NULL, dead_at = NULL"
                f" WHERE delivery_id IN (SELECT d.delivery_id FROM deliveries d WHERE {where})",
                [now, now, now, *params],
            )
            return int(cursor.rowcount)

    def purge(self, *, dead: bool = True, older_than: float, now: float) -> int:
        """Delete dead rows that died more than ``older_than`` seconds ago, with their attempts
        (and their events, when nothing else refers to them). Returns how many rows went."""
        if not dead:
            raise ValueError("purge removes dead deliveries only")
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
        with self._transaction() as conn:
            doomed = [
                (str(r[0]), str(r[1]))
                for r in conn.execute(
                    f"SELECT delivery_id, event_id FROM deliveries"  # noqa: S608 - fixed names
                    f" WHERE {column} < ? AND status = ?",
                    (cutoff, status),
                )
            ]
            conn.executemany(
                "DELETE FROM attempts WHERE delivery_id = ?", ((d,) for d, _ in doomed)
            )
            conn.executemany(
                "DELETE FROM deliveries WHERE delivery_id = ?", ((d,) for d, _ in doomed)
            )
            unreferenced = (
                "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.event_id)"
            )
            conn.executemany(
                f"DELETE FROM events WHERE event_id = ? AND {unreferenced}",  # noqa: S608
                {(e,) for _, e in doomed},
            )
            if events_before is not None:
                conn.execute(
                    f"DELETE FROM events WHERE detected_at < ? AND {unreferenced}",  # noqa: S608
                    (events_before,),
                )
        return len(doomed)

    def attempts(self, delivery_id: str) -> list[Attempt]:
        return [
            Attempt(
                delivery_id=str(r["delivery_id"]),
                attempted_at=float(r["attempted_at"]),
                status_code=r["status_code"],
                error=r["error"],
                latency_ms=float(r["latency_ms"]),
                response=r["response"],
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


def _filters(
    *,
    status: str | None = None,
    webhook: str | None = None,
    model: str | None = None,
    since: float | None = None,
) -> tuple[str, list[Any]]:
    """A WHERE clause over ``deliveries d`` and its parameters."""
    clauses = ["1"]
    params: list[Any] = []
    for column, value in (("status", status), ("webhook", webhook), ("model_name", model)):
        if value is not None:
            clauses.append(f"d.{column} = ?")
            params.append(value)
    if since is not None:
        clauses.append("(d.updated_at >= ? OR d.created_at >= ?)")
        params.extend((since, since))
    return " AND ".join(clauses), params


def _resolve_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> list[str]:
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
            for r in conn.execute(
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


def _delivery_row(r: sqlite3.Row) -> DeliveryRow:
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
    )


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
