"""Operations, against a real MLflow server and a real receiver:

1. systemd's notify protocol on a real $NOTIFY_SOCKET datagram socket: READY=1 after start,
   STATUS= and WATCHDOG=1 with every poll, STOPPING=1 on SIGTERM;
2. the health server: /healthz, /readyz (200 after a good poll, 503 once MLflow has been down
   for 3 intervals), /metrics parsed by Prometheus' own parser, its counters matching what
   happened, behind a bearer token; `healthcheck` exits 0/1 with it;
3. the whole config from environment variables alone, working as the same config in a file;
4. two overlapping `run --once` on one state: one delivers, the other exits 4, nothing twice;
5. `status --json` reports the runs before it; `run --once --textfile` writes the metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ConfigFor, Watch, create_versions
from tests.e2e.harness import (
    SECRET,
    STAGE_EVENT,
    Daemon,
    MlflowServer,
    Receiver,
    ReceiverBehaviour,
    blocked_on_a_lock,
    free_port,
    run_watcher,
    wait_for,
    watcher_env,
)
from watcher.incremental import MODELS_SCAN_SHARE, VERSIONS_SCAN_SHARE

STAGE = STAGE_EVENT


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode().splitlines()))

    def lines(self) -> list[str]:
        with self._lock:
            return [line for _, lines in self.messages for line in lines]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


class TcpProxy:
    """A TCP forwarder in front of the MLflow server: closing it is MLflow going down for the
    watcher (connection refused), without stopping the server the other tests share."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        # shutdown() first: close() alone leaves a thread blocked in accept() accepting.
        for sock in [*([self._listener] if self._listener else []), *self._conns]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._listener = None
        self._conns = []


@pytest.fixture
def proxy(mlflow_server: MlflowServer) -> Iterator[TcpProxy]:
    p = TcpProxy(mlflow_server.port)
    p.start()
    yield p
    p.stop()


def metrics_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, keyed by (name, sorted labels), parsed by Prometheus' own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


def assert_auto_cadence(scan: str, every: float, took: float) -> None:
    """auto's rule: a full scan runs every poll (1 s here), or less often once it costs more
    than its share of max_duty (0.1 by default) of the time between two scans. (Its length
    is a measurement: on a loaded machine a tiny registry's scan can take 100 ms.)"""
    share = {"models": MODELS_SCAN_SHARE, "versions": VERSIONS_SCAN_SHARE}[scan]
    assert every >= 1.0, scan
    # took is shown rounded to the millisecond.
    assert every == pytest.approx(max(1.0, took / (0.1 * share)), abs=0.02), scan


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- 1. sd_notify


def test_notify_protocol_on_a_real_socket(
    client: Any, receiver: Receiver, model_name: str, tmp_path: Path, watch: Watch
) -> None:
    config, _ = watch()
    notify = NotifySocket(tmp_path / "notify.sock")
    env = watcher_env({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "4000000"})
    daemon = Daemon(config, env=env)
    daemon.start()
    try:
        wait_for(lambda: "READY=1" in notify.lines(), 30, "READY=1")
        daemon.wait_logged("poll.finished", count=3)
        wait_for(
            lambda: any(line.startswith("STATUS=last poll ok") for line in notify.lines()),
            10,
            "a STATUS= line after a poll",
        )
        assert daemon.terminate() == 0
        wait_for(lambda: "STOPPING=1" in notify.lines(), 5, "STOPPING=1")
    finally:
        daemon.ensure_stopped()
        notify.close()
    lines = notify.lines()
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    assert lines.index("READY=1") < next(
        i for i, line in enumerate(lines) if line.startswith("STATUS=last poll")
    )
    polls = len(daemon.logged("poll.finished"))
    # One ping after every poll, more from the heartbeat; all while running, none after stop.
    assert lines.count("WATCHDOG=1") >= polls
    assert "WATCHDOG=1" not in lines[lines.index("STOPPING=1") :]
    status = next(line for line in lines if line.startswith("STATUS=last poll ok"))
    assert "1 models, 1 versions" in status


def test_no_watchdog_pings_unless_systemd_asks_for_them(
    config_for: ConfigFor, model_name: str, tmp_path: Path
) -> None:
    config = config_for(model_name)
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = Daemon(config, env=watcher_env({"NOTIFY_SOCKET": str(notify.path)}))
    daemon.start()
    try:
        daemon.wait_logged("poll.finished", count=2)
        assert daemon.terminate() == 0
        wait_for(lambda: "STOPPING=1" in notify.lines(), 5, "STOPPING=1")
    finally:
        daemon.ensure_stopped()
        notify.close()
    assert "READY=1" in notify.lines()
    assert "WATCHDOG=1" not in notify.lines()


# --------------------------------------------------------------------------- 2. health server


def test_health_readiness_and_metrics_follow_what_happened(
    client: Any,
    proxy: TcpProxy,
    receiver: Receiver,
    config_for: ConfigFor,
    model_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_versions(client, model_name, 2)
    port = free_port()
    config = config_for(
        model_name,
        tracking_uri=proxy.url,
        # The scans' auto rule below is max_duty's alone: no hot set takes a share of it.
        watch_extra='hot_window = "off"\n',
        extra=f'[server]\nlisten = "127.0.0.1:{port}"\nmetrics_token_env = "METRICS_TOKEN"\n',
    )
    env = watcher_env({"METRICS_TOKEN": "scrape-token"})
    base = f"http://127.0.0.1:{port}"
    daemon = Daemon(config, env=env)
    daemon.start()
    try:
        daemon.wait_started()
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        wait_for(lambda: requests.get(f"{base}/readyz", timeout=5).status_code == 200, 20, "ready")
        healthcheck = run_watcher("healthcheck", "-c", str(config), env=env)
        assert healthcheck.returncode == 0, healthcheck.stderr

        client.transition_model_version_stage(model_name, "1", "Staging")
        receiver.wait_for_count(1)
        daemon.wait_logged("delivery.succeeded")

        assert requests.get(f"{base}/metrics", timeout=5).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert requests.get(f"{base}/metrics", headers=wrong, timeout=5).status_code == 401
        auth = {"Authorization": "Bearer scrape-token"}
        answer = requests.get(f"{base}/metrics", headers=auth, timeout=5)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        m = metrics_of(answer.text)
        ok_polls = sample(m, "mlflow_watcher_polls_total", result="ok")
        assert ok_polls >= 2
        assert sample(m, "mlflow_watcher_polls_total", result="failed") == 0
        assert sample(m, "mlflow_watcher_poll_duration_seconds_count") == ok_polls
        assert sample(m, "mlflow_watcher_events_detected_total", type=STAGE) == 1
        assert (
            sample(
                m,
                "mlflow_watcher_events_detected_total",
                type="MODEL_VERSION_TRANSITIONED_TO_STAGING",
            )
            == 1
        )
        assert sample(m, "mlflow_watcher_events_detected_total", type="MODEL_VERSION_CREATED") == 0
        delivered = ("mlflow_watcher_deliveries_total", "deploy")
        assert sample(m, delivered[0], webhook=delivered[1], result="delivered") == 1
        assert sample(m, delivered[0], webhook=delivered[1], result="retrying") == 0
        assert sample(m, "mlflow_watcher_outbox_pending", webhook="deploy") == 0
        assert sample(m, "mlflow_watcher_outbox_dead", webhook="deploy") == 0
        assert sample(m, "mlflow_watcher_oldest_pending_age_seconds") == 0
        assert sample(m, "mlflow_watcher_models_watched") == 1
        assert sample(m, "mlflow_watcher_versions_watched") == 2
        last_ok = sample(m, "mlflow_watcher_last_successful_poll_timestamp_seconds")
        assert time.time() - 10 < last_ok <= time.time() + 1
        assert sample(m, "mlflow_watcher_last_poll_success") == 1
        assert sample(m, "mlflow_watcher_last_poll_timestamp_seconds") >= last_ok
        assert sample(m, "mlflow_watcher_poll_interval_seconds") > 0
        # The daemon's sender times each request: the one delivery, by its webhook.
        assert sample(m, "mlflow_watcher_delivery_duration_seconds_count", webhook="deploy") == 1
        failing = "mlflow_watcher_delivery_failing_since_timestamp_seconds"
        assert sample(m, failing, webhook="deploy") == 0
        build = [k for k in m if k[0] == "mlflow_watcher_build_info"]
        assert build
        assert ("version", version("mlflow-registry-watcher")) in build[0][1]
        assert not any(model_name in str(key) for key in m), "no model names in labels"

        # The receiver fails: the next event waits in the outbox, and the gauges say so.
        receiver.behaviour = ReceiverBehaviour(status=500)
        client.transition_model_version_stage(model_name, "2", "Staging")
        daemon.wait_logged("delivery.failed")
        m = metrics_of(requests.get(f"{base}/metrics", headers=auth, timeout=5).text)
        assert (
            sample(m, "mlflow_watcher_deliveries_total", webhook="deploy", result="retrying") >= 1
        )
        assert sample(m, "mlflow_watcher_outbox_pending", webhook="deploy") == 1
        assert sample(m, "mlflow_watcher_oldest_pending_age_seconds") > 0
        assert time.time() - 60 < sample(m, failing, webhook="deploy") <= time.time() + 1

        # status works beside the running daemon, which holds the lock.
        status = run_watcher("status", "--json", "-c", str(config), env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["deliveries"]["deploy"]["pending"] == 1
        # The cadences the daemon chose: auto's rule, from the scans' measured lengths.
        scans = json.loads(status.stdout)["scans"]
        for scan in ("models", "versions"):
            assert_auto_cadence(scan, scans[scan]["every_s"], scans[scan]["took_s"])
            assert_auto_cadence(
                scan,
                sample(m, "mlflow_watcher_scan_interval_seconds", scan=scan),
                sample(m, "mlflow_watcher_scan_duration_seconds", scan=scan),
            )
        # From a shell without the daemon's secrets too: status sends nothing.
        bare = {k: v for k, v in env.items() if k not in ("E2E_SECRET", "METRICS_TOKEN")}
        human = run_watcher("status", "-c", str(config), env=bare)
        assert human.returncode == 0, human.stderr
        assert re.search(r"scans: +models every \d+s \(last took", human.stdout), human.stdout

        # MLflow down: ready while the last good poll is recent, 503 after 3 intervals.
        proxy.stop()
        went_down = time.monotonic()
        wait_for(
            lambda: requests.get(f"{base}/readyz", timeout=5).status_code == 503, 20, "not ready"
        )
        assert time.monotonic() - went_down >= 2.0  # 3 intervals of 1 s, to the second
        assert "no successful poll" in requests.get(f"{base}/readyz", timeout=5).text
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200, "still alive"
        unready = run_watcher("healthcheck", "-c", str(config), env=env)
        assert unready.returncode == 1
        [line] = unready.stderr.strip().splitlines()
        assert line.startswith("mlflow-watcher: unhealthy:")
        assert "503" in line
        m = metrics_of(requests.get(f"{base}/metrics", headers=auth, timeout=5).text)
        failed = sample(m, "mlflow_watcher_polls_total", result="failed")
        assert failed >= 2
        assert sample(m, "mlflow_watcher_last_successful_poll_timestamp_seconds") <= last_ok + 60

        proxy.start()
        wait_for(
            lambda: requests.get(f"{base}/readyz", timeout=5).status_code == 200, 40, "ready again"
        )
        rss = peak_rss_kib(daemon.proc.pid)  # type: ignore[union-attr]
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_stopped()
    with capsys.disabled():  # the figure the pod's memory request is sized from
        print(f"\n[daemon peak RSS: {rss / 1024:.0f} MiB]", end=" ")


def test_a_bad_listen_address_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "watcher.toml"
    config.write_text('[server]\nlisten = "localhost"\n')
    result = run_watcher("check-config", "-c", str(config))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("mlflow-watcher: config error: server.listen: got 'localhost'")
    flag = run_watcher("run", "--listen", "nonsense", "-c", str(tmp_path / "none.toml"))
    assert flag.returncode == 2


# --------------------------------------------------------------------------- 3. env only


def test_the_whole_config_from_the_environment_works_as_a_file(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    create_versions(client, model_name, 1)
    state = tmp_path / "state.db"
    port = free_port()
    webhook = {
        "name": "deploy",
        "url": receiver.url,
        "events": [STAGE],
        "secret_env": "E2E_SECRET",
        "timeout": "3s",
        "retry": {"max_attempts": 5},
    }
    env_only = watcher_env(
        {
            "WATCHER_MLFLOW__TRACKING_URI": mlflow_server.url,
            "WATCHER_MLFLOW__TIMEOUT": "5s",
            "WATCHER_WATCH__INTERVAL": "1s",
            "WATCHER_WATCH__MODELS": json.dumps([model_name]),
            "WATCHER_STATE__PATH": str(state),
            "WATCHER_LOG__LEVEL": "info",
            "WATCHER_DELIVERY__INITIAL_DELAY": "200ms",
            "WATCHER_DELIVERY__MAX_DELAY": "1s",
            "WATCHER_DELIVERY__DEAD_ON": "[400, 404]",
            "WATCHER_SERVER__LISTEN": f"127.0.0.1:{port}",
            "WATCHER_WEBHOOKS": json.dumps([webhook]),
        }
    )
    file_config = tmp_path / "file" / "watcher.toml"
    file_config.parent.mkdir()
    file_config.write_text(
        f"""
[mlflow]
tracking_uri = "{mlflow_server.url}"
timeout = "5s"
[watch]
interval = "1s"
models = ["{model_name}"]
[state]
path = "{state}"
[log]
level = "info"
[delivery]
initial_delay = "200ms"
max_delay = "1s"
dead_on = [400, 404]
[server]
listen = "127.0.0.1:{port}"
[[webhooks]]
name = "deploy"
url = "{receiver.url}"
events = ["{STAGE}"]
secret_env = "E2E_SECRET"
timeout = "3s"
retry = {{ max_attempts = 5 }}
"""
    )
    from_env = run_watcher("check-config", env=env_only, cwd=tmp_path)
    from_file = run_watcher("check-config", "-c", str(file_config), cwd=tmp_path)
    assert from_env.returncode == from_file.returncode == 0, from_env.stderr + from_file.stderr
    assert "from embedded defaults" in from_env.stdout.splitlines()[0]
    assert from_env.stdout.splitlines()[1:] == from_file.stdout.splitlines()[1:]

    # And it runs: baseline, then one signed delivery, no file anywhere.
    assert not list(tmp_path.glob("*.toml"))
    first = run_watcher("run", "--once", env=env_only, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    client.transition_model_version_stage(model_name, "1", "Production")
    second = run_watcher("run", "--once", env=env_only, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    [delivery] = receiver.deliveries()
    assert delivery.json["to_stage"] == "Production"
    assert delivery.header("X-MLflow-Signature")
    # The environment beats the file.
    overridden = run_watcher(
        "check-config",
        "-c",
        str(file_config),
        env={**watcher_env(), "WATCHER_WATCH__INTERVAL": "7s"},
    )
    assert 'interval = "7s"' in overridden.stdout


# --------------------------------------------------------------------------- 4. overlapping


def test_overlapping_once_runs_deliver_once(
    client: Any, receiver: Receiver, model_name: str, tmp_path: Path, watch: Watch
) -> None:
    config, _ = watch(webhook_timeout="90s")
    assert run_watcher("run", "--once", "-c", str(config)).returncode == 0
    client.transition_model_version_stage(model_name, "1", "Staging")
    release = threading.Event()
    receiver.behaviour = ReceiverBehaviour(hold=release)  # the first run holds the lock meanwhile

    def once(*extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "--once", *extra, "-c", str(config)],
            env=watcher_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = once()
    try:
        receiver.wait_for_count(1, timeout=60)  # the first run is delivering, with the lock held
        second = once()
        waiting = once("--wait-for-lock")
        second_out, second_err = second.communicate(timeout=60)
        assert first.poll() is None, "the second run did not wait for the first"
        assert second.returncode == 4
        [line] = second_err.strip().splitlines()
        assert line.startswith("mlflow-watcher: error: another watcher (pid")
        assert second_out == ""
        wait_for(lambda: blocked_on_a_lock(waiting.pid), 60, "--wait-for-lock to block")
    finally:
        release.set()
    assert first.wait(timeout=30) == 0, first.communicate()[1]
    assert waiting.wait(timeout=60) == 0, waiting.communicate()[1]
    receiver.behaviour = ReceiverBehaviour()
    assert run_watcher("run", "--once", "-c", str(config)).returncode == 0
    assert len(receiver.deliveries()) == 1, "delivered once, by one run"


# --------------------------------------------------------------------------- 5. status


def test_status_reports_the_runs_before_it(
    client: Any,
    proxy: TcpProxy,
    receiver: Receiver,
    config_for: ConfigFor,
    model_name: str,
    tmp_path: Path,
) -> None:
    create_versions(client, model_name, 3)
    config = config_for(model_name, tracking_uri=proxy.url)
    missing = run_watcher("status", "-c", str(config))
    assert missing.returncode == 1
    assert "no state file" in missing.stderr

    assert run_watcher("run", "--once", "-c", str(config)).returncode == 0
    client.transition_model_version_stage(model_name, "1", "Staging")
    receiver.behaviour = ReceiverBehaviour(status=503)
    textfile = tmp_path / "textfile" / "watcher.prom"
    textfile.parent.mkdir()
    failing = run_watcher("run", "--once", "--textfile", str(textfile), "-c", str(config))
    assert failing.returncode == 3

    result = run_watcher("status", "--json", "-c", str(config))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["last_poll"]["result"] == "ok"
    assert status["last_poll"]["duration_ms"] >= 0
    assert status["last_poll"]["age_s"] < 60
    assert (status["models"], status["versions"]) == (1, 3)
    assert status["baseline_at"] is not None
    assert status["deliveries"] == {"deploy": {"pending": 1, "dead": 0, "delivered": 0}}
    assert (status["pending"], status["dead"]) == (1, 0)
    assert status["oldest_pending"]["age_s"] is not None
    assert "deploy" in status["oldest_pending"]["by_webhook"]

    # The textfile of that run: node-exporter's format, this run's counters, the state's gauges.
    assert [p.name for p in textfile.parent.iterdir()] == ["watcher.prom"], "no temp file left"
    m = metrics_of(textfile.read_text())
    assert sample(m, "mlflow_watcher_polls_total", result="ok") == 1
    assert sample(m, "mlflow_watcher_events_detected_total", type=STAGE) == 1
    assert sample(m, "mlflow_watcher_deliveries_total", webhook="deploy", result="retrying") == 1
    assert sample(m, "mlflow_watcher_outbox_pending", webhook="deploy") == 1

    # MLflow down: the failed poll is what status shows, with the last good one.
    proxy.stop()
    receiver.behaviour = ReceiverBehaviour()
    down = run_watcher("run", "--once", "-c", str(config))
    assert down.returncode == 1
    status = json.loads(run_watcher("status", "--json", "-c", str(config)).stdout)
    assert status["last_poll"]["result"] == "failed"
    assert status["last_poll"]["error"]
    assert status["last_poll"]["last_ok_at"] is not None
    assert status["deliveries"]["deploy"] == {"pending": 0, "dead": 0, "delivered": 1}
    assert status["oldest_pending"]["age_s"] is None

    human = run_watcher("status", "-c", str(config))
    assert human.returncode == 0
    assert "failed" in human.stdout
    assert "1 models, 3 versions" in human.stdout
    assert os.environ.get("E2E_SECRET", SECRET) not in human.stdout


def test_the_listen_flag_beats_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    config = tmp_path / "watcher.toml"
    config.write_text(
        '[mlflow]\ntracking_uri = "http://127.0.0.1:9"\n'
        f'[state]\npath = "{tmp_path / "state.db"}"\n'
        f'[server]\nlisten = "127.0.0.1:{file_port}"\n'
    )
    env = watcher_env({"WATCHER_SERVER__LISTEN": f"127.0.0.1:{env_port}"})
    args = ["run", "--listen", f"127.0.0.1:{flag_port}", "-c", str(config)]
    daemon = subprocess.Popen(
        [sys.executable, "-m", "watcher", *args],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:

        def healthy() -> bool:
            try:
                url = f"http://127.0.0.1:{flag_port}/healthz"
                return requests.get(url, timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(healthy, 30, "/healthz on the flag's port")
        for port in (env_port, file_port):
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        # MLflow is unreachable: alive, but not ready.
        assert requests.get(f"http://127.0.0.1:{flag_port}/readyz", timeout=2).status_code == 503
        daemon.terminate()
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
