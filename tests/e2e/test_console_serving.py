"""Where the console is served: by the daemon on its own address (the probes and /metrics
untouched), and by `mlflow-watcher console` beside cron's `run --once` on the same state file.
What its pages show is tested in the browser; here, that it is up, locked, and stops."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ConfigFor, create_versions
from tests.e2e.harness import Daemon, free_port, run_watcher, wait_for, watcher_env

TOKEN = "console-e2e-token"


def console_section(port: int) -> str:
    return f'[console]\nlisten = "127.0.0.1:{port}"\ntoken_env = "CONSOLE_TOKEN"\n'


def assert_console_up(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    login = requests.get(f"{base}/login", timeout=5)
    assert login.status_code == 200
    assert login.headers["X-Frame-Options"] == "DENY"
    assert 'id="login"' in login.text
    refused = requests.get(f"{base}/deliveries", timeout=5, allow_redirects=False)
    assert refused.status_code == 302
    assert refused.headers["Location"].endswith("/login?next=/deliveries")
    assert requests.post(f"{base}/webhooks/deploy/test", timeout=5).status_code == 401


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_daemon_serves_the_console_beside_the_probes_and_stops_it(
    client: Any, config_for: ConfigFor, model_name: str
) -> None:
    create_versions(client, model_name, 1)
    server_port, console_port = free_port(), free_port()
    extra = f'[server]\nlisten = "127.0.0.1:{server_port}"\n' + console_section(console_port)
    config = config_for(model_name, extra=extra)
    with Daemon(config, env=watcher_env({"CONSOLE_TOKEN": TOKEN})) as daemon:
        daemon.wait_started()
        started = daemon.logged("service.started")[-1]
        assert started["console"] == f"127.0.0.1:{console_port}"
        assert_console_up(console_port)
        health = f"http://127.0.0.1:{server_port}"
        assert requests.get(f"{health}/healthz", timeout=5).status_code == 200
        assert requests.get(f"{health}/metrics", timeout=5).status_code == 200
        assert requests.get(f"{health}/", timeout=5).status_code == 404
        assert daemon.terminate() == 0
    assert refused(console_port)


def test_a_console_port_in_use_fails_the_start_clearly(
    config_for: ConfigFor, model_name: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = config_for(model_name, extra=console_section(port))
        result = run_watcher("run", "-c", str(config), env=watcher_env({"CONSOLE_TOKEN": TOKEN}))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "(console.listen)" in result.stderr


def test_the_console_command_serves_beside_cron_runs(
    client: Any, config_for: ConfigFor, model_name: str
) -> None:
    create_versions(client, model_name, 1)
    port = free_port()
    config = config_for(model_name, extra=console_section(port))
    env = watcher_env({"CONSOLE_TOKEN": TOKEN})
    first = run_watcher("run", "--once", "-c", str(config), env=env)
    assert first.returncode == 0, first.stderr
    console = subprocess.Popen(
        [sys.executable, "-m", "watcher", "console", "-c", str(config)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: not refused(port), 30, "the console to listen")
        assert_console_up(port)
        client.transition_model_version_stage(model_name, "1", "Staging")
        beside = run_watcher("run", "--once", "-c", str(config), env=env)
        assert beside.returncode == 0, beside.stderr
        assert_console_up(port)
        console.send_signal(signal.SIGTERM)
        assert console.wait(timeout=30) == 0
    finally:
        if console.poll() is None:
            console.kill()
            console.wait(timeout=10)
    assert refused(port)


@pytest.mark.parametrize("listen", ["nowhere", "127.0.0.1:99999"])
def test_a_bad_console_listen_flag_is_a_usage_error(listen: str) -> None:
    result = run_watcher("console", "--listen", listen)
    assert result.returncode == 2
    assert "--listen" in result.stderr
