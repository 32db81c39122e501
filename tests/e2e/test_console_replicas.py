"""The console of replicas on one PostgreSQL state: every replica serves the same pages, one
sign-in works on each (the session key is derived from the shared token), and an action taken
on a standby's console is a write the leader carries out."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import ConfigFor, create_versions
from tests.e2e.harness import Receiver, free_port, wait_for
from tests.e2e.replicas import DELIVERY_ID, Replica, replica_env, start_pair
from tests.e2e.test_console_serving import TOKEN, csrf_in, signed_in
from tests.pg import PgDatabase
from watcher.store import Store

pytestmark = pytest.mark.skipif(
    not hasattr(Store, "webhook_stats"), reason="the store's console queries are not here yet"
)


def test_a_standby_console_redelivers_through_the_leader(
    client: Any, receiver: Receiver, config_for: ConfigFor, pg_db: PgDatabase, model_name: str
) -> None:
    create_versions(client, model_name, 1)
    config = config_for(model_name)
    ports = {name: free_port() for name in ("a", "b")}
    pair = [
        Replica(
            config,
            replica_env(
                pg_db,
                extra={
                    "WATCHER_CONSOLE__LISTEN": f"127.0.0.1:{ports[name]}",
                    "WATCHER_CONSOLE__TOKEN_ENV": "CONSOLE_TOKEN",
                    "CONSOLE_TOKEN": TOKEN,
                },
            ),
            name=name,
        )
        for name in ("a", "b")
    ]
    try:
        leader, standby = start_pair(pair)
        receiver.behaviour.status = 404
        client.transition_model_version_stage(model_name, "1", "Staging")
        receiver.wait_for_count(1)
        delivery_id = receiver.deliveries()[0].header(DELIVERY_ID)

        on_standby = f"http://127.0.0.1:{ports[standby.name]}"
        on_leader = f"http://127.0.0.1:{ports[leader.name]}"
        session = signed_in(on_standby)
        detail = f"/deliveries/{delivery_id}"
        wait_for(lambda: "status-dead" in session.get(on_standby + detail).text, 20, "dead")
        assert "status-dead" in session.get(on_leader + detail).text  # the same sign-in

        receiver.behaviour.status = 200
        page = session.get(on_standby + detail)
        answer = session.post(f"{on_standby}{detail}/redeliver", data={"csrf_token": csrf_in(page)})
        assert answer.status_code == 200
        receiver.wait_for_count(2)
        assert receiver.deliveries()[1].header(DELIVERY_ID) == delivery_id
        assert leader.logged("delivery.succeeded")
        assert not standby.logged("delivery.succeeded")
        for base in (on_standby, on_leader):
            page_url = base + detail
            wait_for(lambda: "status-delivered" in session.get(page_url).text, 20, page_url)  # noqa: B023
        overview = session.get(on_standby + "/").text
        assert 'id="lease"' in overview
    finally:
        for replica in pair:
            replica.ensure_stopped()
