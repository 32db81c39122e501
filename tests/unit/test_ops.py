"""The operations parts on their own: the notify protocol, [server] config, metrics, the health
server. Real sockets, a real state file; the daemon around them is tested end to end."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port
from tests.helpers import load_text as load
from watcher.config import Config, Secret, ServerConfig, WatchConfig, WebhookConfig
from watcher.deliver import Outcome, Result
from watcher.errors import ConfigError, WatcherError
from watcher.health import HealthServer
from watcher.metrics import Metrics
from watcher.model import Event, EventType
from watcher.notify import Notifier
from watcher.pipeline import CycleReport
from watcher.state_meta import parse_time
from watcher.store import Store

# --------------------------------------------------------------------------- notify


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_sends_one_datagram_per_message(tmp_path: Path, abstract: bool) -> None:
    name = f"watcher-test-{uuid.uuid4().hex}"
    address: str | bytes = b"\0" + name.encode() if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(2)
        env = {"NOTIFY_SOCKET": "@" + name if abstract else str(address)}
        notifier = Notifier(env)
        assert notifier.enabled
        assert notifier.ready("started\nsecond line")
        assert notifier.watchdog()
        assert notifier.stopping()
        messages = [listener.recv(4096).decode() for _ in range(3)]
        notifier.close()
    ready = messages[0].splitlines()
    assert ready[0] == "READY=1"
    assert "STATUS=started second line" in ready  # a status is always one line
    assert f"MAINPID={os.getpid()}" in ready
    assert messages[1] == "WATCHDOG=1"
    assert messages[2].splitlines()[0] == "STOPPING=1"


def test_notifier_does_nothing_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_interval is None


def test_notifier_survives_a_socket_that_is_gone(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert notifier.enabled
    assert notifier.watchdog() is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    env: dict[str, str], expected: float | None
) -> None:
    assert Notifier(env).watchdog_interval == expected


# --------------------------------------------------------------------------- [server] config


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),  # noqa: S104
        ("[::1]:9464", ("::1", 9464)),
        ("[::]:80", ("::", 80)),
        ("localhost:9464", ("localhost", 9464)),
        ("", None),
    ],
)
def test_server_listen_accepts_host_and_port(
    tmp_path: Path, listen: str, expected: tuple[str, int] | None
) -> None:
    assert load(tmp_path, f'[server]\nlisten = "{listen}"\n').server.listen == expected


@pytest.mark.parametrize("listen", ["9464", "localhost", ":9464", "::1:9464", "host:0", "h:70000"])
def test_a_bad_listen_value_is_a_config_error_with_its_key(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f'[server]\nlisten = "{listen}"\n')
    [problem] = info.value.problems
    assert problem.startswith(f"server.listen: got {listen!r}, expected an address to listen on")


def test_the_server_is_off_by_default_and_set_from_the_environment(tmp_path: Path) -> None:
    assert load(tmp_path, "").server == ServerConfig()
    config = load(tmp_path, "", {"WATCHER_SERVER__LISTEN": "127.0.0.1:9100"})
    assert config.server.listen == ("127.0.0.1", 9100)
    assert config.server.display_listen == "127.0.0.1:9100"


def test_metrics_token_from_a_credentials_file(tmp_path: Path) -> None:
    (tmp_path / "metrics-token").write_text("s3cret\n")
    config = load(
        tmp_path,
        '[server]\nlisten = "[::1]:9464"\n'
        'metrics_token_file = "${CREDENTIALS_DIRECTORY}/metrics-token"\n',
        {"CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert config.server.metrics_token is not None
    assert config.server.metrics_token.reveal() == "s3cret"
    assert config.server.display_listen == "[::1]:9464"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, '[server]\nmetrics_token_env = "UNSET_TOKEN"\n')
    assert info.value.problems[0].startswith("server.metrics_token_env: got 'UNSET_TOKEN'")


# --------------------------------------------------------------------------- metrics


def _config(*names: str) -> Config:
    return Config(webhooks=tuple(WebhookConfig(name=n, url="http://127.0.0.1/h") for n in names))


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _event(event_type: EventType) -> Event:
    return Event(event_id=uuid.uuid4().hex, type=event_type, model_name="m", timestamp=1)


def test_counters_follow_reports_and_delivery_outcomes(tmp_path: Path) -> None:
    with Store.open(tmp_path / "state.db") as store:
        metrics = Metrics(_config("deploy", "slack"), store)
        metrics.observe_cycle(CycleReport(ok=True, duration_ms=20.0))
        metrics.observe_cycle(
            CycleReport(
                ok=True,
                duration_ms=30.0,
                events=[_event(EventType.MODEL_VERSION_CREATED)] * 2,
            )
        )
        metrics.observe_cycle(CycleReport(ok=False, duration_ms=5.0, error="down"))
        metrics.observe_delivery("deploy", Outcome.DELIVERED)
        metrics.observe_delivery("slack", Outcome.RETRYING)
        metrics.observe_delivery("slack", Outcome.DEAD)
        m = _samples(generate_latest(metrics.registry).decode())
    assert m[("mlflow_watcher_polls_total", (("result", "ok"),))] == 2
    assert m[("mlflow_watcher_polls_total", (("result", "failed"),))] == 1
    assert m[("mlflow_watcher_poll_duration_seconds_count", ())] == 3
    assert m[("mlflow_watcher_poll_duration_seconds_sum", ())] == pytest.approx(0.055)
    created = ("mlflow_watcher_events_detected_total", (("type", "MODEL_VERSION_CREATED"),))
    assert m[created] == 2
    key = "mlflow_watcher_deliveries_total"
    assert m[(key, (("result", "delivered"), ("webhook", "deploy")))] == 1
    assert m[(key, (("result", "retrying"), ("webhook", "slack")))] == 1
    assert m[(key, (("result", "dead"), ("webhook", "slack")))] == 1
    assert m[(key, (("result", "dead"), ("webhook", "deploy")))] == 0
    # Gauges from an empty state: zeros, and no last good poll yet.
    assert m[("mlflow_watcher_outbox_pending", (("webhook", "deploy"),))] == 0
    assert m[("mlflow_watcher_oldest_pending_age_seconds", ())] == 0
    assert m[("mlflow_watcher_versions_watched", ())] == 0
    assert not any(name == "mlflow_watcher_last_successful_poll_timestamp_seconds" for name, _ in m)


def test_gauges_read_the_state_at_scrape_time(tmp_path: Path) -> None:
    with Store.open(tmp_path / "state.db") as store:
        metrics = Metrics(_config(), store)
        store.set_meta({"models": "4", "versions": "17", "last_poll_ok_at": "2026-01-02T03:04:05Z"})
        store.set_meta(
            {
                "models_scan_every_s": "33.5",
                "versions_scan_every_s": "214.0",
                "models_scan_took_s": "1.0",
                "versions_scan_took_s": "12.8",
            }
        )
        m = _samples(generate_latest(metrics.registry).decode())
    assert m[("mlflow_watcher_scan_interval_seconds", (("scan", "models"),))] == 33.5
    assert m[("mlflow_watcher_scan_interval_seconds", (("scan", "versions"),))] == 214.0
    assert m[("mlflow_watcher_scan_duration_seconds", (("scan", "versions"),))] == 12.8
    assert m[("mlflow_watcher_models_watched", ())] == 4
    assert m[("mlflow_watcher_versions_watched", ())] == 17
    assert m[("mlflow_watcher_last_successful_poll_timestamp_seconds", ())] == parse_time(
        "2026-01-02T03:04:05Z"
    )
    assert parse_time("2026-01-02T03:04:05Z") == 1767323045.0
    assert parse_time("garbage") is None


def test_the_last_poll_and_the_poll_interval_are_gauges(tmp_path: Path) -> None:
    config = replace(_config(), watch=WatchConfig(interval=45.0))
    with Store.open(tmp_path / "state.db") as store:
        metrics = Metrics(config, store)
        before = _samples(generate_latest(metrics.registry).decode())
        store.set_meta(
            {
                "last_poll_at": "2026-01-02T03:09:05Z",
                "last_poll_ok_at": "2026-01-02T03:04:05Z",
                "last_poll_result": "failed",
            }
        )
        failed = _samples(generate_latest(metrics.registry).decode())
        store.set_meta({"last_poll_ok_at": "2026-01-02T03:09:05Z", "last_poll_result": "ok"})
        ok = _samples(generate_latest(metrics.registry).decode())
    assert before[("mlflow_watcher_poll_interval_seconds", ())] == 45.0
    # Before the first poll there is no last poll to report, rather than a made-up one.
    assert ("mlflow_watcher_last_poll_success", ()) not in before
    assert ("mlflow_watcher_last_poll_timestamp_seconds", ()) not in before
    assert failed[("mlflow_watcher_last_poll_success", ())] == 0
    assert failed[("mlflow_watcher_last_poll_timestamp_seconds", ())] == parse_time(
        "2026-01-02T03:09:05Z"
    )
    assert ok[("mlflow_watcher_last_poll_success", ())] == 1


def test_failing_since_marks_the_first_failure_after_a_success(tmp_path: Path) -> None:
    key = ("mlflow_watcher_delivery_failing_since_timestamp_seconds", (("webhook", "deploy"),))
    with Store.open(tmp_path / "state.db") as store:
        metrics = Metrics(_config("deploy"), store)
        seen = [_samples(generate_latest(metrics.registry).decode())[key]]
        for outcome in (Outcome.RETRYING, Outcome.DEAD, Outcome.DELIVERED, Outcome.DEAD):
            before = time.time()
            metrics.observe_delivery("deploy", outcome)
            seen.append(_samples(generate_latest(metrics.registry).decode())[key])
            if outcome is Outcome.RETRYING:
                assert before <= seen[-1] <= time.time()
    assert seen[0] == 0  # exported from the start, as "not failing"
    assert seen[2] == seen[1]  # a second failure keeps the start of the run
    assert seen[3] == 0  # a success ends it
    assert seen[4] >= seen[1]  # the next failure starts a new run


class _Answers:
    """A DeliverySender answering with the given results, in turn."""

    def __init__(self, *results: Result) -> None:
        self.results = list(results)
        self.closed = False

    def post(self, webhook: WebhookConfig, event: Event, delivery_id: str) -> Result:
        return self.results.pop(0)

    def close(self) -> None:
        self.closed = True


def test_a_timed_sender_observes_requests_made_not_bodies_that_did_not_render(
    tmp_path: Path,
) -> None:
    webhook = WebhookConfig(name="deploy", url="http://127.0.0.1/h")
    inner = _Answers(
        Result(200, None, 40.0),
        Result(None, "timed out after 10s", 10_000.0),
        Result(None, "cannot render the body: bad template", 0.0, permanent=True),
    )
    with Store.open(tmp_path / "state.db") as store:
        metrics = Metrics(_config("deploy"), store)
        sender = metrics.timed(inner)
        answers = [
            sender.post(webhook, _event(EventType.MODEL_VERSION_CREATED), "d") for _ in "abc"
        ]
        sender.close()
        m = _samples(generate_latest(metrics.registry).decode())
    assert [a.latency_ms for a in answers] == [40.0, 10_000.0, 0.0]  # passed on as they were
    assert inner.closed
    labels = (("webhook", "deploy"),)
    assert m[("mlflow_watcher_delivery_duration_seconds_count", labels)] == 2
    assert m[("mlflow_watcher_delivery_duration_seconds_sum", labels)] == pytest.approx(10.04)
    le = "mlflow_watcher_delivery_duration_seconds_bucket"
    assert m[(le, (("le", "0.05"), ("webhook", "deploy")))] == 1
    assert m[(le, (("le", "10.0"), ("webhook", "deploy")))] == 2


def test_textfile_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "watcher.prom"
    target.write_text("old contents\n")
    with Store.open(tmp_path / "state.db") as store:
        metrics = Metrics(_config("deploy"), store)
        metrics.observe_cycle(CycleReport(ok=True, duration_ms=1.0))
        metrics.write_textfile(target)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("watcher.prom")] == [
        "watcher.prom"
    ]
    assert _samples(target.read_text())[("mlflow_watcher_polls_total", (("result", "ok"),))] == 1


# --------------------------------------------------------------------------- health server


@contextmanager
def _serving(tmp_path: Path, ready: tuple[bool, str], token: str | None = None) -> Iterator[str]:
    """A started health server over a real state file, as its base URL; stopped and closed
    after."""
    store = Store.open(tmp_path / "state.db")
    metrics = Metrics(_config(), store)

    def crash() -> tuple[bool, str]:
        raise RuntimeError("boom")

    server = HealthServer(
        ServerConfig(
            listen=("127.0.0.1", free_port()),
            metrics_token=Secret(token, "test") if token else None,
        ),
        alive=crash if ready == (False, "crash") else lambda: (True, "ok"),
        ready=lambda: ready,
        metrics=metrics,
    )
    server.start()
    host, port = server.address
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        store.close()


def test_probes_answer_200_or_503_with_the_reason(tmp_path: Path) -> None:
    with _serving(tmp_path, (False, "no poll has read the registry yet")) as base:
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        answer = requests.get(f"{base}/readyz", timeout=5)
        assert (answer.status_code, answer.text) == (503, "no poll has read the registry yet\n")
        assert requests.get(f"{base}/metrics", timeout=5).status_code == 200
        assert requests.get(f"{base}/", timeout=5).status_code == 404


def test_a_crashing_probe_is_a_failing_probe(tmp_path: Path) -> None:
    with _serving(tmp_path, (False, "crash")) as base:
        answer = requests.get(f"{base}/healthz", timeout=5)
        assert answer.status_code == 503
        assert "RuntimeError: boom" in answer.text


def test_metrics_want_the_bearer_token_and_probes_do_not(tmp_path: Path) -> None:
    with _serving(tmp_path, (True, "ok"), token="tok") as base:
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
        denied = requests.get(f"{base}/metrics", timeout=5)
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"].startswith("Bearer")
        bad = requests.get(f"{base}/metrics", headers={"Authorization": "Basic tok"}, timeout=5)
        assert bad.status_code == 401
        good = requests.get(f"{base}/metrics", headers={"Authorization": "Bearer tok"}, timeout=5)
        assert good.status_code == 200
        assert "mlflow_watcher_build_info" in good.text


def test_a_port_in_use_fails_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with Store.open(tmp_path / "state.db") as store:
            server = HealthServer(
                ServerConfig(listen=("127.0.0.1", port)),
                alive=lambda: (True, "ok"),
                ready=lambda: (True, "ok"),
                metrics=Metrics(_config(), store),
            )
            with pytest.raises(WatcherError, match=r"cannot listen on 127\.0\.0\.1"):
                server.start()
