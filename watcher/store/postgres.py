"""The PostgreSQL backend: a psycopg connection pool, one schema per namespace, transactions.

Everything here works through PgBouncer in transaction pooling mode: no session state is
relied on. Each transaction starts by setting, for itself only (``set_config(..., true)``),
the namespace's schema as its search path and its statement, lock and idle timeouts;
statements are never prepared server-side; nothing uses session advisory locks or LISTEN.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Self

from watcher.config.types import redact_uri
from watcher.errors import StoreError, first_line
from watcher.store.database import LeaseLost, Row, Token
from watcher.store.pg_guard import Guard, Watchdog
from watcher.store.pg_schema import migrate

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool


class StateUnavailable(StoreError):
    """The database could not be reached or refused a statement: a retried poll, not a crash."""


@dataclass(frozen=True)
class PgSettings:
    """How to reach and use the database (config's ``[state]`` for PostgreSQL)."""

    url: str
    namespace: str = "mlflow_watcher"
    password: str | None = None
    """From ``password_env``/``password_file``; None leaves it to libpq (PGPASSWORD,
    PGPASSFILE, ~/.pgpass)."""
    connect_timeout: float = 5.0
    statement_timeout: float = 30.0
    lock_timeout: float = 5.0
    idle_in_transaction_timeout: float = 5.0
    """No longer than the shortest lease: a leader paused or cut off inside a transaction
    holds a share lock on the lease row, which a standby's takeover waits for; the database
    ends that transaction in time for the takeover. A healthy transaction idles for
    milliseconds."""
    pool_size: int = 8


def _connect_kwargs(settings: PgSettings) -> dict[str, Any]:
    """libpq options that notice a dead peer in seconds, and no server-side prepared
    statements (PgBouncer in transaction mode would hand them to another client)."""
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "prepare_threshold": None,
        "connect_timeout": max(2, round(settings.connect_timeout)),
        "application_name": f"mlflow-watcher:{settings.namespace}@{socket.gethostname()}",
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 10_000,
    }
    if settings.password is not None:
        kwargs["password"] = settings.password
    return kwargs


_NAMESPACE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
"""What config accepts as a namespace: it names a schema, quoted but never escaped."""


def _reason(exc: BaseException) -> str:
    """What a one-line error says of psycopg's: its first line (libpq adds hints below)."""
    return first_line(str(exc)) or type(exc).__name__


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (and a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgTx:
    def __init__(self, conn: psycopg.Connection[Any], guard: Guard) -> None:
        self._conn = conn
        self._guard = guard

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        self._guard.rearm()
        return self._conn.execute(_pg_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        rows = list(rows)
        if not rows:
            return 0
        self._guard.rearm()
        with self._conn.cursor() as cursor:
            cursor.executemany(_pg_sql(sql), rows)
            return cursor.rowcount


class PostgresBackend:
    """The state in one schema (the namespace) of a PostgreSQL database, shared by replicas."""

    kind = "postgresql"
    rowid = "seq"

    def __init__(self, settings: PgSettings, pool: ConnectionPool[Any], watchdog: Watchdog) -> None:
        self.settings = settings
        self.location = f"{redact_uri(settings.url)} (namespace {settings.namespace})"
        self._pool = pool
        self._watchdog = watchdog
        self._prelude_params = (
            f'"{settings.namespace}"',
            f"{round(settings.statement_timeout * 1000)}ms",
            f"{round(settings.lock_timeout * 1000)}ms",
            f"{round(settings.idle_in_transaction_timeout * 1000)}ms",
        )
        settings_sql = (
            "SELECT set_config('search_path', %s, true),"
            " set_config('statement_timeout', %s, true),"
            " set_config('lock_timeout', %s, true),"
            " set_config('idle_in_transaction_session_timeout', %s, true)"
        )
        self._prelude = settings_sql + ", TRUE"
        # The fence names its table with the schema: the search path set in the same statement
        # applies only to the statements after it. FOR SHARE makes a takeover wait until this
        # transaction ends.
        # The namespace is a checked identifier (connect()), never user data in the query.
        self._fenced_prelude = (
            settings_sql + f', EXISTS (SELECT 1 FROM "{settings.namespace}".leader'  # noqa: S608
            " WHERE holder = %s AND epoch = %s AND expires_at > clock_timestamp() FOR SHARE)"
        )

    @classmethod
    def connect(cls, settings: PgSettings) -> Self:
        """Connect, create the namespace's schema and migrate it; StoreError (one line, no
        password) when the database cannot be used."""
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise StoreError(
                "a postgresql:// state needs psycopg: "
                "pip install 'mlflow-registry-watcher[postgres]'"
            ) from None
        if not _NAMESPACE.fullmatch(settings.namespace):
            raise StoreError(f"namespace {settings.namespace!r} is not a lower-case identifier")
        kwargs = _connect_kwargs(settings)
        where = redact_uri(settings.url)
        try:
            with psycopg.connect(settings.url, **kwargs) as conn:
                migrate(conn, settings.namespace, where)
        except psycopg.Error as exc:
            raise StoreError(f"cannot use PostgreSQL state {where}: {_reason(exc)}") from None
        pool: ConnectionPool[Any] = ConnectionPool(
            settings.url,
            kwargs=kwargs,
            min_size=1,
            max_size=settings.pool_size,
            timeout=settings.connect_timeout,
            name=f"watcher-{os.getpid()}",
            open=True,
        )
        watchdog = Watchdog(
            settings.statement_timeout + settings.connect_timeout, f"watcher-pg-{os.getpid()}"
        )
        # pool.check() (after a broken connection) tries each idle one: bounded like the rest.
        pool.check_connection = watchdog.checked(ConnectionPool.check_connection)  # type: ignore[method-assign,assignment]
        return cls(settings, pool, watchdog)

    def close(self) -> None:
        self._pool.close()
        self._watchdog.close()

    @contextlib.contextmanager
    def _connection(
        self, fence: Token | None = None
    ) -> Iterator[tuple[psycopg.Connection[Any], Guard]]:
        """A pooled connection inside a transaction that knows its schema and timeouts, and,
        with ``fence``, has proved that this replica still holds the lease with its epoch
        (LeaseLost otherwise): one round trip for all of it. Each round trip is bounded by the
        watchdog."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._begin(fence) as (conn, guard):
                yield conn, guard
        except (psycopg.OperationalError, psycopg.errors.QueryCanceled, PoolTimeout) as exc:
            raise StateUnavailable(
                f"PostgreSQL state {redact_uri(self.settings.url)}: {_reason(exc)}"
            ) from None

    @contextlib.contextmanager
    def _begin(self, fence: Token | None) -> Iterator[tuple[psycopg.Connection[Any], Guard]]:
        """BEGIN and the prelude, on a second pooled connection if the first was broken (a
        PostgreSQL restart or a killed session leaves stale ones in the pool, which is not
        checked on every checkout: that would cost a round trip a transaction)."""
        import psycopg

        params: tuple[Any, ...] = self._prelude_params
        if fence is not None:
            params = (*params, fence.holder, fence.epoch)
        for attempt in (1, 2):
            stack = contextlib.ExitStack()
            try:
                conn = stack.enter_context(self._pool.connection())
                guard = stack.enter_context(self._watchdog.guard(conn))
                stack.enter_context(conn.transaction())
                row = conn.execute(self._fenced_prelude if fence else self._prelude, params)
                held = bool(row.fetchone()[-1])
            except psycopg.OperationalError:
                broken = "conn" in locals() and conn.broken
                with contextlib.suppress(psycopg.Error):
                    stack.__exit__(*sys.exc_info())
                if attempt == 2 or not broken:
                    raise
                # The others were likely cut by the same restart: check every idle one now.
                self._pool.check()
                continue
            with stack:
                if not held:
                    assert fence is not None
                    raise LeaseLost(f"the leader lease of epoch {fence.epoch} is no longer held")
                yield conn, guard
            return

    @contextlib.contextmanager
    def transaction(self, fence: Token | None = None) -> Iterator[_PgTx]:
        with self._connection(fence) as (conn, guard):
            yield _PgTx(conn, guard)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._connection() as (conn, guard):
            guard.rearm()
            cursor = conn.execute(_pg_sql(sql), tuple(params))
            if cursor.description is None:
                return []
            names = [d.name for d in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]

    def stream(self, sql: str) -> Iterator[Sequence[Any]]:
        """A server-side cursor inside the transaction (fine under PgBouncer's transaction
        mode), fetched a few thousand rows at a time."""
        with self._connection() as (conn, guard), conn.cursor(name="watcher_stream") as cursor:
            cursor.itersize = 2000
            guard.rearm()
            cursor.execute(_pg_sql(sql))
            rows = iter(cursor)
            try:
                while True:
                    guard.rearm()
                    row = next(rows, None)
                    if row is None:
                        return
                    guard.pause()  # the caller's time with a row is not the database's
                    yield row
            finally:
                guard.rearm()  # closing the cursor and committing are round trips too
