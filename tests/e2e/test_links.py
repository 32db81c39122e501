"""Links and context in payloads against a real MLflow server: a version created from a run
carries the run's experiment_id and its MLflow UI address, in the watcher's format and in Slack's,
and the experiment costs one request for the run, none for quiet polls."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from playwright.sync_api import Browser

from tests.e2e.harness import (
    Daemon,
    MlflowServer,
    Receiver,
    hooks_config,
    run_watcher,
    wait_for,
    watcher_env,
)
from watcher.payloads import model_url, model_version_url

CREATED = "MODEL_VERSION_CREATED"
STAGED = "MODEL_VERSION_TRANSITIONED_STAGE"


def linked_config(
    tmp_path: Path, server: MlflowServer, receiver: Receiver, models: str, ui_url: str
) -> Path:
    """A daemon polling every second, sending each event to /watcher (the default format)
    and /slack, with ``[mlflow] ui_url``."""
    events = [CREATED, STAGED]
    path = hooks_config(
        tmp_path / "watcher.toml",
        tracking_uri=server.url,
        state=tmp_path / "state.db",
        models=models,
        interval="1s",
        webhooks=[
            {"name": "watcher", "url": f"{receiver.base_url}/watcher", "events": events},
            {
                "name": "slack",
                "url": f"{receiver.base_url}/slack",
                "events": events,
                "format": "slack",
            },
        ],
    )
    text = path.read_text()
    path.write_text(text.replace("[watch]\n", f'ui_url = "{ui_url}/"\n[watch]\n', 1))
    return path


def run_gets(server: MlflowServer, run_id: str) -> int:
    """How many times the server was asked for this run (its access log)."""
    log = (server.workdir / "server.log").read_text(errors="replace")
    return len(re.findall(rf"runs/get\?run_id={run_id}\b", log))


def once_after_a_version(
    client: Any, config: Path, model_name: str, run_id: str
) -> subprocess.CompletedProcess[str]:
    """A baseline (`run --once`), a version of ``model_name`` from ``run_id``, and the
    `run --once` that delivers it (its log is in stderr)."""
    env = watcher_env()
    assert run_watcher("run", "--once", "-c", str(config), env=env).returncode == 0
    client.create_model_version(model_name, f"runs:/{run_id}/model", run_id=run_id)
    result = run_watcher("run", "--once", "--verbose", "-c", str(config), env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_a_version_from_a_run_carries_its_experiment_and_its_ui_address(
    client: Any,
    mlflow_server: MlflowServer,
    receiver: Receiver,
    model_name: str,
    tmp_path: Path,
) -> None:
    experiment_id = client.create_experiment(f"{model_name}-training")
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    name = f"{model_name} team#1?a&b"  # quoted in the link, whole in the payload
    client.create_registered_model(name)
    config = linked_config(tmp_path, mlflow_server, receiver, f"{model_name}*", mlflow_server.url)

    daemon = Daemon(config, watcher_env())
    daemon.start()
    try:
        daemon.wait_started()
        daemon.wait_polls(3)
        version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
        receiver.wait_for_count(2)  # its event, to each webhook
        daemon.wait_polls(3)
        client.transition_model_version_stage(name, version.version, "Staging")
        receiver.wait_for_count(4)
        daemon.wait_polls(3)
    finally:
        daemon.terminate()

    ui = f"{mlflow_server.url}/#/models/{quote(name, safe='')}"
    version_url = f"{ui}/versions/{version.version}"
    watcher = {d.json["event"]: d.json for d in receiver.deliveries() if d.path == "/watcher"}
    assert sorted(watcher) == [CREATED, STAGED]
    for payload in watcher.values():
        assert payload["model_name"] == name
        assert payload["run_id"] == run_id
        assert payload["experiment_id"] == experiment_id
        assert payload["model_url"] == ui
        assert payload["model_version_url"] == version_url
    slack = [d.json["text"] for d in receiver.deliveries() if d.path == "/slack"]
    shown = name.replace("&", "&amp;")  # Slack's escape in text; the link is quoted instead
    assert sorted(slack) == sorted(
        [
            f"{shown} v{version.version}: new version <{version_url}|View in MLflow>",
            f"{shown} v{version.version}: None → Staging <{version_url}|View in MLflow>",
        ]
    )

    # The link is the UI's own route: the page it names is served (the SPA) and MLflow's API
    # finds the version under the name the link decodes to.
    assert requests.get(version_url.split("#")[0], timeout=10).status_code == 200
    got = client.get_model_version(name, version.version)
    assert got.run_id == run_id

    # One request for the run, whatever the polls and events after it; none for quiet polls.
    assert run_gets(mlflow_server, run_id) == 1
    assert daemon.logged("event.experiment_unknown") == []


def test_a_version_whose_run_is_gone_is_delivered_without_experiment(
    client: Any,
    mlflow_server: MlflowServer,
    receiver: Receiver,
    model_name: str,
    tmp_path: Path,
) -> None:
    client.create_registered_model(model_name)
    config = linked_config(tmp_path, mlflow_server, receiver, model_name, mlflow_server.url)
    missing = "0123456789abcdef0123456789abcdef"  # a run MLflow does not have
    result = once_after_a_version(client, config, model_name, missing)
    wait_for(lambda: len(receiver.deliveries()) >= 2, 20, "both deliveries")
    payload = next(d.json for d in receiver.deliveries() if d.path == "/watcher")
    assert payload["run_id"] == missing
    assert "experiment_id" not in payload
    assert payload["model_version_url"] == f"{mlflow_server.url}/#/models/{model_name}/versions/1"
    assert "event.experiment_unknown" in result.stderr
    assert missing in result.stderr


def test_reading_the_database_directly_gives_the_experiment_too(
    client: Any,
    mlflow_server: MlflowServer,
    receiver: Receiver,
    model_name: str,
    tmp_path: Path,
) -> None:
    """The client reader (a database URI, no server between) asks its tracking store."""
    experiment_id = client.create_experiment(f"{model_name}-training")
    run_id = client.create_run(experiment_id).info.run_id
    client.create_registered_model(model_name)
    config = linked_config(tmp_path, mlflow_server, receiver, model_name, mlflow_server.url)
    config.write_text(
        config.read_text().replace(mlflow_server.url + '"', mlflow_server.db_uri + '"', 1)
    )
    once_after_a_version(client, config, model_name, run_id)
    payload = next(d.json for d in receiver.deliveries() if d.path == "/watcher")
    assert payload["experiment_id"] == experiment_id
    assert payload["model_version_url"] == f"{mlflow_server.url}/#/models/{model_name}/versions/1"


def test_the_link_opens_the_versions_page_in_mlflows_ui(
    client: Any, mlflow_server: MlflowServer, model_name: str, browser: Browser
) -> None:
    """The route and the quoting are the UI's own: a name with a space, ``#``, ``?`` and ``&``
    opens its version's page, not another model's or the list."""
    name = f"{model_name} v#2?a&b"
    client.create_registered_model(name)
    client.create_model_version(name, "s3://bucket/model", description=f"{model_name} marker")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(model_version_url(mlflow_server.url, name, "1"))
        page.get_by_text(f"{model_name} marker").first.wait_for(timeout=60_000)
        assert page.get_by_text(name).count() >= 1
        page.goto(model_url(mlflow_server.url, name))
        page.get_by_text("Version 1").first.wait_for(timeout=60_000)
    finally:
        context.close()
