"""The hints endpoint on a real health server (127.0.0.1), its metrics and its status."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import free_port
from tests.unit.test_hints import NOW, SECRET, mlflow_body, signed
from watcher import signing
from watcher import state_meta as sm
from watcher.cli.status import _status_lines
from watcher.config import Config, HintsConfig, Secret, ServerConfig
from watcher.health import HealthServer
from watcher.hints import MAX_BODY, HintBox
from watcher.metrics import Metrics
from watcher.status import status_report
from watcher.store import Store


class Log:
    """Records what the server logs: (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append((level, event, fields))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, HintBox, Log, Store]]:
    store = Store.open(tmp_path / "state.db")
    box = HintBox(SECRET, 300)
    log = Log()
    server = HealthServer(
        ServerConfig(listen=("127.0.0.1", free_port())),
        alive=lambda: (True, "ok"),
        ready=lambda: (True, "ok"),
        metrics=Metrics(Config(), store, hints=box),
        hints=box,
        hints_path="/mlflow-hints",
        log=log,
    )
    server.start()
    host, port = server.address
    try:
        yield f"http://{host}:{port}", box, log, store
    finally:
        server.stop()
        store.close()


def post(base: str, body: bytes, headers: dict[str, str], path: str = "/mlflow-hints") -> Any:
    return requests.post(f"{base}{path}", data=body, headers=headers, timeout=5)


def fresh(body: bytes, delivery_id: str = "d-1", secret: str = SECRET) -> dict[str, str]:
    """Signed now: the server judges with its own clock."""
    import time

    return signed(body, delivery_id, at=time.time(), secret=secret)


def test_a_signed_hint_is_204_and_its_model_waits(
    served: tuple[str, HintBox, Log, Store],
) -> None:
    base, box, log, _ = served
    body = mlflow_body(name="fraud")
    answer = post(base, body, fresh(body))
    assert (answer.status_code, answer.content) == (204, b"")
    assert box.take() == frozenset({"fraud"})
    assert ("info", "hint.accepted") in [(level, event) for level, event, _ in log.lines]


def test_a_replay_is_200_with_a_note(served: tuple[str, HintBox, Log, Store]) -> None:
    base, box, _, _ = served
    body = mlflow_body()
    headers = fresh(body)
    assert post(base, body, headers).status_code == 204
    again = post(base, body, headers)
    assert again.status_code == 200
    assert again.text.startswith("ignored, already seen")
    assert box.stats().counts["replayed"] == 1


def test_forged_and_invalid_hints_are_refused_and_logged_with_their_reason(
    served: tuple[str, HintBox, Log, Store],
) -> None:
    base, box, log, _ = served
    body = mlflow_body()
    forged = post(base, body, fresh(body, secret="guessed"))
    assert (forged.status_code, forged.text) == (401, "refused: signature mismatch\n")
    unsigned = post(base, body, {"Content-Type": "application/json"})
    assert unsigned.status_code == 401
    junk = b"{not json"
    assert post(base, junk, fresh(junk, "d-2")).status_code == 400
    assert box.take() == frozenset()
    refusals = [fields for level, event, fields in log.lines if event == "hint.refused"]
    assert [(r["result"], r["reason"]) for r in refusals] == [
        ("forged", "signature mismatch"),
        ("forged", "missing signature headers"),
        ("invalid", "the body is not JSON"),
    ]
    logged = repr(log.lines)
    assert SECRET not in logged
    assert "champion" not in logged  # the body is never logged


def test_a_repeated_refusal_is_logged_at_1_2_4_8(
    served: tuple[str, HintBox, Log, Store],
) -> None:
    base, _, log, _ = served
    body = mlflow_body()
    for _ in range(9):
        post(base, body, {})
    repeats = [f.get("repeated", 1) for _, event, f in log.lines if event == "hint.refused"]
    assert repeats == [1, 2, 4, 8]


def test_a_body_over_the_cap_is_413_unread(served: tuple[str, HintBox, Log, Store]) -> None:
    base, box, _, _ = served
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(
            b"POST /mlflow-hints HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode()
        )
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.0 413") or answer.startswith(b"HTTP/1.1 413")
    assert box.stats().counts["invalid"] == 1


def test_other_paths_and_methods(served: tuple[str, HintBox, Log, Store]) -> None:
    base, box, _, _ = served
    body = mlflow_body()
    assert post(base, body, fresh(body), path="/elsewhere").status_code == 404
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    assert box.stats().counts == {"accepted": 0, "replayed": 0, "forged": 0, "invalid": 0}


def test_without_hints_a_post_is_404(tmp_path: Path) -> None:
    with Store.open(tmp_path / "state.db") as store:
        server = HealthServer(
            ServerConfig(listen=("127.0.0.1", free_port())),
            alive=lambda: (True, "ok"),
            ready=lambda: (True, "ok"),
            metrics=Metrics(Config(), store),
        )
        server.start()
        host, port = server.address
        try:
            body = mlflow_body()
            assert post(f"http://{host}:{port}", body, fresh(body)).status_code == 404
            scraped = requests.get(f"http://{host}:{port}/metrics", timeout=5).text
            assert "mlflow_watcher_hints_total" not in scraped
        finally:
            server.stop()


def test_metrics_count_hints_by_result(served: tuple[str, HintBox, Log, Store]) -> None:
    base, _, _, _ = served
    body = mlflow_body()
    post(base, body, fresh(body))
    post(base, body, {signing.MLFLOW_SIGNATURE: "v1,AAAA"})
    scraped = requests.get(f"{base}/metrics", timeout=5).text
    assert 'mlflow_watcher_hints_total{result="accepted"} 1.0' in scraped
    assert 'mlflow_watcher_hints_total{result="forged"} 1.0' in scraped
    assert 'mlflow_watcher_hints_total{result="replayed"} 0.0' in scraped
    assert "mlflow_watcher_last_hint_timestamp_seconds " in scraped


def test_status_shows_the_hints_the_daemon_recorded(tmp_path: Path) -> None:
    config = Config(
        server=ServerConfig(listen=("127.0.0.1", 9464)),
        hints=HintsConfig(enabled=True, secret=Secret(SECRET, "test")),
    )
    box = HintBox(SECRET)
    body = mlflow_body()
    box.offer(signed(body), body, NOW)
    box.offer({}, body, NOW)
    with Store.open(tmp_path / "state.db") as store:
        off = status_report(Config(), store, NOW)["hints"]
        assert off == {
            "on": False,
            "path": None,
            "last_accepted_at": None,
            "age_s": None,
            "counts": {"accepted": 0, "replayed": 0, "forged": 0, "invalid": 0},
        }
        assert not any(
            line.startswith("hints:") for line in _status_lines(status_report(Config(), store, NOW))
        )
        store.set_meta(box.stats().meta())
        report = status_report(config, store, NOW + 42)
    hints = report["hints"]
    assert hints["on"]
    assert hints["path"] == "/mlflow-hints"
    assert hints["last_accepted_at"] == sm.format_time(NOW)
    assert hints["age_s"] == 42
    assert hints["counts"] == {"accepted": 1, "replayed": 0, "forged": 1, "invalid": 0}
    (line,) = [line for line in _status_lines(report) if line.startswith("hints:")]
    assert line == (
        f"hints:          on at /mlflow-hints; last accepted {sm.format_time(NOW)} (42s ago); "
        "1 accepted, 0 replayed, 1 forged, 0 invalid"
    )


# --------------------------------------------------------------------------- hints register


def test_the_printed_command_reads_the_secret_where_the_watcher_does(tmp_path: Path) -> None:
    from watcher.cli.hints import register_command
    from watcher.config import MlflowConfig

    config = Config(
        mlflow=MlflowConfig(tracking_uri="https://alice:pa55@mlflow.example.com"),
        hints=HintsConfig(enabled=True, secret_source="env:HINTS"),
    )
    command = register_command(config, "https://w.example.com/mlflow-hints", "hints")
    assert command.startswith("python -c 'import os; from mlflow import MlflowClient; ")
    assert 'secret=os.environ["HINTS"]' in command
    assert '"https://mlflow.example.com"' in command
    assert "pa55" not in command
    assert '"prompt_alias.deleted"' in command
    from_file = Config(hints=HintsConfig(enabled=True, secret_source="file:${CREDS}/hints"))
    command = register_command(from_file, "https://w.example.com/mlflow-hints", "hints")
    assert 'open(os.path.expandvars("${CREDS}/hints"), encoding="utf-8")' in command


def test_register_needs_hints_on(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from watcher.cli import cli

    (tmp_path / "watcher.toml").write_text("")
    done = CliRunner().invoke(
        cli,
        ["hints", "register", "-c", str(tmp_path / "watcher.toml"), "--url", "https://x/y"],
        env={},
    )
    assert done.exit_code == 2
    assert "hints are off" in done.output


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (NotImplementedError("FileStore does not support create_webhook"), "a file store"),
        (RuntimeError("ENDPOINT_NOT_FOUND: 404 Not Found"), "no webhook API: MLflow 3.3"),
        (RuntimeError("too many 500 error responses"), "older than MLflow 3.3"),
        (RuntimeError("Invalid webhook URL scheme: 'http'"), "MLFLOW_WEBHOOK_ALLOWED_SCHEMES"),
        (RuntimeError("10.0.0.1 is not a public IP address"), "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"),
    ],
)
def test_what_a_refusal_to_register_means(error: Exception, says: str) -> None:
    from watcher.registry.webhooks import _webhook_problem

    assert says in _webhook_problem("http://mlflow:5000", error)


# --------------------------------------------------------------------------- the service


class _Scheduler:
    """Records the poll job being moved to now."""

    def __init__(self) -> None:
        self.moved = 0

    def modify_job(self, job_id: str, **_: Any) -> None:
        assert job_id == "poll"
        self.moved += 1


def test_a_hint_starts_a_poll_at_once_or_right_after_the_running_one(tmp_path: Path) -> None:
    import threading
    import time
    from typing import cast

    from watcher.deliver import Deliverer
    from watcher.pipeline import CycleReport, Pipeline
    from watcher.service import Service

    box = HintBox(SECRET)
    polled = threading.Event()
    release = threading.Event()

    class FakePipeline:
        hinted = box

        def __init__(self, store: Store) -> None:
            self.store = store

        def run_cycle(self) -> CycleReport:
            polled.set()
            release.wait(10)
            return CycleReport(ok=False, duration_ms=1.0, error="not read")

    def offer(delivery_id: str) -> None:
        body = mlflow_body()
        assert box.offer(signed(body, delivery_id, at=time.time()), body, time.time()).accepted

    with Store.open(tmp_path / "state.db") as store:
        pipeline = cast(Pipeline, FakePipeline(store))
        service = Service(Config(), pipeline, cast(Deliverer, None), Log())
        scheduler = _Scheduler()
        service.scheduler = scheduler
        waiter = threading.Thread(target=service.await_hints, daemon=True)
        waiter.start()
        try:
            offer("d-1")
            _wait(lambda: scheduler.moved == 1)
            # A hint during a poll: the poll may have read before it came, so one more follows.
            poll = threading.Thread(target=service.poll)
            poll.start()
            assert polled.wait(10)
            offer("d-2")
            _wait(lambda: service._poll_again)
            assert scheduler.moved == 1
            release.set()
            poll.join(10)
            assert scheduler.moved == 2
            # The poll recorded the hints for `status`.
            assert sm.HINTS_COUNT["accepted"].get(store.all_meta()) == 2
        finally:
            service.stopping.set()
            release.set()
            waiter.join(5)


def _wait(condition: Any, timeout: float = 10) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)
