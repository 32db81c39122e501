"""The SQLite backend: opening the file, the single-writer lock, transactions.

Everything SQLite-specific lives here and in ``schema``: the pragmas, the lock file, how a
transaction is taken. The query groups see it through ``database.Backend``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Self

from watcher.errors import LockError, StoreError
from watcher.store.database import Row, Token
from watcher.store.schema import migrate


class SqliteBackend:
    """One SQLite connection shared by every thread, serialised by a re-entrant mutex."""

    kind = "sqlite"
    rowid = "rowid"

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_file: IO[bytes] | None) -> None:
        self.path = path
        self.location = str(path)
        self._conn = conn
        self._lock_file = lock_file
        self._mutex = threading.RLock()

    @classmethod
    def open(cls, path: Path, *, lock: bool = True, wait_for_lock: bool = False) -> Self:
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
            conn = _connect(path)
            backend = cls(path, conn, lock_file)
            migrate(conn, path, backend.transaction)
        except (sqlite3.DatabaseError, StoreError) as exc:
            if conn is not None:
                conn.close()
            if lock_file is not None:
                lock_file.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"state file {str(path)!r} is not usable: {exc}") from None
        return backend

    def close(self) -> None:
        with self._mutex:
            self._conn.close()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    @contextlib.contextmanager
    def transaction(self, fence: Token | None = None) -> Iterator[_SqliteTx]:
        """A write transaction. IMMEDIATE takes the write lock up front, so two writers queue
        instead of failing half-way with SQLITE_BUSY. No fence: the file lock makes this
        process the only writer, and a SQLite state has no lease."""
        assert fence is None, "a SQLite state has no leader lease"
        with self._mutex:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows by column name, read under the mutex: the connection is shared by threads."""
        with self._mutex:
            cursor = self._conn.execute(sql, tuple(params))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]

    def stream(self, sql: str) -> Iterator[Sequence[Any]]:
        with self._mutex:
            yield from self._conn.execute(sql)


class _SqliteTx:
    """sqlite3 speaks ``?`` already: statements go straight to the connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        return self._conn.executemany(sql, rows).rowcount


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL loses nothing on a process crash (kill -9); a power loss can undo
        # the last transactions, snapshot and outbox together, which the next poll then detects
        # again under the same event ids. FULL would fsync every attempt.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn


def _take_lock(path: Path, wait: bool) -> IO[bytes]:
    """flock a sibling ``.lock`` file and write our pid in it, for the refusal message."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    lock_file = os.fdopen(fd, "r+b")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
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
