"""Moving an install from its SQLite state to PostgreSQL with `state copy`, against a real
MLflow server, a real receiver and a real PostgreSQL cluster: no new baseline, the queued
deliveries go out under their own ids, and the watcher goes on detecting."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import ConfigFor, create_versions
from tests.e2e.harness import (
    Daemon,
    Receiver,
    ReceiverBehaviour,
    run_watcher,
    wait_for,
    watcher_env,
)
from tests.e2e.replicas import (
    DELIVERY_ID,
    NAMESPACE,
    Replica,
    delivery_status,
    replica_env,
    wait_leader,
)
from tests.pg import PgDatabase
from watcher.store import PENDING, Store


def test_a_copied_state_goes_on_where_the_sqlite_watcher_stopped(
    config_for: ConfigFor,
    client: Any,
    model_name: str,
    receiver: Receiver,
    pg_db: PgDatabase,
) -> None:
    create_versions(client, model_name, 1)
    config = config_for(model_name)
    receiver.behaviour = ReceiverBehaviour(status=503)
    with Daemon(config) as sqlite_watcher:
        sqlite_watcher.wait_polls(1, timeout=60)
        client.transition_model_version_stage(model_name, "1", "Staging")
        receiver.wait_for_count(1, timeout=60)
        assert sqlite_watcher.terminate() == 0
    assert sqlite_watcher.logged("poll.baseline"), "the SQLite watcher made the baseline"
    with Store.open(config.parent / "state.db", lock=False) as state:
        queued = [r.delivery_id for r in state.list_deliveries(status=PENDING)]
    tried = {d.header(DELIVERY_ID) for d in receiver.deliveries()}
    assert len(queued) == 1
    assert tried == set(queued)

    copied = run_watcher(
        "state",
        "copy",
        "-c",
        str(config),
        "--to",
        pg_db.url,
        "--namespace",
        NAMESPACE,
        env=watcher_env(pg_db.env),
    )
    assert copied.returncode == 0, copied.stderr
    assert pg_db.password not in copied.stdout + copied.stderr

    receiver.behaviour = ReceiverBehaviour()
    replica = Replica(config, replica_env(pg_db), name="pg")
    try:
        replica.start()
        wait_leader([replica])
        wait_for_accepted(receiver, 1)
        replica.wait_polls(1, timeout=60)
        client.transition_model_version_stage(model_name, "1", "Production")
        wait_for_accepted(receiver, 2)
        # The receiver's 200 comes before the replica records it: stop only once it has.
        wait_for(
            lambda: set(delivery_status(pg_db).values()) == {"delivered"},
            30,
            "both deliveries recorded as delivered",
        )
    finally:
        replica.ensure_stopped()

    assert replica.logged("poll.baseline") == [], "the copied snapshot is no new baseline"
    accepted = [d for d in receiver.deliveries() if d.answered == 200]
    assert [d.json["to_stage"] for d in accepted] == ["Staging", "Production"]
    assert accepted[0].header(DELIVERY_ID) == queued[0], "the queued delivery keeps its id"
    assert accepted[1].header(DELIVERY_ID) not in queued
    assert set(delivery_status(pg_db).values()) == {"delivered"}


def wait_for_accepted(receiver: Receiver, count: int) -> None:
    wait_for(
        lambda: sum(d.answered == 200 for d in receiver.deliveries()) >= count,
        60,
        f"{count} accepted deliveries",
    )
