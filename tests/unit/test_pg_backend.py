"""The PostgreSQL backend's connections: stale ones are replaced, a database that is gone is one
StoreError line, and nothing relies on a session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PgCluster, PgDatabase
from watcher.store import PgSettings, StateUnavailable, Store


@pytest.fixture
def store(pg_db: PgDatabase) -> Iterator[Store]:
    settings = PgSettings(url=pg_db.url, password=pg_db.password, namespace="backend_test")
    with Store.connect(settings) as opened:
        yield opened


def test_a_session_killed_under_the_pool_is_replaced_without_an_error(
    store: Store, pg_cluster: PgCluster, pg_db: PgDatabase
) -> None:
    store.set_meta({"k": "1"})
    assert pg_cluster.terminate_backends(dbname=pg_db.name) >= 1
    store.set_meta({"k": "2"})
    assert store.get_meta("k") == "2"


def test_a_database_that_is_gone_is_one_line_and_the_next_call_works_again(
    store: Store, pg_cluster: PgCluster, pg_db: PgDatabase
) -> None:
    store.set_meta({"k": "1"})
    pg_cluster.stop()
    try:
        with pytest.raises(StateUnavailable) as caught:
            store.set_meta({"k": "2"})
        assert "\n" not in str(caught.value)
        assert pg_db.password not in str(caught.value)
    finally:
        pg_cluster.start()
    store.set_meta({"k": "3"})
    assert store.get_meta("k") == "3"


def test_a_namespace_that_is_not_an_identifier_is_refused(pg_db: PgDatabase) -> None:
    settings = PgSettings(url=pg_db.url, password=pg_db.password, namespace='x"; DROP TABLE y')
    with pytest.raises(Exception, match="not a lower-case identifier"):
        Store.connect(settings)
