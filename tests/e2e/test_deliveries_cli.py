"""`deliveries`, `redeliver` and `purge` as an operator runs them, on the state file that real
runs against a real MLflow server and a real receiver wrote.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Watch
from tests.e2e.harness import (
    Daemon,
    Receiver,
    iter_lines,
    run_watcher,
    wait_for,
)

STAGE_EVENT = "MODEL_VERSION_TRANSITIONED_STAGE"


def watcher(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_watcher(*args, "-c", str(config))


def listed(config: Path, *args: str) -> list[dict[str, Any]]:
    result = watcher(config, "deliveries", "--json", *args)
    assert result.returncode == 0, result.stderr
    return list(iter_lines(result.stdout))


def attempt_codes(state: Path, delivery_id: str) -> list[int | None]:
    with sqlite3.connect(state) as conn:
        rows = conn.execute(
            "SELECT status_code FROM attempts WHERE delivery_id = ? ORDER BY id", (delivery_id,)
        ).fetchall()
    return [row[0] for row in rows]


def test_dead_delivery_is_listed_redelivered_under_its_id_and_purged(
    client: Any, receiver: Receiver, model_name: str, tmp_path: Path, watch: Watch
) -> None:
    config, state = watch(2)
    missing = watcher(config, "deliveries")
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1, missing.stderr
    assert missing.stderr.startswith("mlflow-watcher: error: no state file at")
    assert not state.exists(), "listing never creates a state file"
    assert watcher(config, "run", "--once").returncode == 0  # the baseline

    # 404 is not retryable: dead at once.
    receiver.behaviour.status = 404
    client.transition_model_version_stage(model_name, "1", "Staging")
    refused = watcher(config, "run", "--once")
    assert refused.returncode == 3, refused.stderr
    assert "1 dead" in refused.stderr
    [first] = receiver.deliveries()
    assert first.answered == 404
    delivery_id = first.header("X-MLflow-Delivery-Id")
    assert delivery_id

    table = watcher(config, "deliveries", "--status", "dead")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == [
        "ID",
        "STATUS",
        "WEBHOOK",
        "EVENT",
        "MODEL",
        "VERSION",
        "ATTEMPTS",
        "LAST",
        "AGE",
    ]
    cells = row.split()
    assert cells[:7] == [delivery_id[:8], "dead", "deploy", STAGE_EVENT, model_name, "1", "1"]
    assert cells[7:9] == ["HTTP", "404:"]
    assert cells[-1].endswith("s")

    [dead] = listed(config, "--status", "dead")
    assert dead["delivery_id"] == delivery_id
    assert dead["status"] == "dead"
    assert dead["webhook"] == "deploy"
    assert dead["event_type"] == STAGE_EVENT
    assert dead["event_id"] == first.json["event_id"]
    assert (dead["model_name"], dead["model_version"]) == (model_name, "1")
    assert dead["last_status_code"] == 404
    assert dead["dead_at"] is not None
    assert listed(config, "--status", "pending") == []
    assert listed(config, "--status", "delivered") == []
    assert listed(config, "--model", "some-other-model") == []
    assert [r["delivery_id"] for r in listed(config, "--webhook", "deploy", "--since", "1h")] == [
        delivery_id
    ]

    # The receiver is fixed; the operator asks for the dead delivery again.
    receiver.behaviour.status = 200
    requeued = watcher(config, "redeliver", "--dead")
    assert requeued.returncode == 0, requeued.stderr
    assert requeued.stdout == "re-queued 1 deliveries\n"
    [pending] = listed(config, "--status", "pending")
    assert pending["delivery_id"] == delivery_id
    sent = watcher(config, "run", "--once")
    assert sent.returncode == 0, sent.stderr

    first, second = receiver.deliveries()
    assert second.answered == 200
    assert second.header("X-MLflow-Delivery-Id") == delivery_id, "the receiver can deduplicate"
    assert second.json["event_id"] == first.json["event_id"]
    [delivered] = listed(config, "--status", "delivered")
    assert delivered["delivery_id"] == delivery_id
    assert delivered["last_status_code"] == 200
    assert delivered["total_attempts"] == 2
    assert delivered["delivered_at"] is not None
    assert delivered["dead_at"] is None
    assert attempt_codes(state, delivery_id) == [404, 200], "the 404 stays in the log"

    # Another change goes dead; purge removes it once it is older than asked, and only it.
    receiver.behaviour.status = 404
    client.transition_model_version_stage(model_name, "2", "Staging")
    assert watcher(config, "run", "--once").returncode == 3
    [dead_again] = listed(config, "--status", "dead")
    assert dead_again["delivery_id"] != delivery_id
    young = watcher(config, "purge", "--dead", "--older-than", "1h")
    assert (young.returncode, young.stdout) == (0, "purged 0 dead deliveries\n")
    time.sleep(1.2)
    purged = watcher(config, "purge", "--dead", "--older-than", "1s")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout == "purged 1 dead deliveries\n"
    assert listed(config, "--status", "dead") == []
    assert attempt_codes(state, dead_again["delivery_id"]) == []
    assert [r["delivery_id"] for r in listed(config)] == [delivery_id], "delivered rows stay"


def test_usage_errors_are_one_line_with_exit_2_and_unknown_ids_exit_1(
    client: Any, receiver: Receiver, model_name: str, tmp_path: Path, watch: Watch
) -> None:
    config, _ = watch()
    assert watcher(config, "run", "--once").returncode == 0

    for args, expected in [
        (("redeliver",), "say what to redeliver"),
        (("redeliver", "abc"), "at least 8 characters"),
        (("purge", "--older-than", "30d"), "--dead"),
    ]:
        result = watcher(config, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert expected in result.stderr
    bad_duration = watcher(config, "deliveries", "--since", "soon")
    assert bad_duration.returncode == 2
    assert "--since" in bad_duration.stderr

    unknown = watcher(config, "redeliver", "0123456789abcdef")
    assert unknown.returncode == 1
    assert unknown.stderr == ("mlflow-watcher: error: no delivery with id 0123456789abcdef\n"), (
        unknown.stderr
    )
    empty = watcher(config, "deliveries")
    assert (empty.returncode, empty.stdout) == (0, "")
    assert "no deliveries" in empty.stderr


def test_commands_work_beside_a_running_daemon_that_sends_the_redelivery(
    client: Any, receiver: Receiver, model_name: str, tmp_path: Path, watch: Watch
) -> None:
    config, _ = watch()
    daemon = Daemon(config)
    daemon.start()
    try:
        daemon.wait_logged("poll.baseline")
        receiver.behaviour.status = 410
        client.transition_model_version_stage(model_name, "1", "Production")
        daemon.wait_logged("delivery.dead")
        [dead] = listed(config, "--status", "dead")  # the daemon holds the lock meanwhile

        receiver.behaviour.status = 200
        requeued = watcher(config, "redeliver", dead["delivery_id"][:8])
        assert requeued.returncode == 0, requeued.stderr
        assert requeued.stdout == "re-queued 1 deliveries\n"
        receiver.wait_for_count(2, timeout=20)
        first, second = receiver.deliveries()
        assert (first.answered, second.answered) == (410, 200)
        assert second.header("X-MLflow-Delivery-Id") == dead["delivery_id"]
        wait_for(
            lambda: listed(config, "--status", "delivered"), 10, "the row to be marked delivered"
        )
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_stopped()
