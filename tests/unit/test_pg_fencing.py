"""A shared (PostgreSQL) state's guards around a leader's writes: the fence on writes made
outside a cycle, and the timeouts the database applies to its transactions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PgDatabase
from watcher.config.types import MIN_LEASE
from watcher.store import LeaseLost, PgSettings, Store


@pytest.fixture
def settings(pg_db: PgDatabase) -> PgSettings:
    return PgSettings(url=pg_db.url, password=pg_db.password, namespace="watcher_test")


@pytest.fixture
def pair(settings: PgSettings) -> Iterator[tuple[Store, Store]]:
    """Two replicas' stores on one namespace."""
    with Store.connect(settings) as first, Store.connect(settings) as second:
        yield first, second


def test_a_replica_that_lost_its_epoch_writes_no_meta(pair: tuple[Store, Store]) -> None:
    old, new = pair
    token = old.acquire("old", 30.0)
    assert token is not None
    old.fence_token = token
    old.set_meta({"last_poll_result": "ok"})
    assert old.release(token)
    taken = new.acquire("new", 30.0)
    assert taken is not None
    new.fence_token = taken

    with pytest.raises(LeaseLost):
        old.set_meta({"last_poll_result": "failed"})  # a failed poll of the old leader
    new.set_meta({"last_poll_at": "1"})
    assert new.get_meta("last_poll_result") == "ok"
    assert new.get_meta("last_poll_at") == "1"


def test_without_a_lease_meta_is_written_as_before(settings: PgSettings) -> None:
    """Commands that hold no lease (state copy, redeliver) write as they always did."""
    with Store.connect(settings) as store:
        store.set_meta({"k": "v"})
        assert store.get_meta("k") == "v"


def test_a_stuck_transaction_is_ended_within_the_shortest_lease(settings: PgSettings) -> None:
    """A leader paused or cut off inside a fenced transaction holds a share lock on the lease
    row; the takeover waits for that lock, so the database must end the stuck transaction no
    later than the lease would have expired (not after its own 30 s default)."""
    assert settings.idle_in_transaction_timeout <= MIN_LEASE
    with Store.connect(settings) as store, store.backend.transaction() as tx:
        shown = tx.execute("SHOW idle_in_transaction_session_timeout").fetchall()
    assert shown == [(f"{round(settings.idle_in_transaction_timeout)}s",)]
