"""Replicas and the database under them: many processes racing for one lease, PostgreSQL
restarted under running daemons, a leader cut off from it, PgBouncer in between, and the
database refusing or going away. Real processes, a real PostgreSQL cluster, a real MLflow
server and receiver; what is asserted is who led which epoch and what was delivered, never how
long anything took."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from tests.e2e.conftest import ConfigFor
from tests.e2e.harness import Daemon, Receiver, run_watcher, wait_for, write_config
from tests.e2e.replicas import (
    NAMESPACE,
    Replica,
    attempt_log,
    delivery_status,
    lease_history,
    replica_env,
    start_pair,
    wait_leader,
)
from tests.helpers import free_port
from tests.netproxy import TcpProxy
from tests.pg import PgBouncer, PgCluster, PgDatabase
from watcher.errors import StoreError
from watcher.store import LeaseLost, PgSettings, Store

RACERS = 20

RACE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from watcher.store import PgSettings, Store

    url, password, namespace, holder, ready, start = sys.argv[1:]
    store = Store.connect(PgSettings(url=url, password=password, namespace=namespace))
    store.lease_info()  # connected: the pool holds a live connection
    Path(ready).touch()
    while not Path(start).exists():
        time.sleep(0.005)
    token = store.acquire(holder, 60.0)
    print(json.dumps(None if token is None else token.epoch))
    store.close()
    """
)


def connect(db: PgDatabase, url: str | None = None) -> Store:
    return Store.connect(PgSettings(url=url or db.url, password=db.password, namespace=NAMESPACE))


def expire(store: Store) -> None:
    with store.backend.transaction() as tx:
        tx.execute("UPDATE leader SET expires_at = clock_timestamp() - interval '1 second'")


def assert_one_holder_per_epoch(db: PgDatabase) -> None:
    terms = lease_history(db)
    epochs = [t.epoch for t in terms]
    assert epochs == sorted(set(epochs)), "each epoch once, in order"
    assert epochs == list(range(1, len(epochs) + 1)), "no epoch skipped or reused"


def test_twenty_processes_race_for_an_expired_lease_and_exactly_one_wins(
    pg_db: PgDatabase, tmp_path: Path
) -> None:
    with connect(pg_db) as store:
        assert store.acquire("old", 60.0) is not None
        expire(store)
    start = tmp_path / "start"
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACE,
                pg_db.url,
                pg_db.password,
                NAMESPACE,
                f"racer-{i}",
                str(tmp_path / f"ready-{i}"),
                str(start),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(RACERS)
    ]
    try:

        def all_ready() -> bool:
            exited = [p for p in racers if p.poll() is not None]
            assert not exited, [p.communicate() for p in exited]
            return all((tmp_path / f"ready-{i}").exists() for i in range(RACERS))

        wait_for(all_ready, 120, "every racer connected")
        start.touch()
        outcomes = [p.communicate(timeout=120) for p in racers]
    finally:
        for proc in racers:
            proc.kill()
    assert [p.returncode for p in racers] == [0] * RACERS, [err for _, err in outcomes]
    epochs = [json.loads(out) for out, _ in outcomes]
    winners = [i for i, epoch in enumerate(epochs) if epoch is not None]
    assert len(winners) == 1, epochs
    assert epochs[winners[0]] == 2
    terms = lease_history(pg_db)
    assert [(t.epoch, t.holder) for t in terms] == [(1, "old"), (2, f"racer-{winners[0]}")]
    assert terms[0].ended_how == "expired"


def test_the_epoch_survives_a_restart_and_terminated_sessions(
    pg_db: PgDatabase, pg_cluster: PgCluster
) -> None:
    with connect(pg_db) as first, connect(pg_db) as second:
        token = first.acquire("a", 60.0)
        assert token is not None
        first.fence_token = token
        pg_cluster.restart()
        pg_cluster.terminate_backends(dbname=pg_db.name)
        # The pools replace their dead connections; the lease row was committed, so it holds.
        assert wait_for_answer(lambda: first.renew(token, 60.0))
        assert second.acquire("b", 60.0) is None
        expire(second)
        taken = second.acquire("b", 60.0)
        assert taken is not None
        assert taken.epoch == token.epoch + 1
        pg_cluster.restart()
        pg_cluster.terminate_backends(dbname=pg_db.name)
        assert wait_for_answer(lambda: second.lease_info().epoch) == taken.epoch
        assert wait_for_answer(lambda: first.renew(token, 60.0)) is False
        with pytest.raises(LeaseLost):
            first.set_meta({"late": "yes"})
        assert first.get_meta("late") is None
    assert_one_holder_per_epoch(pg_db)


def wait_for_answer(call: Any) -> Any:
    """The first answer of ``call`` once the database serves again (a connection the restart
    killed may fail one call before the pool replaces it)."""
    answers: list[Any] = []

    def answered() -> bool:
        try:
            answers.append(call())
        except StoreError:
            return False
        return True

    wait_for(answered, 60, "the database to answer again")
    return answers[0]


# ------------------------------------------------------------------------------- daemons


def tracebacks(daemon: Daemon) -> list[str]:
    """What a daemon wrote that is not a JSON log line (a traceback would be)."""
    with daemon._lock:
        return [str(r["line"]) for r in daemon.lines if r.get("event") == "raw"]


def failures(daemon: Daemon) -> list[dict[str, Any]]:
    """The log lines in which a daemon says its database failed it."""
    with daemon._lock:
        return [r for r in daemon.lines if "PostgreSQL state" in json.dumps(r)]


def first_delivery(
    replicas: list[Replica], client: Any, model_name: str, receiver: Receiver, db: PgDatabase
) -> Replica:
    """A model with one version, the replicas started, a first transition delivered and its
    attempt recorded (a delivery still in flight at a fault would rightly be sent again):
    the leader."""
    client.create_registered_model(model_name)
    client.create_model_version(model_name, f"s3://bucket/{model_name}/1")
    leader, _ = start_pair(replicas)
    client.transition_model_version_stage(model_name, "1", "Staging")
    receiver.wait_for_count(1)
    wait_for(lambda: set(delivery_status(db).values()) == {"delivered"}, 60, "the attempt recorded")
    return leader


def test_a_pair_recovers_from_a_restart_that_terminated_every_session(
    replicas: list[Replica],
    client: Any,
    model_name: str,
    receiver: Receiver,
    pg_db: PgDatabase,
    pg_cluster: PgCluster,
) -> None:
    first_delivery(replicas, client, model_name, receiver, pg_db)
    before = max(max(r.epochs(), default=0) for r in replicas)

    pg_cluster.restart()
    pg_cluster.terminate_backends(dbname=pg_db.name)
    client.transition_model_version_stage(model_name, "1", "Production")
    receiver.wait_for_count(2, timeout=90)
    leader = wait_leader(replicas, after=before - 1)

    assert [d.json["to_stage"] for d in receiver.deliveries()] == ["Staging", "Production"]
    assert all(r.alive() for r in replicas)
    assert [tracebacks(r) for r in replicas] == [[], []]
    assert max(leader.epochs()) >= before, "the epoch never goes back"
    acquired = sorted(e for r in replicas for e in r.epochs())
    assert len(acquired) == len(set(acquired)), "no epoch acquired twice"
    assert_one_holder_per_epoch(pg_db)
    epochs = [a.epoch or 0 for a in attempt_log(pg_db)]
    assert epochs == sorted(epochs), "no attempt recorded under an older epoch after a newer"


# ---------------------------------------------------------------------------- bad input


def offline_config(tmp_path: Path) -> Path:
    """A config whose registry and receiver are never reached: the state fails first."""
    return write_config(
        tmp_path / "watcher.toml",
        tracking_uri="http://127.0.0.1:9",
        webhook_url="http://127.0.0.1:9/hook",
        state=tmp_path / "unused.db",
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with one line on stderr and no traceback; that line."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("mlflow-watcher: error: "), lines[0]
    return lines[0]


COMMANDS = [["run", "--once"], ["status"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_wrong_port_is_one_line(
    command: list[str], pg_db: PgDatabase, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    env = replica_env(pg_db, url=pg_cluster.url(pg_db.name, port=free_port()))
    line = one_line_error(run_watcher(*command, "-c", str(offline_config(tmp_path)), env=env))
    assert "cannot use PostgreSQL state" in line
    assert pg_db.password not in line


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_host_that_never_answers_is_one_line_after_the_connect_timeout(
    command: list[str], pg_db: PgDatabase, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    proxy = TcpProxy(pg_cluster.port)
    proxy.cut()  # connections are accepted and never answered, as a black hole's would not be
    try:
        env = replica_env(
            pg_db,
            url=pg_cluster.url(pg_db.name, port=proxy.port),
            extra={"WATCHER_STATE__CONNECT_TIMEOUT": "2s"},
        )
        done = run_watcher(*command, "-c", str(offline_config(tmp_path)), env=env)
    finally:
        proxy.close()
    assert "cannot use PostgreSQL state" in one_line_error(done)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_refused_login_is_one_line_without_the_password(
    command: list[str], pg_db: PgDatabase, tmp_path: Path
) -> None:
    env = replica_env(pg_db, extra={"PGPASSWORD": "not-the-password"})
    line = one_line_error(run_watcher(*command, "-c", str(offline_config(tmp_path)), env=env))
    assert "password authentication failed" in line
    assert "not-the-password" not in line


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_schema_written_by_a_newer_watcher_is_refused_in_one_line(
    command: list[str], pg_db: PgDatabase, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    connect(pg_db).close()
    schema = sql.Identifier(NAMESPACE)
    bump = sql.SQL("UPDATE {}.schema_version SET version = version + 1").format(schema)
    pg_cluster.psql(bump, db=pg_db.name)
    env = replica_env(pg_db)
    line = one_line_error(run_watcher(*command, "-c", str(offline_config(tmp_path)), env=env))
    assert "newer than this watcher understands" in line
    terms = sql.SQL("SELECT count(*) FROM {}.leader_history").format(schema)
    assert pg_cluster.psql(terms, db=pg_db.name) == [(0,)], "nothing written to a newer schema"


def test_a_database_that_goes_away_mid_run_is_retried_and_nothing_is_lost(
    replicas: list[Replica],
    client: Any,
    model_name: str,
    receiver: Receiver,
    pg_db: PgDatabase,
    pg_cluster: PgCluster,
) -> None:
    leader = first_delivery(replicas, client, model_name, receiver, pg_db)
    failed_before = [len(failures(r)) for r in replicas]

    pg_cluster.stop()
    try:
        client.transition_model_version_stage(model_name, "1", "Production")
        wait_for(
            lambda: any(len(failures(r)) > n for r, n in zip(replicas, failed_before, strict=True)),
            60,
            "a replica to log that the database is gone",
        )
    finally:
        pg_cluster.start()
    receiver.wait_for_count(2, timeout=90)

    assert [d.json["to_stage"] for d in receiver.deliveries()] == ["Staging", "Production"]
    assert all(r.alive() for r in replicas)
    assert [tracebacks(r) for r in replicas] == [[], []]
    said = failures(leader) + failures(replicas[1])
    assert [line for line in said if line["level"] not in ("warning", "info")] == []
    assert [line for line in said if "\n" in str(line.get("error", ""))] == []
    assert_one_holder_per_epoch(pg_db)


def test_a_pair_through_pgbouncer_elects_one_leader_and_delivers(
    config_for: ConfigFor,
    client: Any,
    model_name: str,
    receiver: Receiver,
    pg_db: PgDatabase,
    pg_bouncer: PgBouncer,
) -> None:
    """PgBouncer in transaction pooling mode hands each transaction to any server connection:
    the lease, the fence and the timeouts hold anyway."""
    config = config_for(model_name)
    env = replica_env(pg_db, url=pg_bouncer.url(pg_db.name))
    replicas = [Replica(config, env, name=n) for n in ("a", "b")]
    try:
        leader = first_delivery(replicas, client, model_name, receiver, pg_db)
        standby = next(r for r in replicas if r is not leader)
        standby.wait_logged("service.started")
        leader.wait_polls(2)
        roles = sorted(r.role() for r in replicas)
    finally:
        for replica in replicas:
            replica.ensure_stopped()
    assert roles == ["leader", "standby"]
    assert standby.epochs() == []
    assert [d.json["to_stage"] for d in receiver.deliveries()] == ["Staging"]
    assert [(t.epoch, t.ended_how) for t in lease_history(pg_db)] == [(1, None)]
    assert {a.epoch for a in attempt_log(pg_db)} == {1}
    assert [tracebacks(r) for r in replicas] == [[], []]


def test_a_leader_cut_off_from_the_database_stops_and_a_standby_takes_over(
    config_for: ConfigFor,
    client: Any,
    model_name: str,
    receiver: Receiver,
    pg_db: PgDatabase,
    pg_cluster: PgCluster,
    pg_proxy: TcpProxy,
) -> None:
    """The leader reaches PostgreSQL through a proxy that is then cut (its receiver and
    registry stay reachable): it sends nothing once its lease cannot be trusted, commits
    nothing, and the standby, which reaches the database directly, takes over."""
    config = config_for(model_name)
    # A short statement timeout: the watchdog's bound on a round trip that never returns.
    bounded = {"WATCHER_STATE__STATEMENT_TIMEOUT": "3s", "WATCHER_STATE__CONNECT_TIMEOUT": "2s"}
    proxied = pg_cluster.url(pg_db.name, port=pg_proxy.port)
    cut = Replica(config, replica_env(pg_db, url=proxied, extra=bounded))
    direct = Replica(config, replica_env(pg_db), name="direct")
    cut.name = "cut"
    try:
        assert first_delivery([cut, direct], client, model_name, receiver, pg_db) is cut
        old_epoch = max(cut.epochs())
        ids_before = set(delivery_status(pg_db))

        pg_proxy.cut()
        with cut._lock:
            seen_at_cut = len(cut.lines)
        client.transition_model_version_stage(model_name, "1", "Production")
        new_leader = wait_leader([direct], after=old_epoch)
        receiver.wait_for_count(2, timeout=60)
        cut.wait_logged("leader.lost", timeout=60)
        pg_proxy.heal()
        client.transition_model_version_stage(model_name, "1", "Archived")
        receiver.wait_for_count(3, timeout=60)
        direct.wait_polls(2)
        cut_role = cut.role()
    finally:
        pg_proxy.heal()
        cut.ensure_stopped()
        direct.ensure_stopped()

    new_epoch = max(new_leader.epochs())
    assert new_epoch > old_epoch
    assert [d.json["to_stage"] for d in receiver.deliveries()] == [
        "Staging",
        "Production",
        "Archived",
    ]
    after_cut = [a for a in attempt_log(pg_db) if a.delivery_id not in ids_before]
    assert after_cut, "what was made after the cut was delivered"
    assert {a.epoch for a in after_cut} == {new_epoch}, "only by the new leader"
    assert cut_role == "standby", "alive, and standing by"
    sent_after_cut = [
        r["event"]
        for r in cut.lines[seen_at_cut:]
        if r.get("event") in ("delivery.succeeded", "delivery.failed", "delivery.dead")
    ]
    assert sent_after_cut == [], "the cut leader attempted nothing once cut"
    assert len(direct.logged("delivery.succeeded")) == 2, "the new leader says what it sent"
    assert len(cut.logged("delivery.succeeded")) == 1, "the old one, only before the cut"
    assert [r["epoch"] for r in cut.logged("leader.lost")] == [old_epoch]
    assert cut.epochs() == [old_epoch], "it never led again while the other held the lease"
    assert [tracebacks(r) for r in (cut, direct)] == [[], []]
    assert_one_holder_per_epoch(pg_db)
