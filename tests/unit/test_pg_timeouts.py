"""The timeouts a PostgreSQL state sets on its own transactions, as the database applies them."""

from __future__ import annotations

from tests.pg import PgDatabase
from watcher.leader import MIN_LEASE
from watcher.store import PgSettings, Store


def test_a_stuck_transaction_is_ended_within_the_shortest_lease(pg_db: PgDatabase) -> None:
    """A leader paused or cut off inside a fenced transaction holds a share lock on the lease
    row; the takeover waits for that lock, so the database must end the stuck transaction no
    later than the lease would have expired (not after its own 30 s default)."""
    settings = PgSettings(url=pg_db.url, password=pg_db.password, namespace="watcher_test")
    assert settings.idle_in_transaction_timeout <= MIN_LEASE
    with Store.connect(settings) as store, store.backend.transaction() as tx:
        shown = tx.execute("SHOW idle_in_transaction_session_timeout").fetchall()
    assert shown == [(f"{round(settings.idle_in_transaction_timeout)}s",)]
