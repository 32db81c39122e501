"""The core promise against a real MLflow server and a real receiver.

1. a registry with versions already staged: the first run is a silent baseline; one promotion
   gives exactly one signed POST;
2. receiver down, then failing: the event stays queued (exit 3) and arrives later with the same
   delivery id;
3. the daemon delivers a promotion, and kill -9 at any moment loses nothing;
4. MLflow stopped under a running daemon: it survives, and changes made meanwhile arrive.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import config_in, create_versions, watch_model
from tests.e2e.harness import (
    SECRET,
    Daemon,
    Delivery,
    MlflowServer,
    Receiver,
    iter_lines,
    run_watcher,
    wait_for,
    write_config,
)

STAGE_EVENT = "MODEL_VERSION_TRANSITIONED_STAGE"


def mlflow_recipe_verifies(delivery: Delivery, secret: str) -> bool:
    """MLflow's documented receiver recipe, written out here independently of the watcher."""
    delivery_id = delivery.header("X-MLflow-Delivery-Id")
    timestamp = delivery.header("X-MLflow-Timestamp")
    signature = delivery.header("X-MLflow-Signature") or ""
    if not delivery_id or not timestamp or not signature.startswith("v1,"):
        return False
    signed = f"{delivery_id}.{timestamp}.{delivery.body.decode('utf-8')}"
    expected = base64.b64encode(
        hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
    ).decode()
    return hmac.compare_digest(expected, signature.removeprefix("v1,"))


def attempts_logged(state: Path) -> list[tuple[str, int | None, str | None]]:
    with sqlite3.connect(state) as conn:
        return conn.execute(
            "SELECT delivery_id, status_code, error FROM attempts ORDER BY id"
        ).fetchall()


def test_baseline_then_one_signed_delivery_per_promotion(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    create_versions(client, model_name, 3)
    client.transition_model_version_stage(model_name, "1", "Staging")
    client.transition_model_version_stage(model_name, "2", "Production")
    config = config_in(tmp_path, mlflow_server, receiver, model_name)

    first = run_watcher("run", "--once", "-c", str(config))
    assert first.returncode == 0, first.stderr
    assert receiver.deliveries() == []

    client.transition_model_version_stage(model_name, "1", "Production")
    second = run_watcher("run", "--once", "-c", str(config))
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""  # cron: silent on success

    [delivery] = receiver.deliveries()
    body = delivery.json
    assert body["event"] == STAGE_EVENT
    assert body["model_name"] == model_name
    assert body["model_version"] == "1"
    assert body["from_stage"] == "Staging"
    assert body["to_stage"] == "Production"
    assert body["webhook_id"] == "deploy"
    assert isinstance(body["timestamp"], int)
    assert delivery.header("Content-Type") == "application/json"
    assert mlflow_recipe_verifies(delivery, SECRET)
    assert not mlflow_recipe_verifies(delivery, "another-secret")

    third = run_watcher("run", "--once", "-c", str(config))
    assert third.returncode == 0, third.stderr
    assert len(receiver.deliveries()) == 1, "a change is delivered once, not on every run"


def test_receiver_outage_keeps_the_event_queued_with_one_delivery_id(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    config, state = watch_model(client, mlflow_server, receiver, model_name, tmp_path, versions=1)
    assert run_watcher("run", "--once", "-c", str(config)).returncode == 0

    receiver.stop()  # connection refused
    client.transition_model_version_stage(model_name, "1", "Staging")
    down = run_watcher("run", "--once", "-c", str(config))
    assert down.returncode == 3, down.stderr
    assert "1 deliveries failed" in down.stderr
    assert "Traceback" not in down.stderr

    receiver.start()
    receiver.behaviour.status = 500
    failing = run_watcher("run", "--once", "-c", str(config))
    assert failing.returncode == 3, failing.stderr

    receiver.behaviour.status = 200
    back = run_watcher("run", "--once", "-c", str(config))
    assert back.returncode == 0, back.stderr

    answered = [d for d in receiver.deliveries() if d.answered == 200]
    assert len(answered) == 1
    assert answered[0].json["to_stage"] == "Staging"
    ids = {d.header("X-MLflow-Delivery-Id") for d in receiver.deliveries()}
    assert len(ids) == 1, "every attempt carries the same delivery id"
    logged = attempts_logged(state)
    assert [row[0] for row in logged] == [ids.pop()] * 3
    assert logged[0][1] is None
    assert "Connection refused" in (logged[0][2] or "")
    assert logged[1][1] == 500
    assert logged[2][1] == 200

    again = run_watcher("run", "--once", "-c", str(config))
    assert again.returncode == 0
    assert len(receiver.deliveries()) == 2, "nothing is sent twice once delivered"


def stage_events_detected(state: Path) -> int:
    with sqlite3.connect(state) as conn:
        return int(
            conn.execute("SELECT COUNT(*) FROM events WHERE type = ?", (STAGE_EVENT,)).fetchone()[0]
        )


def test_daemon_delivers_promotions_and_survives_kill_9(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    config, state = watch_model(
        client, mlflow_server, receiver, model_name, tmp_path, versions=1, interval="1s"
    )
    with Daemon(config) as daemon:
        daemon.wait_logged("poll.baseline")
        started = time.monotonic()
        client.transition_model_version_stage(model_name, "1", "Staging")
        receiver.wait_for_count(1, timeout=20)
        print(f"promotion delivered {time.monotonic() - started:.2f}s after the REST call")

        # Killed while the receiver holds the request: the attempt never completes, so the
        # restarted daemon must send it again, under the same delivery id.
        receiver.behaviour.delay = 3.0
        client.transition_model_version_stage(model_name, "1", "Production")
        receiver.wait_for_count(2, timeout=20)
        daemon.kill9()
        receiver.behaviour.delay = 0.0
        in_flight = receiver.deliveries()[1]
        assert in_flight.json["to_stage"] == "Production"

        # Killed at random moments after detection (while delivering, or just after): every
        # change still arrives. Each change is detected before the next one is made, since
        # polling sees states, not steps.
        stages = ["Staging", "Archived", "Production", "Staging", "Archived"]
        for round_, stage in enumerate(stages, start=1):
            receiver.behaviour.delay = random.uniform(0.0, 1.0)
            daemon.start()
            client.transition_model_version_stage(model_name, "1", stage)
            wanted = 2 + round_
            wait_for(lambda: stage_events_detected(state) >= wanted, 30, "detection")  # noqa: B023
            time.sleep(random.uniform(0.0, 0.5))
            daemon.kill9()
        receiver.behaviour.delay = 0.0
        daemon.start()

        def all_arrived() -> bool:
            seen = [d.json["to_stage"] for d in receiver.deliveries() if d.answered == 200]
            # Every transition must arrive; repeats of one that was in flight are allowed.
            collapsed = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
            return collapsed[-len(stages) :] == stages

        wait_for(all_arrived, 30, "every transition made across kill -9 restarts")
        daemon.wait_started()
        redelivered = [
            d
            for d in receiver.deliveries()
            if d.header("X-MLflow-Delivery-Id") == in_flight.header("X-MLflow-Delivery-Id")
        ]
        assert len(redelivered) >= 2, "the in-flight delivery was sent again after the crash"
        assert {d.json["event_id"] for d in redelivered} == {in_flight.json["event_id"]}
        assert daemon.terminate() == 0


def test_daemon_survives_mlflow_outage_and_catches_up(
    receiver: Receiver, tmp_path: Path, model_name: str
) -> None:
    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    try:
        client = server.client()
        create_versions(client, model_name, 2)
        config = config_in(tmp_path, server, receiver, "*", interval="1s")
        with Daemon(config) as daemon:
            daemon.wait_logged("poll.baseline")
            server.stop()
            daemon.wait_logged("poll.failed", count=3, timeout=60)
            assert daemon.alive()
            failure = daemon.logged("poll.failed")[0]
            assert "cannot reach MLflow" in failure["error"]

            # Changed while the server is down, straight in its database.
            from mlflow import MlflowClient

            offline = MlflowClient(tracking_uri=server.db_uri, registry_uri=server.db_uri)
            offline.transition_model_version_stage(model_name, "2", "Production")

            server.start()
            receiver.wait_for_count(1, timeout=30)
            [delivery] = receiver.deliveries()
            assert delivery.json["model_version"] == "2"
            assert delivery.json["to_stage"] == "Production"
            assert daemon.terminate() == 0
    finally:
        server.stop()


def test_dry_run_prints_events_and_changes_nothing(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    config, state = watch_model(client, mlflow_server, receiver, model_name, tmp_path, versions=1)
    assert run_watcher("run", "--once", "-c", str(config)).returncode == 0
    client.transition_model_version_stage(model_name, "1", "Staging")
    before = state.read_bytes()

    dry = run_watcher("run", "--dry-run", "-c", str(config))
    assert dry.returncode == 0, dry.stderr
    events = list(iter_lines(dry.stdout))
    assert [(e["type"], e["to_stage"], e["webhooks"]) for e in events] == [
        (STAGE_EVENT, "Staging", ["deploy"]),
        ("MODEL_VERSION_TRANSITIONED_TO_STAGING", "Staging", []),
    ]
    assert state.read_bytes() == before
    assert receiver.deliveries() == []

    real = run_watcher("run", "--once", "-c", str(config))
    assert real.returncode == 0
    assert len(receiver.deliveries()) == 1


def test_unreadable_registry_exits_1_with_one_line(receiver: Receiver, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "watcher.toml",
        tracking_uri="http://127.0.0.1:9",  # nothing listens on the discard port
        webhook_url=receiver.url,
        state=tmp_path / "state.db",
    )
    result = run_watcher("run", "--once", "-c", str(config))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot reach MLflow at http://127.0.0.1:9" in lines[0]
    assert "Traceback" not in result.stderr
