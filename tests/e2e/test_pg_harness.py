"""The PostgreSQL harness itself (tests/pg.py): the cluster, its roles and addresses, a restart,
killed sessions, the proxy that cuts the line, and PgBouncer. The replica tests of the store and
the service build on every one of these behaving as described."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import pg
from tests.netproxy import TcpProxy
from tests.pg import PgBouncer, PgCluster, PgDatabase

pytestmark = pytest.mark.e2e


def one(url: str, query: str = "select 1", **kwargs: object) -> Any:
    with psycopg.connect(url, connect_timeout=5, **kwargs) as conn:  # type: ignore[arg-type]
        row = conn.execute(query).fetchone()
        assert row is not None
        return row[0]


def test_the_login_role_reaches_its_own_database_over_the_socket_and_tcp(
    pg_db: PgDatabase,
) -> None:
    assert one(pg_db.socket_url, "select current_user") == "watcher"
    assert one(pg_db.url_with_password, "select current_database()") == pg_db.name
    assert one(pg_db.url, "select 1", password=pg_db.password) == 1
    # The database is the role's own: it can create its schema there.
    with psycopg.connect(pg_db.url_with_password) as conn:
        conn.execute("create table t (id int primary key)")
        conn.execute("insert into t values (1)")
    assert one(pg_db.socket_url, "select count(*) from t") == 1


def test_the_password_needs_escaping_and_is_never_in_a_repr(
    pg_cluster: PgCluster, pg_db: PgDatabase
) -> None:
    assert any(c in pg_db.password for c in "@:/%")
    assert pg_db.password not in pg_db.url_with_password  # percent-encoded
    assert pg_db.password not in repr(pg_db)
    assert pg_db.password not in repr(pg_cluster)


def test_the_password_is_passed_by_the_environment(
    pg_db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in pg_db.env.items():
        monkeypatch.setenv(name, value)
    assert one(pg_db.url) == 1


def test_the_password_is_read_from_a_libpq_password_file(
    pg_db: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(pg_db.write_passfile(tmp_path / "pgpass")))
    assert one(pg_db.url) == 1


def test_a_wrong_or_missing_password_is_refused_over_tcp(
    pg_db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        one(pg_db.url, password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password"):
        one(pg_db.url)


def test_a_restart_keeps_the_data_and_the_address(pg_cluster: PgCluster, pg_db: PgDatabase) -> None:
    with psycopg.connect(pg_db.url_with_password) as conn:
        conn.execute("create table kept (v text)")
        conn.execute("insert into kept values ('before')")
    survivor = psycopg.connect(pg_db.url_with_password, autocommit=True)
    pg_cluster.restart()
    # A connection from before the restart is gone...
    with pytest.raises(psycopg.OperationalError):
        survivor.execute("select 1")
    survivor.close()
    # ...and a new one on the same URL finds the data.
    assert one(pg_db.url_with_password, "select v from kept") == "before"


def test_terminate_backends_kills_the_matching_sessions_only(
    pg_cluster: PgCluster, pg_db: PgDatabase
) -> None:
    victim = psycopg.connect(pg_db.url_with_password, autocommit=True, application_name="victim")
    bystander = psycopg.connect(pg_db.url_with_password, autocommit=True, application_name="other")
    try:
        assert pg_cluster.terminate_backends(application_name="victim") == 1
        with pytest.raises(psycopg.OperationalError):
            victim.execute("select 1")
        assert bystander.execute("select 1").fetchone() == (1,)
        assert pg_cluster.terminate_backends("watcher", dbname=pg_db.name) == 1
        with pytest.raises(psycopg.OperationalError):
            bystander.execute("select 1")
    finally:
        victim.close()
        bystander.close()


def test_create_database_gives_each_caller_an_empty_database(pg_cluster: PgCluster) -> None:
    first, second = pg_cluster.create_database(), pg_cluster.create_database()
    assert first.name != second.name
    with psycopg.connect(first.url_with_password) as conn:
        conn.execute("create table only_here (id int)")
    query = "select count(*) from pg_tables where tablename = 'only_here'"
    assert one(second.url_with_password, query) == 0
    pg_cluster.drop_database(first.name)
    assert (
        pg_cluster.psql("select 1 from pg_database where datname = %s", params=[first.name]) == []
    )


def test_psql_runs_through_psycopg_and_through_the_program(pg_cluster: PgCluster) -> None:
    assert pg_cluster.psql("select 40 + 2") == [(42,)]
    assert pg_cluster.psql_cli("select 40 + 2").strip() == "42"
    assert pg_cluster.psql("set search_path = public") == []


def through(proxy: TcpProxy, cluster: PgCluster, db: PgDatabase) -> str:
    return cluster.url(db.name, password=True, port=proxy.port)


def test_the_proxy_forwards_and_a_cut_silences_the_line_until_healed(
    pg_cluster: PgCluster, pg_db: PgDatabase, pg_proxy: TcpProxy
) -> None:
    url = through(pg_proxy, pg_cluster, pg_db)
    conn = psycopg.connect(url, autocommit=True)
    assert conn.execute("select 1").fetchone() == (1,)

    pg_proxy.cut()
    # A new connection is neither refused nor answered: libpq's connect_timeout ends it.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    # The open connection is not closed either: a query on it never completes.
    done = threading.Event()

    def query() -> None:
        try:
            conn.execute("select 1")
            done.set()
        except psycopg.Error:
            pass

    worker = threading.Thread(target=query, daemon=True)
    worker.start()
    worker.join(timeout=1.5)
    assert worker.is_alive()
    assert not done.is_set()

    pg_proxy.heal()
    assert one(url) == 1
    # The silenced connection stays unusable (its stream lost bytes): close() must not hang.
    conn.close()


def test_a_held_cut_delivers_what_was_queued_after_heal(
    pg_cluster: PgCluster, pg_db: PgDatabase, pg_proxy: TcpProxy
) -> None:
    conn = psycopg.connect(through(pg_proxy, pg_cluster, pg_db), autocommit=True)
    pg_proxy.cut(discard=False)
    result: list[object] = []
    worker = threading.Thread(
        target=lambda: result.append(conn.execute("select 7").fetchone()), daemon=True
    )
    worker.start()
    worker.join(timeout=1)
    assert worker.is_alive()
    assert result == []
    pg_proxy.heal()
    worker.join(timeout=10)
    assert result == [(7,)]
    conn.close()


def test_pgbouncer_in_transaction_mode_answers_the_login_role(
    pg_bouncer: PgBouncer, pg_db: PgDatabase
) -> None:
    url = pg_bouncer.url(pg_db.name, password=True)
    # PgBouncer 1.18 pools by transaction and keeps no prepared statement across them:
    # psycopg's automatic preparing must be off behind it.
    with psycopg.connect(url, prepare_threshold=None, autocommit=True) as conn:
        backends = {conn.execute("select pg_backend_pid()").fetchone() for _ in range(10)}
        assert conn.execute("select current_user").fetchone() == ("watcher",)
    assert backends  # every statement answered, on whichever server connection
    with pytest.raises(psycopg.OperationalError):
        one(pg_bouncer.url(pg_db.name), password="wrong")


def test_the_cluster_runs_as_the_server_user_with_the_tests_settings(
    pg_cluster: PgCluster,
) -> None:
    user = pg_cluster.runner.user
    assert pg_cluster.datadir.stat().st_uid == (user.pw_uid if user else os.getuid())
    superuser = pg_cluster.url(via="socket", user="postgres")
    assert one(superuser, "select current_setting('fsync')") == "off"
    assert one(superuser, "select current_setting('max_connections')::int") >= 200


def test_a_stopped_cluster_refuses_connections_until_started_again(
    pg_cluster: PgCluster, pg_db: PgDatabase
) -> None:
    pg_cluster.stop()
    assert not pg_cluster.running
    with pytest.raises(psycopg.OperationalError):
        one(pg_db.url_with_password)
    pg_cluster.start()
    assert one(pg_db.url_with_password) == 1


def test_a_machine_without_postgresql_fails_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg, "PG_BINARIES", tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r"`postgresql` package"):
        pg.server_bindir()
