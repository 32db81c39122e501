"""What the query groups stand on: a backend (SQLite or PostgreSQL) behind one small interface.

The queries are written once, in the SQL both databases speak (``?`` placeholders, ``ON
CONFLICT``, ``TRUE``); a backend only opens connections, takes transactions and, for
PostgreSQL, turns ``?`` into its own placeholders. A query group sees ``_transaction()``,
``_query()`` and ``_stream()``, never a connection.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self

from watcher.errors import StoreError

Row = Mapping[str, Any]
"""A result row by column name."""


class Cursor(Protocol):
    """What a statement run inside a transaction gives back (sqlite3's and psycopg's cursors
    both are one)."""

    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> Sequence[Sequence[Any]]: ...

    def __iter__(self) -> Iterator[Sequence[Any]]: ...


class Tx(Protocol):
    """An open transaction: statements with ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run ``sql`` once per row; returns how many rows it changed in all."""
        ...


class Backend(Protocol):
    """One database under the store."""

    kind: str
    """``"sqlite"`` or ``"postgresql"``: the name status shows."""

    location: str
    """Where the state is, as shown to people: a path, or a URL without its password."""

    rowid: str
    """The column that orders rows of ``events`` as they were inserted."""

    def transaction(self, fence: Token | None = None) -> contextlib.AbstractContextManager[Tx]:
        """A write transaction: committed when the block ends, rolled back if it raises. With
        ``fence``, it first checks that holder still holds the lease with that epoch (LeaseLost
        otherwise); a backend without leases (SQLite: one writer) never gets one."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """The rows of one read, by column name."""
        ...

    def stream(self, sql: str) -> Iterator[Sequence[Any]]:
        """The rows of one read, a few at a time (the snapshot's 100k versions are never all
        in memory at once)."""
        ...

    def close(self) -> None: ...


class LeaseLost(StoreError):
    """This replica no longer holds the lease with its epoch: the write was not made."""


@dataclass(frozen=True)
class Token:
    """What a leader of a shared state writes under: who it is and the epoch it acquired."""

    holder: str
    epoch: int


class Database:
    """The base of every query group: a backend, the fence of a leader's writes, and the meta
    keys every group may read."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.fence_token: Token | None = None
        """Set while this process leads a shared state: every fenced write checks it."""

    @property
    def location(self) -> str:
        return self.backend.location

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> contextlib.AbstractContextManager[Tx]:
        return self.backend.transaction()

    def _fenced(self) -> contextlib.AbstractContextManager[Tx]:
        """A leader's write transaction (a cycle's commit, a claim, an attempt's result, meta).

        With a fence token, the backend first proves inside the transaction that this replica
        still holds the lease with its epoch, and raises LeaseLost, writing nothing, otherwise.
        The check takes a share lock on the lease row, so a replica taking the lease over waits
        until this transaction has committed: no write of an old epoch lands after a newer one
        began. Without a token (SQLite, and commands that hold no lease) it is a plain
        transaction.
        """
        return self.backend.transaction(fence=self.fence_token)

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return self.backend.query(sql, tuple(params))

    def _stream(self, sql: str) -> Iterator[Sequence[Any]]:
        return self.backend.stream(sql)

    # ----------------------------------------------------------------- meta

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, values: dict[str, str]) -> None:
        """Fenced like every write of a leader (a failed poll's record, a readiness check): a
        replica that lost its epoch must not overwrite what the new leader records."""
        with self._fenced() as tx:
            set_meta(tx, values)

    def all_meta(self) -> dict[str, str]:
        return {str(r["key"]): str(r["value"]) for r in self._query("SELECT key, value FROM meta")}


def set_meta(tx: Tx, values: dict[str, str]) -> None:
    """Upsert meta keys inside the caller's transaction (a cycle commits them with its
    snapshot)."""
    tx.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        list(values.items()),
    )


def dumps(data: dict[str, Any]) -> str:
    """Compact, key-sorted JSON: the same state always stores the same text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
