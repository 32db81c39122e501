"""Every kind of registry change, made through MlflowClient against a real server, arrives once.

Each step makes one change, runs `mlflow-watcher run --once`, and compares what the real
receiver got in that run with exactly the events expected, field by field.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ConfigFor, create_versions
from tests.e2e.harness import Daemon, MlflowServer, Receiver, Steps, hooks_config, summary


@pytest.fixture
def steps(config_for: ConfigFor, receiver: Receiver, model_name: str) -> Steps:
    return Steps(config_for(f"{model_name}*", events=["*"]), receiver)


def test_every_event_in_the_catalogue_arrives_once(
    client: Any, steps: Steps, model_name: str
) -> None:
    old = f"{model_name}-old"
    create_versions(client, old, 1)
    assert steps.run() == [], "the first run is a silent baseline"

    client.create_registered_model(model_name, tags={"team": "risk"}, description="fraud")
    [created] = steps.run()
    assert created["event"] == "REGISTERED_MODEL_CREATED"
    assert created["model_name"] == model_name

    client.create_model_version(
        model_name, f"s3://bucket/models/{model_name}/1", tags={"stage_gate": "pending"}
    )
    events = steps.run()
    assert summary(events, "tag_key", "tag_value") == [
        ("MODEL_VERSION_CREATED", model_name, "1", None, None),
        ("MODEL_VERSION_TAG_SET", model_name, "1", "stage_gate", "pending"),
    ]
    version_created = next(e for e in events if e["event"] == "MODEL_VERSION_CREATED")
    assert version_created["source"] == f"s3://bucket/models/{model_name}/1"

    client.set_model_version_tag(model_name, "1", "stage_gate", "passed")
    client.set_model_version_tag(model_name, "1", "owner", "ana")
    assert summary(steps.run(), "tag_key", "tag_value", "previous_value") == [
        ("MODEL_VERSION_TAG_SET", model_name, "1", "owner", "ana", None),
        ("MODEL_VERSION_TAG_SET", model_name, "1", "stage_gate", "passed", "pending"),
    ]

    client.delete_model_version_tag(model_name, "1", "owner")
    assert summary(steps.run(), "tag_key", "previous_value") == [
        ("MODEL_VERSION_TAG_DELETED", model_name, "1", "owner", "ana")
    ]

    client.set_registered_model_alias(model_name, "champion", "1")
    assert summary(steps.run(), "alias", "previous_version") == [
        ("MODEL_VERSION_ALIAS_CREATED", model_name, "1", "champion", None)
    ]

    client.create_model_version(model_name, f"s3://bucket/models/{model_name}/2")
    client.set_registered_model_alias(model_name, "champion", "2")
    assert summary(steps.run(), "alias", "previous_version") == [
        ("MODEL_VERSION_ALIAS_CREATED", model_name, "2", "champion", "1"),
        ("MODEL_VERSION_CREATED", model_name, "2", None, None),
    ]

    client.delete_registered_model_alias(model_name, "champion")
    assert summary(steps.run(), "alias") == [
        ("MODEL_VERSION_ALIAS_DELETED", model_name, "2", "champion")
    ]

    client.transition_model_version_stage(model_name, "1", "Production")
    client.transition_model_version_stage(model_name, "2", "Staging")
    assert summary(steps.run(), "from_stage", "to_stage") == [
        ("MODEL_VERSION_TRANSITIONED_STAGE", model_name, "1", "None", "Production"),
        ("MODEL_VERSION_TRANSITIONED_STAGE", model_name, "2", "None", "Staging"),
    ]

    # Promoting 2 with archive_existing_versions archives 1: one event for each version.
    client.transition_model_version_stage(
        model_name, "2", "Production", archive_existing_versions=True
    )
    assert summary(steps.run(), "from_stage", "to_stage") == [
        ("MODEL_VERSION_TRANSITIONED_STAGE", model_name, "1", "Production", "Archived"),
        ("MODEL_VERSION_TRANSITIONED_STAGE", model_name, "2", "Staging", "Production"),
    ]

    # Deleting a version an alias points to: the version and the alias, once each (MLflow 3
    # drops the alias; MLflow 2 leaves it dangling, which the watcher treats the same).
    client.set_registered_model_alias(model_name, "challenger", "1")
    steps.run()
    client.delete_model_version(model_name, "1")
    assert summary(steps.run(), "alias") == [
        ("MODEL_VERSION_ALIAS_DELETED", model_name, "1", "challenger"),
        ("MODEL_VERSION_DELETED", model_name, "1", None),
    ]
    assert steps.run() == [], "nothing more on the next run"

    client.delete_registered_model(model_name)
    assert summary(steps.run()) == [("REGISTERED_MODEL_DELETED", model_name, None)]


def test_a_model_deleted_and_created_again_is_told_apart(
    client: Any, steps: Steps, model_name: str
) -> None:
    create_versions(client, model_name, 2)
    client.transition_model_version_stage(model_name, "1", "Production")
    assert steps.run() == []

    client.delete_registered_model(model_name)
    time.sleep(0.01)  # a new creation timestamp
    create_versions(client, model_name, 1)
    assert summary(steps.run()) == [
        ("MODEL_VERSION_CREATED", model_name, "1"),
        ("REGISTERED_MODEL_CREATED", model_name, None),
        ("REGISTERED_MODEL_DELETED", model_name, None),
    ]


def test_a_renamed_model_is_one_event_and_its_changes_follow_the_new_name(
    client: Any, steps: Steps, model_name: str
) -> None:
    old, new = f"{model_name}-old", f"{model_name}-new"
    assert steps.run() == []  # the baseline: the model is created after it
    create_versions(client, old, 2)
    client.set_model_version_tag(old, "1", "gate", "passed")
    client.set_registered_model_alias(old, "champion", "1")
    client.transition_model_version_stage(old, "1", "Production")
    assert {e["event"] for e in steps.run()} >= {"REGISTERED_MODEL_CREATED"}

    client.rename_registered_model(old, new)
    events = steps.run()
    assert summary(events, "previous_name") == [("REGISTERED_MODEL_RENAMED", new, None, old)]
    assert steps.run() == [], "nothing more on the next run"

    # What happens next is the new name's: no version is created again.
    client.set_model_version_tag(new, "2", "gate", "pending")
    client.set_registered_model_alias(new, "champion", "2")
    client.transition_model_version_stage(new, "1", "Archived")
    client.create_model_version(new, f"s3://bucket/models/{new}/3")
    assert summary(steps.run(), "alias", "tag_key", "to_stage") == [
        ("MODEL_VERSION_ALIAS_CREATED", new, "2", "champion", None, None),
        ("MODEL_VERSION_CREATED", new, "3", None, None, None),
        ("MODEL_VERSION_TAG_SET", new, "2", None, "gate", None),
        ("MODEL_VERSION_TRANSITIONED_STAGE", new, "1", None, None, "Archived"),
    ]


def test_the_daemon_delivers_one_event_for_a_rename_with_both_names(
    client: Any, config_for: ConfigFor, receiver: Receiver, model_name: str
) -> None:
    old, new = f"{model_name}-old", f"{model_name}-new"
    with Daemon(config_for(f"{model_name}*", events=["*"])) as daemon:
        daemon.wait_started()
        daemon.wait_polls(1)
        create_versions(client, old, 2)
        client.set_registered_model_alias(old, "champion", "2")
        receiver.wait_for_count(1, event="MODEL_VERSION_ALIAS_CREATED")
        seen = len(receiver.deliveries())
        client.rename_registered_model(old, new)
        receiver.wait_for_count(1, event="REGISTERED_MODEL_RENAMED")
        daemon.wait_polls(3)
    events = [d.json for d in receiver.deliveries()[seen:]]
    assert summary(events, "previous_name") == [("REGISTERED_MODEL_RENAMED", new, None, old)]


def test_filters_deliver_exactly_the_matching_events(
    client: Any, mlflow_server: MlflowServer, model_name: str, tmp_path: Path
) -> None:
    receivers = {name: Receiver() for name in ("prod", "champion", "fraud")}
    for r in receivers.values():
        r.start()
    try:
        fraud, other = f"{model_name}-fraud", f"{model_name}-other"
        config = hooks_config(
            tmp_path / "watcher.toml",
            tracking_uri=mlflow_server.url,
            state=tmp_path / "state.db",
            models=f"{model_name}*",
            webhooks=[
                {
                    "name": "prod",
                    "url": receivers["prod"].url,
                    "events": ["MODEL_VERSION_TRANSITIONED_STAGE"],
                    "to_stages": ["Production"],
                },
                {
                    "name": "champion",
                    "url": receivers["champion"].url,
                    "events": ["model_version_alias.created"],
                    "aliases": ["champion"],
                },
                {
                    "name": "fraud",
                    "url": receivers["fraud"].url,
                    "events": ["*"],
                    "models": ["*-fraud"],
                },
            ],
        )
        create_versions(client, fraud, 2)
        create_versions(client, other, 2)
        steps = Steps(config, receivers["fraud"])
        assert steps.run() == []

        client.transition_model_version_stage(fraud, "1", "Staging")
        client.transition_model_version_stage(other, "1", "Production")
        client.set_registered_model_alias(fraud, "champion", "2")
        client.set_registered_model_alias(other, "challenger", "1")
        client.set_model_version_tag(other, "2", "k", "v")
        steps.run()

        assert summary([d.json for d in receivers["prod"].deliveries()], "to_stage") == [
            ("MODEL_VERSION_TRANSITIONED_STAGE", other, "1", "Production")
        ]
        assert summary([d.json for d in receivers["champion"].deliveries()], "alias") == [
            ("MODEL_VERSION_ALIAS_CREATED", fraud, "2", "champion")
        ]
        assert summary([d.json for d in receivers["fraud"].deliveries()], "alias") == [
            ("MODEL_VERSION_ALIAS_CREATED", fraud, "2", "champion"),
            ("MODEL_VERSION_TRANSITIONED_STAGE", fraud, "1", None),
        ]
    finally:
        for r in receivers.values():
            r.stop()
