"""What replicas on one PostgreSQL state show of their roles, against a real MLflow server, a
real receiver and a real PostgreSQL cluster: `status` (the lease as the database records it),
/metrics and /readyz of the leader and of a standby, and `run --once` beside a daemon that
leads (exit 4, or waiting with --wait-for-lock) or alone (it leads, then gives the lease up)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ConfigFor
from tests.e2e.harness import Receiver, run_watcher, wait_for
from tests.e2e.replicas import (
    NAMESPACE,
    Replica,
    lease_history,
    replica_env,
    start_pair,
    wait_leader,
)
from tests.e2e.test_ops import NotifySocket, metrics_of, sample
from tests.helpers import free_port
from tests.pg import PgDatabase

WATCHER = (sys.executable, "-m", "watcher")


class Served(Replica):
    """A replica with its own health server and its own systemd notify socket, so each one is
    probed, scraped and watched on its own."""

    def __init__(self, config: Path, db: PgDatabase, name: str) -> None:
        self.port = free_port()
        self.notify = NotifySocket(config.parent / f"notify-{name}.sock")
        extra = {
            "WATCHER_SERVER__LISTEN": f"127.0.0.1:{self.port}",
            "NOTIFY_SOCKET": str(self.notify.path),
        }
        super().__init__(config, replica_env(db, extra=extra), name=name)

    def statuses(self) -> list[str]:
        """Its STATUS= lines to systemd so far, without the prefix."""
        return [line[7:] for line in self.notify.lines() if line.startswith("STATUS=")]

    def get(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def leader_metrics(self) -> tuple[float, float, float]:
        """(leader gauge, epoch, takeovers) from this replica's /metrics."""
        m = metrics_of(self.get("/metrics").text)
        return (
            sample(m, "mlflow_watcher_leader"),
            sample(m, "mlflow_watcher_leader_epoch"),
            sample(m, "mlflow_watcher_leader_takeovers_total"),
        )

    def holder(self) -> str:
        """The name this replica takes the lease under, from its last leader.acquired line."""
        return str(self.logged("leader.acquired")[-1]["holder"])


@pytest.fixture
def served(config_for: ConfigFor, pg_db: PgDatabase, model_name: str) -> Iterator[list[Served]]:
    """Two replicas (not started) of a watcher of ``model_name``, each with a health server."""
    config = config_for(model_name)
    group = [Served(config, pg_db, name) for name in ("a", "b")]
    yield group
    for replica in group:
        replica.ensure_stopped()
        replica.notify.close()


def status_of(config: Path, db: PgDatabase, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_watcher("status", *args, "-c", str(config), env=replica_env(db))
    assert result.returncode == 0, result.stderr
    return result


def test_status_metrics_and_readiness_show_each_replicas_role(
    served: list[Served], client: Any, model_name: str, pg_db: PgDatabase
) -> None:
    client.create_registered_model(model_name)
    client.create_model_version(model_name, f"s3://bucket/{model_name}/1")
    first, second = start_pair(served)
    epoch = max(first.epochs())

    lease = json.loads(status_of(first.config, pg_db, "--json").stdout)
    assert lease["backend"] == "postgresql"
    assert NAMESPACE in lease["state"]
    lease = lease["lease"]
    assert (lease["namespace"], lease["leader"], lease["epoch"]) == (
        NAMESPACE,
        first.holder(),
        epoch,
    )
    assert lease["takeovers"] == len(lease_history(pg_db)) == 1
    assert lease["acquired_at"] is not None
    assert lease["expires_at"] is not None
    human = status_of(first.config, pg_db).stdout
    assert f"leader:         {first.holder()} (epoch {epoch}) since " in human

    assert first.leader_metrics() == (1.0, epoch, 1.0)
    assert second.leader_metrics() == (0.0, 0.0, 0.0)
    wait_for(lambda: first.get("/readyz").status_code == 200, 20, "the leader ready")
    assert f"ok (leader, epoch {epoch})" in first.get("/readyz").text
    standby = second.get("/readyz")
    assert standby.status_code == 200, standby.text
    assert f"standby; leader: {first.holder()} (epoch {epoch})" in standby.text
    assert [r.get("/healthz").status_code for r in served] == [200, 200]
    led = f"leader, epoch {epoch}; last poll ok at "
    wait_for(lambda: any(s.startswith(led) for s in first.statuses()), 20, "the leader's STATUS=")
    wait_for(
        lambda: any(s.startswith("standby, since ") for s in second.statuses()),
        20,
        "the standby's STATUS=",
    )
    assert not any(s.startswith("leader") for s in second.statuses())

    assert first.terminate() == 0
    assert wait_leader(served, after=epoch) is second
    new_epoch = max(second.epochs())
    assert second.leader_metrics() == (1.0, new_epoch, 1.0)
    wait_for(lambda: second.get("/readyz").status_code == 200, 20, "the new leader ready")
    assert f"ok (leader, epoch {new_epoch})" in second.get("/readyz").text
    after = json.loads(status_of(first.config, pg_db, "--json").stdout)["lease"]
    assert (after["leader"], after["epoch"], after["takeovers"]) == (second.holder(), new_epoch, 2)


def once(config: Path, db: PgDatabase, *args: str) -> subprocess.CompletedProcess[str]:
    return run_watcher("run", "--once", *args, "-c", str(config), env=replica_env(db))


def test_run_once_beside_a_leading_daemon_exits_4_or_waits_for_the_lease(
    served: list[Served],
    client: Any,
    model_name: str,
    receiver: Receiver,
    pg_db: PgDatabase,
    tmp_path: Path,
) -> None:
    client.create_registered_model(model_name)
    client.create_model_version(model_name, f"s3://bucket/{model_name}/1")
    daemon = served[0]
    daemon.start()
    wait_leader([daemon])
    daemon.wait_polls(1)
    epoch = max(daemon.epochs())

    second = once(daemon.config, pg_db)
    assert second.returncode == 4, second.stderr
    [line] = second.stderr.strip().splitlines()
    assert f"another watcher ({daemon.holder()}, epoch {epoch}) leads the shared state" in line
    assert "--wait-for-lock" in line

    log = tmp_path / "waiting.log"
    with log.open("w") as stderr:
        waiting = subprocess.Popen(
            [*WATCHER, "run", "--once", "--wait-for-lock", "--verbose", "-c", str(daemon.config)],
            env=replica_env(pg_db),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    try:
        wait_for(lambda: "leader.waiting" in log.read_text(), 60, "--wait-for-lock to wait")
        assert waiting.poll() is None, "--wait-for-lock waits while the daemon leads"
        client.transition_model_version_stage(model_name, "1", "Staging")
        assert daemon.terminate() == 0
        assert waiting.wait(timeout=60) == 0, log.read_text()
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait(timeout=10)
    terms = lease_history(pg_db)
    assert [t.ended_how for t in terms] == ["released", "released"]
    assert terms[0].epoch == epoch < terms[1].epoch
    waited = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    acquired = [r for r in waited if r.get("event") == "leader.acquired"]
    assert [r["epoch"] for r in acquired] == [terms[1].epoch]
    assert [r["holder"] for r in waited if r.get("event") == "leader.waiting"] == [daemon.holder()]
    assert [d.json["to_stage"] for d in receiver.deliveries()] == ["Staging"]


def test_run_once_alone_leads_and_gives_the_lease_up(
    config_for: ConfigFor, client: Any, model_name: str, receiver: Receiver, pg_db: PgDatabase
) -> None:
    client.create_registered_model(model_name)
    client.create_model_version(model_name, f"s3://bucket/{model_name}/1")
    config = config_for(model_name)
    baseline = once(config, pg_db)
    assert baseline.returncode == 0, baseline.stderr
    client.transition_model_version_stage(model_name, "1", "Staging")
    delivered = once(config, pg_db)
    assert delivered.returncode == 0, delivered.stderr

    assert [d.json["to_stage"] for d in receiver.deliveries()] == ["Staging"]
    terms = lease_history(pg_db)
    assert [(t.epoch, t.ended_how) for t in terms] == [(1, "released"), (2, "released")]
    lease = json.loads(status_of(config, pg_db, "--json").stdout)["lease"]
    assert (lease["leader"], lease["epoch"], lease["takeovers"]) == (None, 2, 2)
