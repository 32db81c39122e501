"""Several watchers on one PostgreSQL database: each namespace is a schema of its own, so their
snapshots, outboxes and leases never mix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PgCluster, PgDatabase
from tests.store_helpers import deliveries_for, event, queue
from watcher.errors import StoreError
from watcher.store import PgSettings, Store


@pytest.fixture
def two(pg_db: PgDatabase) -> Iterator[tuple[Store, Store]]:
    def connect(namespace: str) -> Store:
        return Store.connect(
            PgSettings(url=pg_db.url, password=pg_db.password, namespace=namespace)
        )

    with connect("team_a") as a, connect("team_b") as b:
        yield a, b


def test_each_namespace_has_its_own_outbox_and_meta(two: tuple[Store, Store]) -> None:
    a, b = two
    events = [event("fraud", "1")]
    assert queue(a, events, deliveries_for(events, "deploy")) == 1
    a.set_meta({"registry": "http://a"})
    assert b.list_deliveries() == []
    assert b.get_meta("registry") is None
    assert queue(b, events, deliveries_for(events, "deploy")) == 1, "the same ids, another state"
    assert [r.delivery_id for r in a.list_deliveries()] == [
        r.delivery_id for r in b.list_deliveries()
    ]


def test_each_namespace_has_its_own_lease_and_epochs(two: tuple[Store, Store]) -> None:
    a, b = two
    token_a = a.acquire("replica-a", 30)
    token_b = b.acquire("replica-b", 30)
    assert token_a is not None
    assert token_b is not None, "a lease held in team_a does not hold team_b"
    assert (token_a.epoch, token_b.epoch) == (1, 1)
    assert a.acquire("other", 30) is None
    assert a.lease_info().holder == "replica-a"
    assert b.lease_info().holder == "replica-b"


def test_a_schema_made_by_a_dba_needs_no_create_privilege_on_the_database(
    pg_cluster: PgCluster, pg_db: PgDatabase
) -> None:
    with pg_cluster.admin(pg_db.name) as admin:
        admin.execute("CREATE SCHEMA made_by_dba AUTHORIZATION watcher")
        admin.execute(f'REVOKE CREATE ON DATABASE "{pg_db.name}" FROM watcher, PUBLIC')
    settings = PgSettings(url=pg_db.url, password=pg_db.password, namespace="made_by_dba")
    with Store.connect(settings) as store:
        assert store.acquire("replica", 30) is not None
    with pytest.raises(StoreError, match="permission denied"):
        Store.connect(PgSettings(url=pg_db.url, password=pg_db.password, namespace="other"))
