"""The daemon's incremental reads against a real server: cheap steady polls, nothing missed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import create_versions
from tests.e2e.harness import Daemon, MlflowServer, Receiver, wait_for, write_config


def test_steady_polls_are_cheap_and_every_kind_of_change_still_arrives(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    create_versions(client, model_name, 2)
    doomed = f"{model_name}-doomed"
    create_versions(client, doomed, 1)
    config = write_config(
        tmp_path / "watcher.toml",
        tracking_uri=mlflow_server.url,
        webhook_url=receiver.url,
        state=tmp_path / "state.db",
        models=f"{model_name}*",
        interval="500ms",
        extra="",
    )
    text = config.read_text()
    text = text.replace(
        "[watch]\n", '[watch]\nmodels_interval = "4s"\nfull_scan_interval = "6s"\n'
    ).replace('events = ["MODEL_VERSION_TRANSITIONED_STAGE"]\n', 'events = ["*"]\n')
    config.write_text(text)
    daemon = Daemon(config)
    daemon.start()
    try:
        daemon.wait_logged("poll.baseline")
        time.sleep(2.0)  # a few quiet polls
        quiet = [
            line
            for line in daemon.logged("poll.finished")[1:]
            if line["read"] == "incremental" and line["events"] == 0
        ]
        assert quiet, "steady polls read incrementally"
        assert all(line["requests"] <= 3 for line in quiet)
        assert min(line["requests"] for line in quiet) == 2

        client.transition_model_version_stage(model_name, "1", "Production")
        client.create_model_version(model_name, f"s3://bucket/models/{model_name}/3")
        client.delete_model_version(model_name, "2")
        client.set_model_version_tag(model_name, "1", "validated", "yes")
        client.set_registered_model_alias(model_name, "champion", "1")
        client.delete_registered_model(doomed)
        wanted = {
            ("REGISTERED_MODEL_DELETED", doomed, None),
            ("MODEL_VERSION_TRANSITIONED_STAGE", model_name, "1"),
            ("MODEL_VERSION_CREATED", model_name, "3"),
            ("MODEL_VERSION_DELETED", model_name, "2"),
            ("MODEL_VERSION_TAG_SET", model_name, "1"),
            ("MODEL_VERSION_ALIAS_CREATED", model_name, "1"),
        }

        def arrived() -> set[tuple[str, str, str | None]]:
            return {
                (d.json["event"], d.json["model_name"], d.json.get("model_version"))
                for d in receiver.deliveries()
            }

        # Tags wait for the full version scan and aliases for the models scan: allow for both.
        wait_for(lambda: wanted <= arrived(), 30, "every change, at its cadence")
        kinds = {line["read"] for line in daemon.logged("poll.finished")}
        assert "incremental+models" in kinds, kinds  # the models scan ran on its own cadence
        # Every delivery once: no overlap re-read emitted anything twice.
        ids = [d.json["event_id"] for d in receiver.deliveries()]
        assert len(ids) == len(set(ids))
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_stopped()


def test_a_model_name_with_a_quote_is_read_by_name(
    client: Any, mlflow_server: MlflowServer, model_name: str
) -> None:
    from watcher.registry import ReaderSettings, RestReader

    name = f"o'brien-{model_name}"
    create_versions(client, name, 2)
    reader = RestReader(ReaderSettings(mlflow_server.url, mlflow_server.url, timeout=10))
    assert sorted(reader.versions_of(name)) == [(name, "1"), (name, "2")]
