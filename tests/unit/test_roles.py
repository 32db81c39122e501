"""Visible roles: the lease as `status` shows it, the leader metrics, and the role text of
/readyz and STATUS=. The renderings on their own; the lease from a real PostgreSQL; replicas
of a running daemon are tested end to end (tests/e2e/test_replica_status.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.pg import PgDatabase
from watcher.cli.status import _leader_text, _status_lines
from watcher.config import Config, StateConfig
from watcher.errors import LockError
from watcher.leader import Leadership, LeaseTimings, Role
from watcher.logs import get_logger
from watcher.metrics import Metrics
from watcher.service import role_text
from watcher.status import lease_status, status_report
from watcher.store import LeaseInfo, PgSettings, Store

NAMESPACE = "watcher_roles"
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
UNTIL = datetime(2026, 1, 2, 3, 4, 25, tzinfo=UTC)


def _samples(metrics: Metrics) -> dict[str, float]:
    """The unlabelled samples of the leader metrics, by name."""
    text = generate_latest(metrics.registry).decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("mlflow_watcher_leader")
    }


@pytest.fixture
def shared(pg_db: PgDatabase) -> Iterator[tuple[Config, Store]]:
    """A config naming a shared state, and that state (a fresh namespace of a real database)."""
    config = Config(state=StateConfig(url=pg_db.url, namespace=NAMESPACE))
    settings = PgSettings(url=pg_db.url, password=pg_db.password, namespace=NAMESPACE)
    with Store.connect(settings) as store:
        yield config, store


def _leadership(store: Store, holder: str) -> Leadership:
    return Leadership(store, LeaseTimings.derive(1.0), get_logger(), holder=holder)


# --------------------------------------------------------------------------- status


def test_a_held_lease_shows_its_holder_epoch_and_times() -> None:
    info = LeaseInfo(holder="vm1:42:abc", epoch=3, acquired_at=AT, expires_at=UNTIL, valid=True)
    assert lease_status(info, 3, "team_a") == {
        "namespace": "team_a",
        "leader": "vm1:42:abc",
        "epoch": 3,
        "acquired_at": "2026-01-02T03:04:05Z",
        "expires_at": "2026-01-02T03:04:25Z",
        "takeovers": 3,
    }
    text = _leader_text(lease_status(info, 1, "team_a"))
    assert text == (
        "vm1:42:abc (epoch 3) since 2026-01-02T03:04:05Z, lease until 2026-01-02T03:04:25Z; "
        "1 takeover"
    )


def test_an_expired_or_released_lease_shows_no_leader_and_the_last_epoch() -> None:
    info = LeaseInfo(holder="vm1:42:abc", epoch=3, acquired_at=AT, expires_at=None, valid=False)
    lease = lease_status(info, 3, "team_a")
    assert (lease["leader"], lease["epoch"], lease["acquired_at"], lease["expires_at"]) == (
        None,
        3,
        None,
        None,
    )
    assert _leader_text(lease) == "none (no replica holds the lease, last epoch 3); 3 takeovers"
    never = lease_status(LeaseInfo(None, 0, None, None, valid=False), 0, "team_a")
    assert _leader_text(never) == "none (no replica holds the lease); 0 takeovers"


def test_status_of_a_shared_state_follows_the_lease_in_the_database(
    shared: tuple[Config, Store],
) -> None:
    config, store = shared
    fresh = status_report(config, store, 0.0)
    assert fresh["backend"] == "postgresql"
    assert fresh["lease"] == {
        "namespace": NAMESPACE,
        "leader": None,
        "epoch": 0,
        "acquired_at": None,
        "expires_at": None,
        "takeovers": 0,
    }

    token = store.acquire("vm1:42:abc", 30.0)
    assert token is not None
    held = status_report(config, store, 0.0)["lease"]
    assert (held["leader"], held["epoch"], held["takeovers"]) == ("vm1:42:abc", token.epoch, 1)
    assert held["acquired_at"] is not None
    assert held["expires_at"] is not None
    assert held["acquired_at"] < held["expires_at"]
    lines = _status_lines(status_report(config, store, 0.0))
    assert lines[1].startswith("leader:         vm1:42:abc (epoch 1) since ")

    assert store.release(token)
    after = status_report(config, store, 0.0)["lease"]
    assert (after["leader"], after["epoch"], after["takeovers"]) == (None, token.epoch, 1)
    again = store.acquire("vm2:7:def", 30.0)
    assert again is not None
    taken = status_report(config, store, 0.0)["lease"]
    assert (taken["leader"], taken["epoch"], taken["takeovers"]) == ("vm2:7:def", 2, 2)


def test_status_of_a_sqlite_state_has_no_lease(tmp_path: Path) -> None:
    config = Config(state=StateConfig(path=tmp_path / "state.db"))
    with Store.open(config.state.path) as store:
        report = status_report(config, store, 0.0)
    assert (report["backend"], report["lease"]) == ("sqlite", None)
    assert not any(line.startswith("leader:") for line in _status_lines(report))


# --------------------------------------------------------------------------- metrics


def test_a_sqlite_watcher_always_leads_at_epoch_0(tmp_path: Path) -> None:
    with Store.open(tmp_path / "state.db") as store:
        metrics = Metrics(Config(), store)
        assert _samples(metrics) == {
            "mlflow_watcher_leader": 1.0,
            "mlflow_watcher_leader_epoch": 0.0,
            "mlflow_watcher_leader_takeovers_total": 0.0,
        }


def test_leader_metrics_follow_this_replicas_leadership(shared: tuple[Config, Store]) -> None:
    config, store = shared
    ship = _leadership(store, "vm1:42:abc")
    metrics = Metrics(config, store, ship)
    assert _samples(metrics) == {
        "mlflow_watcher_leader": 0.0,
        "mlflow_watcher_leader_epoch": 0.0,
        "mlflow_watcher_leader_takeovers_total": 0.0,
    }
    ship.step()
    assert ship.role is Role.LEADER
    led = _samples(metrics)
    assert (led["mlflow_watcher_leader"], led["mlflow_watcher_leader_epoch"]) == (1.0, 1.0)
    assert led["mlflow_watcher_leader_takeovers_total"] == 1.0

    ship.release()
    other = _leadership(store, "vm2:7:def")
    other.step()
    assert other.role is Role.LEADER
    standby = _samples(metrics)
    assert standby["mlflow_watcher_leader"] == 0.0
    assert standby["mlflow_watcher_leader_epoch"] == 1.0, "the epoch it held last"
    assert _samples(Metrics(config, store, other))["mlflow_watcher_leader_epoch"] == 2.0
    other.release()
    ship.step()
    back = _samples(metrics)
    assert (back["mlflow_watcher_leader"], back["mlflow_watcher_leader_epoch"]) == (1.0, 3.0)
    assert back["mlflow_watcher_leader_takeovers_total"] == 2.0
    ship.release()


# --------------------------------------------------------------------------- role text


def test_the_role_text_names_the_epoch_of_a_leader(shared: tuple[Config, Store]) -> None:
    _, store = shared
    ship = _leadership(store, "vm1:42:abc")
    texts: list[str] = [role_text(ship)]
    ship.step()
    texts.append(role_text(ship))
    ship.release()
    texts.append(role_text(ship))
    assert texts == ["standby", "leader, epoch 1", "standby"]


# --------------------------------------------------------------------------- run --once


def test_a_run_that_leads_gives_the_lease_up_and_one_beside_a_leader_does_not_wait(
    shared: tuple[Config, Store],
) -> None:
    _, store = shared
    daemon = _leadership(store, "vm1:42:abc")
    daemon.step()
    run = _leadership(store, "vm2:7:def")
    with (
        pytest.raises(LockError, match=r"another watcher \(vm1:42:abc, epoch 1\) leads"),
        run.held(wait=False),
    ):
        pytest.fail("ran without the lease")
    stopped = threading.Event()
    stopped.set()
    with pytest.raises(LockError, match="stopped while waiting"), run.held(wait=True, stop=stopped):
        pytest.fail("ran without the lease")
    daemon.release()
    with run.held(wait=True):
        assert run.is_leader
        assert store.lease_info().holder == "vm2:7:def"
    assert not run.is_leader
    assert not store.lease_info().valid, "given up at the end of the run"
