"""MLflow workspaces (MLFLOW_ENABLE_WORKSPACES on the server, MLflow 3.17 here) against a real
server: with ``[mlflow] workspace`` the watcher reads that workspace only, and its payloads name
it where MLflow's own webhook does (beside ``data``), and in the UI links."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.e2e.harness import MlflowServer, Receiver, hooks_config, run_watcher, watcher_env
from tests.e2e.native import native_webhook

WORKSPACE = "team-a"


@pytest.fixture
def workspaces_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowServer]:
    """A server of its own with workspaces on (the session's has them off), and the test's
    client in WORKSPACE (MLflow's client sends MLFLOW_WORKSPACE with every request)."""
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    server = MlflowServer(tmp_path / "mlflow-workspaces")
    server.start()
    try:
        server.client().create_workspace(WORKSPACE)
        monkeypatch.setenv("MLFLOW_WORKSPACE", WORKSPACE)
        yield server
    finally:
        server.stop()


def test_the_workspace_read_is_named_as_mlflow_names_it(
    workspaces_server: MlflowServer,
    receiver: Receiver,
    model_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    browser: Browser,
) -> None:
    server = workspaces_server
    client: Any = server.client()
    client.create_registered_model(model_name)
    experiment_id = client.create_experiment(f"{model_name}-training")
    run_id = client.create_run(experiment_id).info.run_id
    config = hooks_config(
        tmp_path / "watcher.toml",
        tracking_uri=server.url,
        state=tmp_path / "state.db",
        models=f"{model_name}*",
        webhooks=[
            {"name": "watcher", "url": f"{receiver.base_url}/watcher", "events": ["*"]},
            {
                "name": "mlflow",
                "url": f"{receiver.base_url}/mlflow",
                "events": ["*"],
                "format": "mlflow",
            },
        ],
    )
    config.write_text(
        config.read_text().replace(
            "[watch]\n", f'workspace = "{WORKSPACE}"\nui_url = "{server.url}"\n[watch]\n', 1
        )
    )
    env = watcher_env()
    env.pop("MLFLOW_WORKSPACE", None)  # the key alone selects it
    assert run_watcher("run", "--once", "-c", str(config), env=env).returncode == 0

    with native_webhook(server, receiver, events=["model_version.created"]) as native:
        version = client.create_model_version(
            model_name, f"runs:/{run_id}/m", run_id=run_id, description=f"{model_name} in team-a"
        )
        (native_data,) = native.wait("model_version", "created", model_name)
        # A model the glob matches, in the default workspace: not the watcher's to see.
        monkeypatch.setenv("MLFLOW_WORKSPACE", "default")
        client.create_registered_model(f"{model_name}-elsewhere")
        client.create_model_version(f"{model_name}-elsewhere", "s3://bucket/elsewhere")
        monkeypatch.setenv("MLFLOW_WORKSPACE", WORKSPACE)
        result = run_watcher("run", "--once", "--verbose", "-c", str(config), env=env)
        assert result.returncode == 0, result.stderr
        (native_envelope,) = [e for e in native.envelopes() if e["data"].get("name") == model_name]

    # One event: the model in the default workspace (created and given a version) was not read.
    (ours,) = [d.json for d in receiver.deliveries() if d.path == "/watcher"]
    assert ours["event"] == "MODEL_VERSION_CREATED"
    assert ours["workspace"] == WORKSPACE
    assert ours["experiment_id"] == experiment_id
    route = f"{server.url}/#/models/{model_name}/versions/{version.version}"
    assert ours["model_version_url"] == f"{route}?workspace={WORKSPACE}"
    # The UI opens the link in that workspace (without ?workspace= it shows the default one).
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(ours["model_version_url"])
        page.get_by_text(f"{model_name} in team-a").first.wait_for(timeout=60_000)
    finally:
        context.close()

    (envelope,) = [d.json for d in receiver.deliveries() if d.path == "/mlflow"]
    assert envelope["data"] == native_data
    assert native_envelope["workspace"] == WORKSPACE
    assert envelope["workspace"] == native_envelope["workspace"]
    assert set(envelope) - {"model_url", "model_version_url"} == set(native_envelope)
