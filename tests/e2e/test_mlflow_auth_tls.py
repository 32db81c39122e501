"""Reading MLflow through a reverse proxy: TLS with a private CA, and a bearer token.

The proxy is real (a threaded http.server on 127.0.0.1 that forwards GETs to the real
`mlflow server` with `requests`); the watcher reaches it through MLflow's own credentials
plumbing, so MLFLOW_TRACKING_SERVER_CERT_PATH and MLFLOW_TRACKING_TOKEN are what it honours.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import create_versions
from tests.e2e.harness import (
    Daemon,
    LocalService,
    MlflowServer,
    QuietHandler,
    Receiver,
    run_watcher,
    wait_for,
    watcher_env,
    write_config,
)

TOKEN = "proxy-token-7b3e91d2c4"
WRONG = "not-the-token-51aa"

# Hop-by-hop or re-encoded by `requests`: the proxy sets its own framing.
_DROPPED = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"}


class Proxy(LocalService):
    """A reverse proxy to the MLflow server, optionally over TLS, optionally demanding a token."""

    def __init__(
        self, upstream: str, tls: ssl.SSLContext | None = None, token: str | None = None
    ) -> None:
        super().__init__(tls=tls)
        self.upstream = upstream
        self.token = token
        self.seen: list[tuple[str, str | None]] = []
        """(path, Authorization header) of every request that reached the proxy."""
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.base_url

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                with proxy._lock:
                    proxy.seen.append((self.path, auth))
                if proxy.token is not None and auth != f"Bearer {proxy.token}":
                    body = json.dumps(
                        {"error_code": "UNAUTHENTICATED", "message": "You are not authenticated."}
                    ).encode()
                    self._answer(401, {"Content-Type": "application/json"}, body)
                    return
                upstream = requests.get(
                    proxy.upstream + self.path,
                    headers={
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in {"host", "authorization", *_DROPPED}
                    },
                    timeout=10,
                )
                headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROPPED}
                self._answer(upstream.status_code, headers, upstream.content)

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def tls_proxy(
    mlflow_server: MlflowServer,
    private_ca: tuple[Path, ssl.SSLContext],
) -> Iterator[Proxy]:
    proxy = Proxy(mlflow_server.url, tls=private_ca[1])
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def token_proxy(mlflow_server: MlflowServer) -> Iterator[Proxy]:
    proxy = Proxy(mlflow_server.url, token=TOKEN)
    proxy.start()
    yield proxy
    proxy.stop()


def _watch(client: Any, tmp_path: Path, proxy: Proxy, receiver: Receiver, model: str) -> Path:
    """A model with one version, and a config watching it through the proxy."""
    create_versions(client, model, 1)
    return _config(tmp_path, proxy, receiver, model)


def _config(tmp_path: Path, proxy: Proxy, receiver: Receiver, model: str, **kw: Any) -> Path:
    return write_config(
        tmp_path / "watcher.toml",
        tracking_uri=proxy.url,
        webhook_url=receiver.url,
        state=tmp_path / "state.db",
        models=model,
        **kw,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_tls_proxy_with_a_private_ca_is_trusted_through_mlflow_cert_path(
    client: Any,
    tls_proxy: Proxy,
    receiver: Receiver,
    private_ca: tuple[Path, ssl.SSLContext],
    model_name: str,
    tmp_path: Path,
) -> None:
    config = _watch(client, tmp_path, tls_proxy, receiver, model_name)

    untrusted = run_watcher("run", "--once", "-c", str(config))
    line = _one_error_line(untrusted)
    assert "CERTIFICATE_VERIFY_FAILED" in line or "certificate verify failed" in line, line
    assert receiver.deliveries() == []

    env = watcher_env({"MLFLOW_TRACKING_SERVER_CERT_PATH": str(private_ca[0])})
    baseline = run_watcher("run", "--once", "-c", str(config), env=env)
    assert baseline.returncode == 0, baseline.stderr
    assert tls_proxy.seen, "the watcher read through the proxy"
    client.transition_model_version_stage(model_name, "1", "Staging")
    delivered = run_watcher("run", "--once", "-c", str(config), env=env)
    assert delivered.returncode == 0, delivered.stderr
    [delivery] = receiver.deliveries()
    assert delivery.json["model_name"] == model_name
    assert delivery.json["to_stage"] == "Staging"


def test_bearer_token_is_sent_and_a_wrong_one_is_a_401_without_leaking(
    client: Any,
    token_proxy: Proxy,
    receiver: Receiver,
    model_name: str,
    tmp_path: Path,
) -> None:
    config = _watch(client, tmp_path, token_proxy, receiver, model_name)

    wrong = run_watcher(
        "run", "--once", "-c", str(config), env=watcher_env({"MLFLOW_TRACKING_TOKEN": WRONG})
    )
    line = _one_error_line(wrong)
    assert "401 Unauthorized" in line, line
    assert WRONG not in wrong.stderr
    verbose = run_watcher(
        "run",
        "--once",
        "--verbose",
        "-c",
        str(config),
        env=watcher_env({"MLFLOW_TRACKING_TOKEN": WRONG}),
    )
    assert verbose.returncode == 1, verbose.stderr
    assert "401" in verbose.stderr
    assert WRONG not in verbose.stderr
    assert any("/api/2.0/mlflow/" in p for p, _ in token_proxy.seen)
    assert {a for _, a in token_proxy.seen} == {f"Bearer {WRONG}"}

    env = watcher_env({"MLFLOW_TRACKING_TOKEN": TOKEN})
    baseline = run_watcher("run", "--once", "--verbose", "-c", str(config), env=env)
    assert baseline.returncode == 0, baseline.stderr
    assert TOKEN not in baseline.stderr
    client.transition_model_version_stage(model_name, "1", "Production")
    delivered = run_watcher("run", "--once", "--verbose", "-c", str(config), env=env)
    assert delivered.returncode == 0, delivered.stderr
    assert TOKEN not in delivered.stderr
    [delivery] = receiver.deliveries()
    assert delivery.json["model_name"] == model_name
    assert delivery.json["to_stage"] == "Production"
    assert TOKEN not in json.dumps(delivery.headers) + delivery.body.decode()


def test_daemon_with_a_wrong_token_stays_up_and_logs_failures_sparsely(
    token_proxy: Proxy, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, token_proxy, receiver, model_name, interval="200ms")
    daemon = Daemon(config, env=watcher_env({"MLFLOW_TRACKING_TOKEN": WRONG}))
    daemon.start()
    try:
        # Four failed polls in a row (the 4th is logged); the daemon backs off between them.
        wait_for(
            lambda: any(r.get("repeated") == 4 for r in daemon.logged("poll.failed")),
            30,
            "the 4th failed poll",
        )
        assert daemon.alive(), daemon.lines[-5:]
        failed = daemon.logged("poll.failed")
        polls = sum(1 for path, _ in token_proxy.seen if "/api/2.0/mlflow/" in path)
    finally:
        daemon.ensure_stopped()
    # Sparse: the 1st, 2nd, 4th... of the run are logged, not each poll.
    assert 3 <= len(failed) < polls, (failed, polls)
    assert all("401 Unauthorized" in r["error"] for r in failed), failed
    assert "repeated" not in failed[0]
    assert all(r.get("repeated", 0) > 1 for r in failed[1:]), failed
    assert [r["repeated"] for r in failed[1:]] == [2**i for i in range(1, len(failed))]
    assert not any(WRONG in json.dumps(r) for r in daemon.lines)
    assert receiver.deliveries() == []
