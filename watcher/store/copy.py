"""Copying a whole state from one store into another: how an install moves from its SQLite
file to a PostgreSQL namespace without a new baseline and without losing a queued delivery.

Every table is read a batch at a time from the source and written into the target in one
transaction on the target, so a failed copy leaves the target as empty as it was. Rows keep
their order: events in the order they were detected, deliveries and attempts under their own
ids (a lane's deliveries go out oldest id first; an attempt log reads oldest id first). The
lease tables of a PostgreSQL state are not copied: a new namespace starts at epoch 0, and a
claim made under another state's lease means nothing in it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher import state_meta as sm
from watcher.errors import LockError, StoreError
from watcher.store.database import Database, Tx

if TYPE_CHECKING:
    from watcher.store import Store

BATCH = 5000
"""Rows read and written at a time: 100k snapshot versions are never all in memory at once."""


@dataclass(frozen=True)
class _Table:
    name: str
    columns: str
    order: str
    """ORDER BY of the read; ``rowid`` stands for the backend's insertion order."""
    cleared: str = ""
    """A column written empty whatever the source holds."""

    def read_sql(self, rowid: str) -> str:
        names = self.columns.split(", ")
        exprs = ["NULL" if n == self.cleared else n for n in names]
        order = rowid if self.order == "rowid" else self.order
        return f"SELECT {', '.join(exprs)} FROM {self.name} ORDER BY {order}"  # noqa: S608

    def write_sql(self) -> str:
        marks = ", ".join("?" * len(self.columns.split(", ")))
        return f"INSERT INTO {self.name} ({self.columns}) VALUES ({marks})"  # noqa: S608


TABLES: tuple[_Table, ...] = (
    _Table("meta", "key, value", "key"),
    _Table("snapshot_models", "name, data", "name"),
    _Table("snapshot_versions", "name, version, data", "name, version"),
    _Table("events", "event_id, type, model_name, model_version, data, detected_at", "rowid"),
    _Table(
        "deliveries",
        "id, delivery_id, event_id, webhook, model_name, status, attempts, created_at,"
        " next_attempt_at, updated_at, last_status_code, last_error, delivered_at, dead_at,"
        " claimed_epoch, request",
        "id",
        # a claim belongs to the lease of the state it was made in
        cleared="claimed_epoch",
    ),
    _Table(
        "attempts",
        "id, delivery_id, attempted_at, status_code, error, latency_ms, response, epoch",
        "id",
    ),
)
"""Every table of a state, parents before children (deliveries name their events)."""


@dataclass(frozen=True)
class CopyReport:
    """What a copy wrote: rows per table, in the order they were copied."""

    rows: dict[str, int]


def open_sqlite_source(path: Path) -> Store:
    """The SQLite state at ``path``, locked for the copy: a watcher still running on it would
    go on changing what is being copied (and deliver beside the new state), so it must be
    stopped first. A missing file, or one that is not a watcher's state, is refused without
    being created or touched."""
    from watcher.store import Store

    shown = repr(str(path))
    if not path.is_file():
        raise StoreError(f"no state file at {shown}")
    if not _is_state_file(path):
        raise StoreError(f"{shown} is not a watcher state file")
    try:
        return Store.open(path)
    except LockError:
        raise LockError(
            f"a watcher is running on {shown}; stop it first (the copy holds the state "
            "file's lock, so nothing changes while it runs)"
        ) from None


def _is_state_file(path: Path) -> bool:
    """A SQLite database with the state's tables, read without writing anything."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return version > 0 and {"meta", "snapshot_versions", "deliveries"} <= names


def copy_state(source: Store, target: Store, *, batch: int = BATCH) -> CopyReport:
    """Copy every row of ``source`` into ``target``, in one transaction on the target.

    The source must not change meanwhile (a SQLite source is held by its lock, see
    ``open_sqlite_source``). Refused, writing nothing, when the source has no snapshot yet or
    the target already holds any state or a replica leads it.
    """
    if source.get_meta(sm.BASELINE_AT.name) is None:
        raise StoreError(
            f"the state at {source.location} has no snapshot yet (its first poll never "
            "finished): there is nothing to copy; start the watcher on the new state instead"
        )
    rows: dict[str, int] = {}
    with target._transaction() as tx:
        _check_empty(target, tx)
        for table in TABLES:
            rows[table.name] = _copy_table(source, tx, table, batch)
        if target.backend.kind == "postgresql":
            _continue_identities(tx)
    return CopyReport(rows)


def _check_empty(target: Database, tx: Tx) -> None:
    """Refuse a target that holds any row, or whose lease a running replica holds; on
    PostgreSQL the lease row stays locked until the copy commits, so no replica writes
    meanwhile."""
    where = target.location
    if target.backend.kind == "postgresql":
        lease = tx.execute(
            "SELECT holder FROM leader WHERE expires_at > clock_timestamp() FOR UPDATE"
        ).fetchall()
        if lease:
            raise StoreError(
                f"a watcher ({lease[0][0]}) is running on {where}; stop it, or copy into "
                "another namespace (--namespace)"
            )
    for table in TABLES:
        if tx.execute(f"SELECT 1 FROM {table.name} LIMIT 1").fetchall():  # noqa: S608
            raise StoreError(
                f"{where} already holds a state ({table.name} has rows); copy into another "
                "namespace (--namespace), or drop that one first if it is not needed"
            )


def _copy_table(source: Database, tx: Tx, table: _Table, batch: int) -> int:
    rows = source.backend.stream(table.read_sql(source.backend.rowid))
    insert = table.write_sql()
    copied = 0
    for chunk in _batches(rows, batch):
        tx.executemany(insert, chunk)
        copied += len(chunk)
    return copied


def _batches(rows: Iterator[Sequence[Any]], size: int) -> Iterator[list[Sequence[Any]]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def _continue_identities(tx: Tx) -> None:
    """Rows inserted with their own ids leave PostgreSQL's identity sequences behind: the
    next delivery or attempt must get an id after the copied ones."""
    for table in ("deliveries", "attempts"):
        tx.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"  # noqa: S608
            f" HAVING max(id) IS NOT NULL"
        )
