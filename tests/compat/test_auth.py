"""An MLflow 3 server with `--app-name basic-auth`, read with MLFLOW_TRACKING_USERNAME/PASSWORD.

The server is the project's own MLflow plus what `mlflow[auth]` adds (Flask-WTF), installed
into a folder of its own and put on the server's PYTHONPATH, so the project venv is untouched.
The watcher reads as a user who is not an admin and has only the default READ permission.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.compat.support import Agent, auth_overlay, steps_in
from tests.e2e.harness import (
    BIN,
    MlflowServer,
    Receiver,
    Steps,
    run_watcher,
    summary,
    watcher_env,
)

pytestmark = pytest.mark.timeout(600)

ADMIN = ("admin", "admin-password-0c41")
READER = ("watcher", "reader-password-9d27")


@dataclass
class AuthServer:
    server: MlflowServer
    admin: Agent

    def api(self, path: str, body: dict[str, str]) -> requests.Response:
        """POST an auth API call as the admin."""
        return requests.post(f"{self.server.url}/api/{path}", json=body, auth=ADMIN, timeout=10)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    overlay = auth_overlay()
    workdir = tmp_path_factory.mktemp("basic-auth")
    config = workdir / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{workdir / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN[0]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    # MlflowServer runs `<mlflow_bin> server ...`: this one adds the auth app and its settings.
    wrapper = workdir / "mlflow-basic-auth"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'export PYTHONPATH="{overlay}"\n'
        f'export MLFLOW_AUTH_CONFIG_PATH="{config}"\n'
        f'export MLFLOW_AUTH_ADMIN_PASSWORD="{ADMIN[1]}"\n'
        'export MLFLOW_FLASK_SERVER_SECRET_KEY="compat-test-secret-key"\n'
        f'exec "{BIN / "mlflow"}" "$@" --app-name basic-auth\n'
    )
    wrapper.chmod(0o700)
    server = MlflowServer(workdir, mlflow_bin=wrapper)
    server.start(timeout=120)
    try:
        admin = Agent(Path(sys.executable), server.url, workdir / "client", _creds(ADMIN))
        try:
            auth = AuthServer(server, admin)
            created = auth.api(
                "2.0/mlflow/users/create", {"username": READER[0], "password": READER[1]}
            )
            assert created.status_code == 200, created.text
            yield auth
        finally:
            admin.close()
    finally:
        server.stop()


def _creds(user: tuple[str, str]) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user[0], "MLFLOW_TRACKING_PASSWORD": user[1]}


def _steps(
    auth: AuthServer, receiver: Receiver, model_name: str, tmp_path: Path, user: tuple[str, str]
) -> Steps:
    return steps_in(tmp_path, auth.server.url, receiver, _creds(user), f"{model_name}*")


def test_a_reader_account_sees_and_delivers_changes(
    auth_server: AuthServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    auth_server.admin.create_registered_model(model_name)
    auth_server.admin.create_model_version(model_name, "s3://bucket/models/1")
    steps = _steps(auth_server, receiver, model_name, tmp_path, READER)
    assert steps.run() == []
    assert steps.last("poll.baseline")["models"] == 1

    auth_server.admin.transition_model_version_stage(model_name, "1", "Staging")
    auth_server.admin.set_registered_model_alias(model_name, "champion", "1")
    assert summary(steps.run()) == [
        ("MODEL_VERSION_ALIAS_CREATED", model_name, "1"),
        ("MODEL_VERSION_TRANSITIONED_STAGE", model_name, "1"),
        ("MODEL_VERSION_TRANSITIONED_TO_STAGING", model_name, "1"),
    ]


@pytest.mark.parametrize(
    "user",
    [(READER[0], "wrong-password"), ("nobody", "x"), None],
    ids=["wrong-password", "unknown-user", "no-credentials"],
)
def test_wrong_credentials_are_one_line_naming_401_and_exit_1(
    auth_server: AuthServer,
    receiver: Receiver,
    model_name: str,
    tmp_path: Path,
    user: tuple[str, str] | None,
) -> None:
    result = run_watcher(
        "run",
        "--once",
        "-c",
        str(_steps(auth_server, receiver, model_name, tmp_path, READER).config),
        env=watcher_env(_creds(user) if user else {}),
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "401 Unauthorized" in lines[0], lines[0]
    assert "wrong-password" not in result.stderr, "the password is never shown"


def test_read_access_revoked_is_a_403_not_a_deletion(
    auth_server: AuthServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    hidden, kept = f"{model_name}-hidden", f"{model_name}-kept"
    for name in (hidden, kept):
        auth_server.admin.create_registered_model(name)
    steps = _steps(auth_server, receiver, model_name, tmp_path, READER)
    assert steps.run() == []
    assert steps.last("poll.baseline")["models"] == 2

    # A DENY grant: the server leaves the model out of the reader's searches and answers 403
    # to a direct get. The watcher must not take the model for deleted.
    denied = auth_server.api(
        "3.0/mlflow/users/permissions/grant",
        {
            "username": READER[0],
            "resource_type": "registered_model",
            "resource_id": hidden,
            "permission": "DENY",
        },
    )
    assert denied.status_code == 200, denied.text
    result = run_watcher("run", "--once", "-c", str(steps.config), env=steps.env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "403 Forbidden" in lines[0], lines[0]
    assert receiver.deliveries() == [], "no REGISTERED_MODEL_DELETED for a model still there"
