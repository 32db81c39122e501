"""The core scenarios on every MLflow the watcher supports: 2.9, 2.22, 3 and the file store.

Each registry is driven by its own version's client; the watcher runs from the project venv
with the client version the project pins. Each step makes one change, runs
`mlflow-watcher run --once`, and compares exactly what the real receiver got in that run.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.compat.support import Registry, watcher_config
from tests.e2e.harness import (
    Daemon,
    Receiver,
    Row,
    Steps,
    summary,
    wait_for,
    watcher_env,
)

pytestmark = pytest.mark.timeout(600)  # the first test of a backend may build its venv


def _model(registry: Registry, name: str, versions: int = 1) -> None:
    registry.client.create_registered_model(name)
    for i in range(1, versions + 1):
        registry.client.create_model_version(name, f"s3://bucket/models/{name}/{i}")


def test_baseline_is_silent_and_sees_every_model(
    registry: Registry, steps: Steps, model_name: str
) -> None:
    # On MLflow 2.9 an MLflow 3 client's search_registered_models returns no models at all.
    names = [f"{model_name}-{i}" for i in range(3)]
    for name in names:
        _model(registry, name, versions=2)
    registry.client.set_registered_model_alias(names[0], "champion", "2")
    registry.client.set_model_version_tag(names[1], "1", "team", "risk")
    registry.client.transition_model_version_stage(names[2], "1", "Production")

    assert steps.run() == [], "the first run is a silent baseline"
    baseline = steps.last("poll.baseline")
    assert (baseline["models"], baseline["versions"]) == (3, 6), "the watcher sees every model"

    assert steps.run() == [], "a run with no change emits nothing (never a false deletion)"
    finished = steps.last("poll.finished")
    assert (finished["models"], finished["versions"]) == (3, 6)


def test_stage_transitions(registry: Registry, steps: Steps, model_name: str) -> None:
    _model(registry, model_name, versions=2)
    assert steps.run() == []

    registry.client.transition_model_version_stage(model_name, "1", "Staging")
    registry.client.transition_model_version_stage(model_name, "2", "Production")
    assert summary(steps.run(), "from_stage", "to_stage") == [
        ("MODEL_VERSION_TRANSITIONED_STAGE", model_name, "1", "None", "Staging"),
        ("MODEL_VERSION_TRANSITIONED_STAGE", model_name, "2", "None", "Production"),
        ("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", model_name, "2", "None", "Production"),
        ("MODEL_VERSION_TRANSITIONED_TO_STAGING", model_name, "1", "None", "Staging"),
    ]

    # Promoting 1 with archive_existing_versions archives 2: events for each version.
    registry.client.transition_model_version_stage(
        model_name, "1", "Production", archive_existing_versions=True
    )
    assert summary(steps.run(), "from_stage", "to_stage") == [
        ("MODEL_VERSION_TRANSITIONED_STAGE", model_name, "1", "Staging", "Production"),
        ("MODEL_VERSION_TRANSITIONED_STAGE", model_name, "2", "Production", "Archived"),
        ("MODEL_VERSION_TRANSITIONED_TO_ARCHIVED", model_name, "2", "Production", "Archived"),
        ("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", model_name, "1", "Staging", "Production"),
    ]


def test_alias_set_moved_deleted(registry: Registry, steps: Steps, model_name: str) -> None:
    _model(registry, model_name, versions=2)
    assert steps.run() == []

    registry.client.set_registered_model_alias(model_name, "champion", "1")
    assert summary(steps.run(), "alias", "previous_version") == [
        ("MODEL_VERSION_ALIAS_CREATED", model_name, "1", "champion", None)
    ]

    registry.client.set_registered_model_alias(model_name, "champion", "2")
    assert summary(steps.run(), "alias", "previous_version") == [
        ("MODEL_VERSION_ALIAS_CREATED", model_name, "2", "champion", "1")
    ]

    registry.client.delete_registered_model_alias(model_name, "champion")
    assert summary(steps.run(), "alias") == [
        ("MODEL_VERSION_ALIAS_DELETED", model_name, "2", "champion")
    ]


def test_version_tag_set_changed_deleted(registry: Registry, steps: Steps, model_name: str) -> None:
    _model(registry, model_name)
    assert steps.run() == []

    registry.client.set_model_version_tag(model_name, "1", "stage_gate", "pending")
    registry.client.set_model_version_tag(model_name, "1", "owner", "ana")
    assert summary(steps.run(), "tag_key", "tag_value", "previous_value") == [
        ("MODEL_VERSION_TAG_SET", model_name, "1", "owner", "ana", None),
        ("MODEL_VERSION_TAG_SET", model_name, "1", "stage_gate", "pending", None),
    ]

    registry.client.set_model_version_tag(model_name, "1", "stage_gate", "passed")
    registry.client.delete_model_version_tag(model_name, "1", "owner")
    assert summary(steps.run(), "tag_key", "tag_value", "previous_value") == [
        ("MODEL_VERSION_TAG_DELETED", model_name, "1", "owner", None, "ana"),
        ("MODEL_VERSION_TAG_SET", model_name, "1", "stage_gate", "passed", "pending"),
    ]


def test_model_and_version_created(registry: Registry, steps: Steps, model_name: str) -> None:
    assert steps.run() == []

    registry.client.create_registered_model(model_name, tags={"team": "risk"}, description="d")
    source = f"s3://bucket/models/{model_name}/1"
    registry.client.create_model_version(model_name, source, tags={"stage_gate": "pending"})
    events = steps.run()
    assert summary(events, "tag_key", "tag_value") == [
        ("MODEL_VERSION_CREATED", model_name, "1", None, None),
        ("MODEL_VERSION_TAG_SET", model_name, "1", "stage_gate", "pending"),
        ("REGISTERED_MODEL_CREATED", model_name, None, None, None),
    ]
    created = {e["event"]: e for e in events}
    model = created["REGISTERED_MODEL_CREATED"]
    assert (model["description"], model["tags"]) == ("d", {"team": "risk"})
    assert created["MODEL_VERSION_CREATED"]["source"] == source


def test_version_deleted_and_the_alias_that_pointed_to_it(
    registry: Registry, steps: Steps, model_name: str
) -> None:
    """MLflow 2.x leaves the alias dangling, MLflow 3 removes it: one ALIAS_DELETED either way."""
    _model(registry, model_name, versions=2)
    registry.client.set_registered_model_alias(model_name, "challenger", "1")
    registry.client.set_registered_model_alias(model_name, "champion", "2")
    assert steps.run() == []

    registry.client.delete_model_version(model_name, "1")
    left = registry.client.get_registered_model(model_name)["aliases"]
    dangling = registry.label in ("2.9", "2.22")
    assert left == ({"challenger": "1", "champion": "2"} if dangling else {"champion": "2"})

    assert summary(steps.run(), "alias") == [
        ("MODEL_VERSION_ALIAS_DELETED", model_name, "1", "challenger"),
        ("MODEL_VERSION_DELETED", model_name, "1", None),
    ]
    assert steps.run() == [], "a dangling alias is reported once, not on every run"
    assert steps.last("poll.finished")["versions"] == 1


def test_model_deleted_once_and_no_other(registry: Registry, steps: Steps, model_name: str) -> None:
    doomed, kept = f"{model_name}-doomed", f"{model_name}-kept"
    _model(registry, doomed, versions=2)
    _model(registry, kept, versions=1)
    registry.client.set_registered_model_alias(doomed, "champion", "1")
    assert steps.run() == []

    registry.client.delete_registered_model(doomed)
    assert summary(steps.run()) == [("REGISTERED_MODEL_DELETED", doomed, None)]
    assert steps.run() == [], "deleted once; the other model is never reported deleted"
    finished = steps.last("poll.finished")
    assert (finished["models"], finished["versions"]) == (1, 1)


def test_daemon_reads_incrementally_and_misses_nothing(
    registry: Registry, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    """The daemon's cheap reads (newest first by last_updated_timestamp) on this MLflow."""
    _model(registry, model_name, versions=2)
    doomed = f"{model_name}-doomed"
    _model(registry, doomed)
    # The polls and scans alone (the models here are new, so a hot set would read them too:
    # test_hot_models_are_read_with_the_polls below).
    scans = 'models_scan_interval = "2s"\nversions_scan_interval = "2s"\nhot_window = "off"\n'
    config = watcher_config(
        tmp_path,
        tracking_uri=registry.tracking_uri,
        webhook_url=receiver.url,
        models=f"{model_name}*",
        watch_extra=scans,
    )
    daemon = Daemon(config, watcher_env(registry.env))
    daemon.start()
    try:
        daemon.wait_logged("poll.baseline", timeout=60)
        daemon.wait_logged("poll.finished", count=3, timeout=60)
        reads = {line["read"] for line in daemon.logged("poll.finished")[1:]}
        assert "incremental" in reads, reads
        assert not daemon.logged("poll.incremental_unsupported")

        registry.client.transition_model_version_stage(model_name, "1", "Production")
        registry.client.create_model_version(model_name, f"s3://bucket/models/{model_name}/3")
        registry.client.delete_model_version(model_name, "2")
        registry.client.set_model_version_tag(model_name, "1", "validated", "yes")
        registry.client.set_registered_model_alias(model_name, "champion", "1")
        registry.client.delete_registered_model(doomed)
        wanted = [
            ("MODEL_VERSION_ALIAS_CREATED", model_name, "1"),
            ("MODEL_VERSION_CREATED", model_name, "3"),
            ("MODEL_VERSION_DELETED", model_name, "2"),
            ("MODEL_VERSION_TAG_SET", model_name, "1"),
            ("MODEL_VERSION_TRANSITIONED_STAGE", model_name, "1"),
            ("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", model_name, "1"),
            ("REGISTERED_MODEL_DELETED", doomed, None),
        ]

        def arrived() -> list[Row]:
            return summary([d.json for d in receiver.deliveries()])

        wait_for(lambda: len(arrived()) >= len(wanted), 60, "every change, at its cadence")
        # One more models scan and versions scan after it all arrived: nothing twice.
        daemon.wait_polls(1, reading="models", timeout=30)
        daemon.wait_polls(1, reading="versions", timeout=30)
        assert arrived() == wanted
        assert not daemon.logged("poll.failed")
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_stopped()


def test_hot_models_are_read_with_the_polls(
    registry: Registry, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    """A model with a version made 11 s before the newest change (outside the polls' overlap)
    is hot: its alias, version tag and deletion come with the polls, no scan running (their
    cadences are an hour). MLflow 2 refuses ``name IN (...)`` on versions: read by name."""
    _model(registry, model_name, versions=2)
    time.sleep(11.0)
    _model(registry, f"{model_name}-later")
    config = watcher_config(
        tmp_path,
        tracking_uri=registry.tracking_uri,
        webhook_url=receiver.url,
        models=f"{model_name}*",
        watch_extra=(
            'models_scan_interval = "1h"\nversions_scan_interval = "1h"\nhot_window = "24h"\n'
        ),
    )
    daemon = Daemon(config, watcher_env(registry.env))
    daemon.start()
    try:
        daemon.wait_logged("poll.baseline", timeout=60)
        registry.client.set_registered_model_alias(model_name, "champion", "1")
        registry.client.set_model_version_tag(model_name, "1", "validated", "yes")
        wanted: list[Row] = [
            ("MODEL_VERSION_ALIAS_CREATED", model_name, "1"),
            ("MODEL_VERSION_TAG_SET", model_name, "1"),
        ]

        def arrived() -> list[Row]:
            return summary([d.json for d in receiver.deliveries()])

        wait_for(lambda: arrived() == wanted, 60, "the alias and the tag, with the polls")
        registry.client.delete_registered_model(model_name)
        wanted.append(("REGISTERED_MODEL_DELETED", model_name, None))
        wait_for(lambda: arrived() == sorted(wanted), 60, "the deletion, with the polls")
        reads = [str(line["read"]) for line in daemon.logged("poll.finished")[1:]]
        assert "incremental+hot" in reads, reads
        assert all(r in ("incremental", "incremental+hot") for r in reads), "no scan ran"
        assert not daemon.logged("poll.failed")
        assert daemon.terminate() == 0
    finally:
        daemon.ensure_stopped()
