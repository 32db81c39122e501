"""The command line as a user meets it: bad configs, check-config, a state file of another
registry, and the `receive` command."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import watch_model
from tests.e2e.harness import (
    SECRET,
    MlflowServer,
    Receiver,
    free_port,
    run_watcher,
    wait_for,
    watcher_env,
)

GOOD_WEBHOOK = """
[[webhooks]]
name = "deploy"
url = "http://127.0.0.1:8765/hook"
secret_env = "E2E_SECRET"
"""

BAD_CONFIGS = {
    "unknown key": ("[watch]\ninterval = '5s'\nintervall = '5s'\n", "watch.intervall"),
    "unknown section": ("[wacth]\ninterval = '5s'\n", "wacth"),
    "wrong type": ("[watch]\nmodels = 5\n", "watch.models"),
    "bad duration": ("[watch]\ninterval = '5 minutes'\n", "watch.interval"),
    "zero duration": ("[watch]\ninterval = 0\n", "watch.interval"),
    "duplicate webhook": (GOOD_WEBHOOK + GOOD_WEBHOOK, "webhooks[1].name"),
    "url not http": (
        "[[webhooks]]\nname = 'a'\nurl = 'ftp://example.com/x'\n",
        "webhooks[0].url",
    ),
    "unknown event": (
        "[[webhooks]]\nname = 'a'\nurl = 'http://127.0.0.1/x'\nevents = ['MODEL_PROMOTED']\n",
        "webhooks[0].events",
    ),
    "missing secret variable": (
        "[[webhooks]]\nname = 'a'\nurl = 'http://127.0.0.1/x'\nsecret_env = 'NOT_SET_ANYWHERE'\n",
        "webhooks[0].secret_env",
    ),
    "missing secret file": (
        "[[webhooks]]\nname = 'a'\nurl = 'http://127.0.0.1/x'\nsecret_file = '/nonexistent/s'\n",
        "webhooks[0].secret_file",
    ),
    "bad webhook name": (
        "[[webhooks]]\nname = 'a b'\nurl = 'http://127.0.0.1/x'\n",
        "webhooks[0].name",
    ),
    "host not allowed": (
        "[delivery]\nallowed_hosts = ['*.internal']\n"
        "[[webhooks]]\nname = 'a'\nurl = 'https://evil.example.com/x'\n",
        "webhooks[0].url",
    ),
    "invalid toml": ("[watch\ninterval=", "not valid TOML"),
    "broken template": (
        "[[webhooks]]\nname = 'a'\nurl = 'http://127.0.0.1/x'\nformat = 'template'\n"
        "template = '{\"model\": {{ model_name | tojson }'\n",
        "webhooks[0].template",
    ),
    "unknown format": (
        "[[webhooks]]\nname = 'a'\nurl = 'http://127.0.0.1/x'\nformat = 'xml'\n",
        "webhooks[0].format",
    ),
    "missing header variable": (
        "[[webhooks]]\nname = 'a'\nurl = 'http://127.0.0.1/x'\n"
        "headers = { Authorization = 'Bearer ${NOT_SET_ANYWHERE}' }\n",
        "webhooks[0].headers.Authorization",
    ),
    "undefined template variable": (
        "[[webhooks]]\nname = 'a'\nurl = 'http://127.0.0.1/x'\nformat = 'template'\n"
        "template = '{\"model\": {{ no_such_field | tojson }}}'\n",
        "webhooks[0].template",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("command", [("run", "--once"), ("run",), ("check-config",)])
def test_bad_config_is_one_line_per_problem_and_exit_2(
    case: str, command: tuple[str, ...], tmp_path: Path
) -> None:
    text, key = BAD_CONFIGS[case]
    config = tmp_path / "watcher.toml"
    config.write_text(text)
    result = run_watcher(*command, "-c", str(config), cwd=tmp_path, timeout=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / ".watcher").exists(), "nothing starts on a bad config"


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    config = tmp_path / "watcher.toml"
    config.write_text(
        "[watch]\ninterval = 'soon'\n\n"
        "[[webhooks]]\nname = 'a'\nurl = 'gopher://x'\n\n"
        "[[webhooks]]\nname = 'a'\nurl = 'http://127.0.0.1/'\nsecret_env = 'NOPE_NOT_SET'\n"
    )
    result = run_watcher("check-config", "-c", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4, result.stderr
    for key in ("watch.interval", "webhooks[0].url", "webhooks[1].name", "webhooks[1].secret_env"):
        assert any(key in line for line in lines), key
    assert "'soon'" in result.stderr
    assert "'gopher://x'" in result.stderr


def test_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    result = run_watcher("run", "--once", "-c", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_check_config_prints_effective_config_without_secrets(tmp_path: Path) -> None:
    config = tmp_path / "watcher.toml"
    config.write_text("[watch]\ninterval = '90s'\n" + GOOD_WEBHOOK)
    env = watcher_env({"WATCHER_WATCH__MODELS": '["fraud-*"]'})
    result = run_watcher("check-config", "-c", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert 'interval = "90s"' in result.stdout
    assert 'models = ["fraud-*"]' in result.stdout
    assert "<redacted, from env:E2E_SECRET>" in result.stdout


def test_shipped_config_is_valid() -> None:
    shipped = Path(__file__).resolve().parents[2] / "watcher.toml"
    env = watcher_env({"WATCHER_WEBHOOK_SECRET": "x"})
    result = run_watcher("check-config", "-c", str(shipped), env=env)
    assert result.returncode == 0, result.stderr


def test_a_dry_run_refuses_another_registrys_state_like_run(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    config, state = watch_model(client, mlflow_server, receiver, model_name, tmp_path, versions=1)
    assert run_watcher("run", "--once", "-c", str(config)).returncode == 0
    with closing(sqlite3.connect(state)) as conn:  # the state of another registry's watcher
        conn.execute("UPDATE meta SET value = 'http://other.example:5000' WHERE key = 'registry'")
        conn.commit()
    client.create_model_version(model_name, f"s3://bucket/models/{model_name}/2")

    real = run_watcher("run", "--once", "-c", str(config))
    before = state.read_bytes()
    dry = run_watcher("run", "--dry-run", "-c", str(config))
    assert real.returncode == 1, real.stderr
    assert "holds the snapshot of registry http://other.example:5000" in real.stderr
    assert (dry.returncode, dry.stderr, dry.stdout) == (real.returncode, real.stderr, "")
    assert state.read_bytes() == before
    assert receiver.deliveries() == []


def test_usage_error_is_exit_2() -> None:
    result = run_watcher("run", "--no-such-flag")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def _sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return (
        "v1,"
        + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    )


def test_receive_verifies_and_prints_each_delivery() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "watcher",
            "receive",
            "--port",
            str(port),
            "--json",
            "--secret-env",
            "E2E_SECRET",
        ],
        env=watcher_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/hook"

        def up() -> bool:
            try:
                return requests.get(url, timeout=1).ok
            except requests.RequestException:
                return False

        wait_for(up, 20, "receiver up")
        body = json.dumps({"event": "MODEL_VERSION_TRANSITIONED_STAGE", "model_name": "m"}).encode()
        stamp = str(int(time.time()))
        good = requests.post(
            url,
            data=body,
            headers={
                "X-MLflow-Delivery-Id": "d-1",
                "X-MLflow-Timestamp": stamp,
                "X-MLflow-Signature": _sign(SECRET, "d-1", stamp, body),
            },
            timeout=5,
        )
        forged = requests.post(
            url,
            data=body,
            headers={
                "X-MLflow-Delivery-Id": "d-2",
                "X-MLflow-Timestamp": stamp,
                "X-MLflow-Signature": _sign("wrong", "d-2", stamp, body),
            },
            timeout=5,
        )
        assert good.status_code == 200
        assert forged.status_code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["delivery_id"], r["signature"]) for r in records] == [
        ("d-1", "valid (mlflow)"),
        ("d-2", "INVALID: signature mismatch (mlflow)"),
    ]
    assert records[0]["body"]["model_name"] == "m"
