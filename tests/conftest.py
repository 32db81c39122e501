"""What every suite shares: hypothesis profiles, the receiver and model-name fixtures of the
end-to-end tests and the version matrix, and a real PostgreSQL (tests/pg.py) for the tests that
ask for one."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from tests.e2e.harness import Receiver
from tests.netproxy import TcpProxy
from tests.pg import PgBouncer, PgCluster, PgDatabase
from watcher.store import PgSettings, Store

S = TypeVar("S", bound=Store)

# The profiles, not the tests, decide how many examples a property test tries (no test sets
# max_examples itself): "dev", the default, keeps a local `make unit` quick; "ci" (chosen when
# CI is set, as .ci/run's environment has it) tries 300 a test, as many as the most thorough
# test tried when each set its own count, and a failure prints the blob that reproduces it.
# HYPOTHESIS_PROFILE=... picks one by hand.
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP receiver on a free port, answering 200 until told otherwise."""
    recv = Receiver()
    recv.start()
    yield recv
    recv.stop()


@pytest.fixture
def model_name() -> str:
    """A model name no other test (or xdist worker) uses on a shared server."""
    return f"model-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A private PostgreSQL cluster for the session (for each xdist worker: its own), made and
    started only when a test asks for it, stopped and removed at the end whatever happened."""
    with PgCluster() as cluster:
        yield cluster


@pytest.fixture
def pg_db(pg_cluster: PgCluster) -> Iterator[PgDatabase]:
    """A fresh database of this test's own on the session's cluster, owned by `watcher`; dropped
    afterwards (whatever is still connected to it is terminated). The cluster is started again
    first if an earlier test stopped it."""
    if not pg_cluster.running:
        pg_cluster.stop()  # forgets a server that died
        pg_cluster.start()
    db = pg_cluster.create_database()
    yield db
    with contextlib.suppress(psycopg.Error):
        pg_cluster.drop_database(db.name)


@pytest.fixture
def pg_url(pg_db: PgDatabase) -> str:
    """pg_db's URL over TCP, with the password in it."""
    return pg_db.url_with_password


@pytest.fixture(scope="session")
def pg_bouncer(pg_cluster: PgCluster) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode in front of the session's cluster."""
    with PgBouncer(pg_cluster) as bouncer:
        yield bouncer


@pytest.fixture
def pg_proxy(pg_cluster: PgCluster) -> Iterator[TcpProxy]:
    """A loopback TCP proxy to the cluster's port that the test can cut and heal."""
    proxy = TcpProxy(pg_cluster.port)
    yield proxy
    proxy.close()


def open_store(kind: str, request: pytest.FixtureRequest, cls: type[S]) -> S:
    """A fresh, empty state of ``kind``: a SQLite file in the test's tmp_path, or a namespace
    in a fresh database of the session's PostgreSQL cluster."""
    if kind == "sqlite":
        tmp_path: Path = request.getfixturevalue("tmp_path")
        return cls.open(tmp_path / "state" / "state.db")
    db: PgDatabase = request.getfixturevalue("pg_db")
    url = db.url
    if kind == "pgbouncer":
        bouncer: PgBouncer = request.getfixturevalue("pg_bouncer")
        url = bouncer.url(db.name)
    return cls.connect(PgSettings(url=url, password=db.password, namespace="watcher_test"))


BACKENDS = ["sqlite", "postgresql", "pgbouncer"]
"""The state backends: every store test runs on SQLite, on PostgreSQL, and on PostgreSQL
through PgBouncer in transaction pooling mode (the common managed set-up)."""


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A fresh state on each backend in turn."""
    with open_store(request.param, request, Store) as store:
        yield store
