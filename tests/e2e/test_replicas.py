"""Replicas on one PostgreSQL state, against a real MLflow server, a real receiver and a real
PostgreSQL cluster: one leader at a time, failover, handover."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import ConfigFor
from tests.e2e.harness import Receiver
from tests.e2e.replicas import (
    DELIVERY_ID,
    Replica,
    lease_history,
    replica_env,
    wait_leader,
)
from tests.pg import PgDatabase


@pytest.fixture
def replicas(config_for: ConfigFor, pg_db: PgDatabase, model_name: str) -> Iterator[list[Replica]]:
    """Two replicas (not started) of a watcher of ``model_name`` polling every second."""
    config = config_for(model_name)
    group = [Replica(config, replica_env(pg_db), name=n) for n in ("a", "b")]
    yield group
    for replica in group:
        replica.ensure_stopped()


def transition(client: Any, model_name: str, version: str, stage: str) -> None:
    client.transition_model_version_stage(model_name, version, stage)


def test_a_standby_takes_over_from_a_killed_leader_with_a_higher_epoch(
    replicas: list[Replica],
    client: Any,
    model_name: str,
    receiver: Receiver,
    pg_db: PgDatabase,
) -> None:
    client.create_registered_model(model_name)
    client.create_model_version(model_name, f"s3://bucket/{model_name}/1")
    first, second = replicas
    first.start()
    leader = wait_leader(replicas)
    second.start()
    second.wait_started()
    leader.wait_polls(1)
    transition(client, model_name, "1", "Staging")
    receiver.wait_for_count(1)

    leader.kill9()
    epoch = max(leader.epochs())
    transition(client, model_name, "1", "Production")
    new_leader = wait_leader(replicas, after=epoch)
    receiver.wait_for_count(2)

    assert new_leader is second
    assert min(new_leader.epochs()) > epoch
    stages = [d.json["to_stage"] for d in receiver.deliveries()]
    assert stages == ["Staging", "Production"]
    ids = [d.header(DELIVERY_ID) for d in receiver.deliveries()]
    assert len(set(ids)) == 2, "nothing was in flight at the kill: nothing repeats"
    terms = lease_history(pg_db)
    assert [t.epoch for t in terms] == sorted({t.epoch for t in terms})
    assert terms[-1].holder != terms[0].holder


def test_sigterm_hands_the_lease_over_at_once(
    replicas: list[Replica], client: Any, model_name: str, receiver: Receiver, pg_db: PgDatabase
) -> None:
    client.create_registered_model(model_name)
    client.create_model_version(model_name, f"s3://bucket/{model_name}/1")
    first, second = replicas
    first.start()
    leader = wait_leader(replicas)
    second.start()
    second.wait_started()
    epoch = max(leader.epochs())

    assert leader.terminate() == 0
    new_leader = wait_leader(replicas, after=epoch, timeout=10)
    released = [r for r in leader.leader_lines() if r["event"] == "leader.released"]
    assert released, "the leader says it gave the lease up"
    assert released[-1]["epoch"] == epoch
    assert new_leader is second
    assert [t.ended_how for t in lease_history(pg_db)][:-1] == ["released"]
    transition(client, model_name, "1", "Staging")
    receiver.wait_for_count(1)
    assert receiver.deliveries()[0].json["to_stage"] == "Staging"
