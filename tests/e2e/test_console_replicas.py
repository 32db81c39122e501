"""The console of replicas on a shared PostgreSQL state: every replica serves the same console,
and an action pressed on a standby's is a database write that the leader carries out."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Browser

from tests.e2e.browser import Console
from tests.e2e.conftest import ConfigFor, create_versions
from tests.e2e.harness import Receiver, ReceiverBehaviour, wait_for
from tests.e2e.replicas import Replica, delivery_status, replica_env, start_pair
from tests.e2e.test_console import CONSOLE_TOKEN, DELIVERY_ID_HEADER
from tests.helpers import free_port
from tests.pg import PgDatabase


def test_a_standby_serves_the_console_and_the_leader_redelivers(
    browser: Browser,
    config_for: ConfigFor,
    pg_db: PgDatabase,
    model_name: str,
    client: Any,
    receiver: Receiver,
) -> None:
    ports = [free_port(), free_port()]
    config = config_for(
        model_name,
        extra=f'\n[console]\nlisten = "127.0.0.1:{ports[0]}"\ntoken_env = "E2E_CONSOLE_TOKEN"\n',
    )
    group = [
        Replica(
            config,
            replica_env(
                pg_db,
                extra={
                    "E2E_CONSOLE_TOKEN": CONSOLE_TOKEN,
                    "WATCHER_CONSOLE__LISTEN": f"127.0.0.1:{port}",
                },
            ),
            name=name,
        )
        for name, port in zip(("a", "b"), ports, strict=True)
    ]
    try:
        leader, standby = start_pair(group)
        receiver.behaviour = ReceiverBehaviour(status=404, body=b"no such job")
        create_versions(client, model_name, 1)
        client.transition_model_version_stage(model_name, "1", "Staging")
        receiver.wait_for_count(1)
        wait_for(lambda: "dead" in delivery_status(pg_db).values(), 30, "a dead delivery")
        delivery_id = receiver.deliveries()[0].header(DELIVERY_ID_HEADER)
        assert delivery_id

        consoles = [Console(browser, f"http://127.0.0.1:{port}") for port in ports]
        try:
            for console in consoles:
                console.login_with_token(CONSOLE_TOKEN)
                console.open(f"/deliveries/{delivery_id}")
                assert "dead" in console.text("#status")
            receiver.behaviour = ReceiverBehaviour()
            on_standby = consoles[group.index(standby)]
            on_standby.submit("form#redeliver")
            receiver.wait_for_count(2)
            wait_for(lambda: delivery_status(pg_db)[delivery_id] == "delivered", 30, "delivered")
            # The leader sent it, under the same id; the leader's console shows it too.
            assert [d.header(DELIVERY_ID_HEADER) for d in receiver.deliveries()] == [
                delivery_id
            ] * 2
            assert standby.role() == "standby"
            assert leader.role() == "leader"
            consoles[0].open(f"/deliveries/{delivery_id}")
            assert "delivered" in consoles[0].text("#status")
        finally:
            for console in consoles:
                console.close()
    finally:
        for replica in group:
            replica.ensure_stopped()
