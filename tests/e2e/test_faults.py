"""The delivery promise under faults, against a real MLflow server and real receivers.

Every detected event reaches every subscribed receiver at least once, in detection order for
each model, duplicates only ever under the same delivery id; a hanging endpoint does not hold
up another; redirects are not followed; two watchers never share a state file.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ConfigFor, Watch, create_versions
from tests.e2e.harness import (
    STAGE_EVENT,
    Daemon,
    Delivery,
    MlflowServer,
    Receiver,
    ReceiverBehaviour,
    blocked_on_a_lock,
    hooks_config,
    run_watcher,
    wait_for,
    watcher_env,
)

STAGES = ["Staging", "Production", "Archived", "None"]


def detected(state: Path) -> list[dict[str, Any]]:
    """The stage events the watcher committed, in detection order."""
    with sqlite3.connect(state) as conn:
        rows = conn.execute(
            "SELECT e.data FROM deliveries d JOIN events e ON e.event_id = d.event_id"
            " WHERE e.type = ? ORDER BY d.id",
            (STAGE_EVENT,),
        ).fetchall()
    return [json.loads(r[0]) for r in rows]


def pending(state: Path) -> int:
    with sqlite3.connect(state) as conn:
        return int(
            conn.execute("SELECT COUNT(*) FROM deliveries WHERE status != 'delivered'").fetchone()[
                0
            ]
        )


def flaky(rng: random.Random, healthy: threading.Event) -> Any:
    def choose(_path: str) -> ReceiverBehaviour:
        if healthy.is_set():
            return ReceiverBehaviour()
        roll = rng.random()
        if roll < 0.15:
            return ReceiverBehaviour(status=500)
        if roll < 0.30:
            return ReceiverBehaviour(status=503, headers={"Retry-After": "1"})
        if roll < 0.40:
            return ReceiverBehaviour(reset=True)
        if roll < 0.45:
            return ReceiverBehaviour(delay=1.5)  # past the webhook's 1 s timeout
        return ReceiverBehaviour()

    return choose


def failed(receiver: Receiver) -> list[Delivery]:
    return [d for d in receiver.deliveries() if d.answered != 200]


def assert_every_event_arrived_in_order(state: Path, receiver: Receiver, models: list[str]) -> None:
    events = detected(state)
    arrived = [d for d in receiver.deliveries() if d.answered == 200]
    # Duplicates only ever under the same delivery id.
    ids_per_event: dict[str, set[str | None]] = defaultdict(set)
    for d in receiver.deliveries():
        ids_per_event[d.json["event_id"]].add(d.header("X-MLflow-Delivery-Id"))
    assert all(len(ids) == 1 for ids in ids_per_event.values())
    # Every detected event arrived, and for every model in detection order.
    for name in models:
        expected = [e["event_id"] for e in events if e["model_name"] == name]
        seen = [d.json["event_id"] for d in arrived if d.json["model_name"] == name]
        collapsed = [x for i, x in enumerate(seen) if i == 0 or x != seen[i - 1]]
        assert collapsed == expected, name
        # The chain of stages has no gap: nothing detected was lost in between.
        chain = [e for e in events if e["model_name"] == name]
        for before, after in itertools.pairwise(chain):
            assert after["from_stage"] == before["to_stage"], name


def make_transitions(client: Any, models: list[str], rounds: int, rng: random.Random) -> None:
    for _ in range(rounds):
        for name in models:
            client.transition_model_version_stage(name, "1", rng.choice(STAGES))


@pytest.fixture
def twenty_models(client: Any, model_name: str) -> list[str]:
    names = [f"{model_name}-{i:02d}" for i in range(20)]
    for name in names:
        create_versions(client, name, 1)
    return names


@dataclass
class FaultRun:
    """A daemon past its baseline of twenty_models, delivering to a receiver that fails at
    random until `healthy` is set."""

    daemon: Daemon
    healthy: threading.Event
    rng: random.Random
    state: Path


@pytest.fixture
def fault_run(
    request: pytest.FixtureRequest,
    config_for: ConfigFor,
    receiver: Receiver,
    model_name: str,
    twenty_models: list[str],
    tmp_path: Path,
) -> Iterator[FaultRun]:
    rng = random.Random(request.param)
    healthy = threading.Event()
    receiver.choose = flaky(rng, healthy)
    config = config_for(
        f"{model_name}-*",
        interval="500ms",
        extra='max_attempts = 1000\nmax_age = "1h"\n',
        webhook_timeout="1s",
    )
    daemon = Daemon(config)
    daemon.start()
    try:
        daemon.wait_logged("poll.baseline")
        yield FaultRun(daemon, healthy, rng, tmp_path / "state.db")
    finally:
        daemon.ensure_stopped()


@pytest.mark.parametrize("fault_run", [20261127], indirect=True)
def test_random_receiver_faults_lose_nothing_and_keep_order(
    client: Any, receiver: Receiver, twenty_models: list[str], fault_run: FaultRun
) -> None:
    daemon, state = fault_run.daemon, fault_run.state
    make_transitions(client, twenty_models, rounds=10, rng=fault_run.rng)  # 200 transitions
    daemon.wait_polls(2)  # every transition detected
    # The receiver fails for a while, then recovers.
    wait_for(lambda: len(failed(receiver)) >= 10, 30, "ten failed deliveries")
    fault_run.healthy.set()
    wait_for(lambda: pending(state) == 0 and len(detected(state)) > 0, 90, "an empty outbox")
    assert_every_event_arrived_in_order(state, receiver, twenty_models)
    assert daemon.terminate() == 0


@pytest.mark.parametrize("fault_run", [4242], indirect=True)
def test_kill_9_at_random_moments_loses_nothing_and_keeps_order(
    client: Any, receiver: Receiver, twenty_models: list[str], fault_run: FaultRun
) -> None:
    daemon, rng = fault_run.daemon, fault_run.rng
    stop = threading.Event()
    kills = [0]

    def killer() -> None:
        while not stop.wait(rng.uniform(0.5, 2.0)):
            daemon.kill9()
            daemon.start()
            kills[0] += 1

    chaos = threading.Thread(target=killer, daemon=True)
    chaos.start()
    try:
        make_transitions(client, twenty_models, rounds=10, rng=rng)
        # Two more kills while the outbox drains (and the receiver still fails).
        after = kills[0]
        wait_for(lambda: kills[0] >= after + 2, 30, "two kills after the transitions")
        stop.set()
        chaos.join()
        fault_run.healthy.set()
        daemon.wait_started()
        wait_for(lambda: pending(fault_run.state) == 0, 90, "an empty outbox after the kills")
        assert len(daemon.logged("service.started")) >= 3, "the daemon was killed several times"
        assert_every_event_arrived_in_order(fault_run.state, receiver, twenty_models)
    finally:
        stop.set()


def test_a_hanging_webhook_does_not_hold_up_another(
    client: Any, mlflow_server: MlflowServer, model_name: str, tmp_path: Path
) -> None:
    slow, fast = Receiver(), Receiver()
    slow.behaviour = ReceiverBehaviour(delay=12.0)
    for r in (slow, fast):
        r.start()
    try:
        models = [f"{model_name}-{i}" for i in range(4)]
        for name in models:
            create_versions(client, name, 1)
        config = hooks_config(
            tmp_path / "watcher.toml",
            tracking_uri=mlflow_server.url,
            state=tmp_path / "state.db",
            models=f"{model_name}-*",
            interval="500ms",
            webhooks=[
                {"name": "slow", "url": slow.url, "events": [STAGE_EVENT], "timeout": "10s"},
                {"name": "fast", "url": fast.url, "events": [STAGE_EVENT]},
            ],
        )
        daemon = Daemon(config)
        daemon.start()
        try:
            daemon.wait_logged("poll.baseline")
            for stage in ("Staging", "Production"):
                # Counted before the changes: a poll may deliver some while the rest are made.
                wanted = len(fast.deliveries()) + len(models)
                for name in models:
                    client.transition_model_version_stage(name, "1", stage)
                fast.wait_for_count(wanted, timeout=20)
            # The slow endpoint got the first wave at once too, and both waves reached the fast
            # one while the slow one still held those requests (the watcher waits 10 s for it).
            assert len(slow.deliveries()) >= len(models)
            held_until = min(d.at for d in slow.deliveries()) + 10.0
            assert max(d.at for d in fast.deliveries()) < held_until
        finally:
            daemon.ensure_stopped()
    finally:
        slow.stop()
        fast.stop()


def test_a_redirect_is_a_failure_and_not_followed(
    client: Any, receiver: Receiver, model_name: str, watch: Watch
) -> None:
    receiver.choose = lambda path: (
        ReceiverBehaviour(status=302, headers={"Location": "/elsewhere"})
        if path == "/hook"
        else ReceiverBehaviour()
    )
    config, state = watch()
    assert run_watcher("run", "--once", "-c", str(config)).returncode == 0
    client.transition_model_version_stage(model_name, "1", "Staging")
    result = run_watcher("run", "--once", "--verbose", "-c", str(config))
    assert result.returncode == 3
    assert [d.path for d in receiver.deliveries()] == ["/hook"]
    assert "redirect to '/elsewhere' not followed" in result.stderr
    with sqlite3.connect(state) as conn:
        status, code = conn.execute("SELECT status, last_status_code FROM deliveries").fetchone()
    assert (status, code) == ("pending", 302)


def test_private_addresses_can_be_refused_on_the_socket(
    client: Any, receiver: Receiver, model_name: str, tmp_path: Path, watch: Watch
) -> None:
    config, state = watch(
        webhook_url=receiver.url.replace("127.0.0.1", "localhost"),  # a name, not an address
        extra="deny_private_addresses = true\n",
    )
    assert run_watcher("run", "--once", "-c", str(config)).returncode == 0
    client.transition_model_version_stage(model_name, "1", "Staging")
    result = run_watcher("run", "--once", "--verbose", "-c", str(config))
    assert result.returncode == 3
    assert receiver.deliveries() == []
    assert "refused to deliver to private address 127.0.0.1" in result.stderr
    with sqlite3.connect(state) as conn:
        assert conn.execute("SELECT status FROM deliveries").fetchone() == ("dead",)


def test_a_second_watcher_on_the_same_state_exits_4(config_for: ConfigFor, model_name: str) -> None:
    config = config_for(model_name)
    daemon = Daemon(config)
    daemon.start()
    try:
        daemon.wait_started()
        for args in (("run",), ("run", "--once")):
            second = run_watcher(*args, "-c", str(config))
            assert second.returncode == 4, second.stderr
            [line] = second.stderr.strip().splitlines()
            assert "another watcher (pid" in line
            assert "holds the lock" in line
        waiting = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "watcher",
                "run",
                "--once",
                "--wait-for-lock",
                "-c",
                str(config),
            ],
            env=watcher_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: blocked_on_a_lock(waiting.pid), 30, "--wait-for-lock to block")
        assert waiting.poll() is None, "--wait-for-lock waits while the daemon holds the lock"
        assert daemon.terminate() == 0
        assert waiting.wait(timeout=60) == 0
    finally:
        daemon.ensure_stopped()


def test_sigterm_leaves_a_hanging_delivery_queued_for_the_next_start(
    client: Any, receiver: Receiver, model_name: str, tmp_path: Path, watch: Watch
) -> None:
    config, _ = watch(extra='shutdown_grace = "1s"\n', webhook_timeout="30s")
    daemon = Daemon(config)
    daemon.start()
    try:
        daemon.wait_logged("poll.baseline")
        receiver.behaviour = ReceiverBehaviour(delay=20.0)
        client.transition_model_version_stage(model_name, "1", "Staging")
        receiver.wait_for_count(1)
        asked = time.monotonic()
        assert daemon.terminate(timeout=20) == 0
        assert time.monotonic() - asked < 10, "the grace period bounds the stop"
        assert daemon.logged("delivery.abandoned")
        receiver.behaviour = ReceiverBehaviour()
        daemon.start()
        receiver.wait_for_count(2)
        first, second = receiver.deliveries()
        assert first.header("X-MLflow-Delivery-Id") == second.header("X-MLflow-Delivery-Id")
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_stopped()
