"""The daemon's incremental reads against a real server: cheap steady polls, nothing missed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import config_in, create_versions
from tests.e2e.harness import Daemon, MlflowServer, Receiver, summary, wait_for


def test_steady_polls_are_cheap_and_every_kind_of_change_still_arrives(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    create_versions(client, model_name, 2)
    doomed = f"{model_name}-doomed"
    create_versions(client, doomed, 1)
    config = config_in(tmp_path, mlflow_server, receiver, f"{model_name}*", interval="500ms")
    text = config.read_text()
    # The steady poll's own cost, as without a hot set (the model here is new, so hot):
    # tests below measure the hot set.
    text = text.replace(
        "[watch]\n",
        '[watch]\nmodels_scan_interval = "4s"\nversions_scan_interval = "6s"\nhot_window = "off"\n',
    ).replace('events = ["MODEL_VERSION_TRANSITIONED_STAGE"]\n', 'events = ["*"]\n')
    config.write_text(text)
    with Daemon(config) as daemon:
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
        # The models scan ran on its own cadence: in the poll, or beside the polls when the
        # last one took over a quarter of the interval (a loaded machine, 125 ms here).
        assert kinds & {"incremental+models", "incremental+models(background)"}, kinds
        # Every delivery once: no overlap re-read emitted anything twice.
        ids = [d.json["event_id"] for d in receiver.deliveries()]
        assert len(ids) == len(set(ids))
        assert daemon.terminate() == 0


def _hot_config(
    tmp_path: Path, server: MlflowServer, receiver: Receiver, models: str, watch: str
) -> Path:
    """Interval 1 s, every event, and scan cadences given by the test."""
    config = config_in(tmp_path, server, receiver, models, interval="1s")
    config.write_text(
        config.read_text()
        .replace("[watch]\n", "[watch]\n" + watch)
        .replace('events = ["MODEL_VERSION_TRANSITIONED_STAGE"]\n', 'events = ["*"]\n')
    )
    return config


def _arrivals(receiver: Receiver, name: str) -> list[tuple[str, str, str | None]]:
    return [
        (d.json["event"], d.json["model_name"], d.json.get("model_version"))
        for d in receiver.deliveries()
        if d.json["model_name"] == name
    ]


def _made_earlier(client: Any, name: str, versions: int) -> None:
    """``name`` with its versions, then 11 s later a change to another model: the polls'
    overlap (10 s behind the newest change) does not reach ``name`` any more."""
    create_versions(client, name, versions)
    time.sleep(11.0)
    create_versions(client, f"{name}-later", 1)


def _scans_so_far(daemon: Daemon) -> list[str]:
    """The reads after the baseline that included a full scan of either kind."""
    reads = [str(line["read"]) for line in daemon.logged("poll.finished")[1:]]
    return [r for r in reads if r == "full" or "models" in r or "versions" in r]


def test_a_hot_model_s_aliases_tags_and_deletion_arrive_with_the_polls(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    """A model with a version made a little earlier (outside the polls' 10 s overlap, within
    24 hours) is hot: its alias moves, version tags and deletion arrive with the polls, before
    any scan ran (the scans' cadences are an hour)."""
    _made_earlier(client, model_name, 2)
    watch = 'models_scan_interval = "1h"\nversions_scan_interval = "1h"\nhot_window = "24h"\n'
    config = _hot_config(tmp_path, mlflow_server, receiver, f"{model_name}*", watch)
    with Daemon(config) as daemon:
        daemon.wait_logged("poll.baseline")
        steps: list[tuple[Any, tuple[str, str, str | None]]] = [
            (
                lambda: client.set_registered_model_alias(model_name, "champion", "1"),
                ("MODEL_VERSION_ALIAS_CREATED", model_name, "1"),
            ),
            (
                lambda: client.set_model_version_tag(model_name, "1", "validation", "approved"),
                ("MODEL_VERSION_TAG_SET", model_name, "1"),
            ),
            (
                lambda: client.delete_model_version_tag(model_name, "1", "validation"),
                ("MODEL_VERSION_TAG_DELETED", model_name, "1"),
            ),
            (
                lambda: client.delete_registered_model_alias(model_name, "champion"),
                ("MODEL_VERSION_ALIAS_DELETED", model_name, "1"),
            ),
            (
                lambda: client.delete_registered_model(model_name),
                ("REGISTERED_MODEL_DELETED", model_name, None),
            ),
        ]
        for change, expected in steps:
            change()
            wait_for(lambda e=expected: e in _arrivals(receiver, model_name), 60, f"{expected}")  # type: ignore[misc]
            assert _scans_so_far(daemon) == [], "arrived with the polls, not a scan"
        reads = {str(line["read"]) for line in daemon.logged("poll.finished")[1:]}
        assert "incremental+hot" in reads, reads
        arrived = _arrivals(receiver, model_name)
        assert len(arrived) == len(set(arrived)) == len(steps), arrived  # each once, no other
        assert daemon.terminate() == 0


def test_a_model_with_no_recent_activity_still_waits_for_its_scan(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    """With a hot window of 2 s, a model made 11 s earlier is not hot: its alias comes with
    the models scan (every 20 s here), not with the polls."""
    _made_earlier(client, model_name, 1)
    watch = 'models_scan_interval = "20s"\nversions_scan_interval = "1h"\nhot_window = "2s"\n'
    config = _hot_config(tmp_path, mlflow_server, receiver, f"{model_name}*", watch)
    with Daemon(config) as daemon:
        daemon.wait_logged("poll.baseline")
        client.set_registered_model_alias(model_name, "champion", "1")
        expected = ("MODEL_VERSION_ALIAS_CREATED", model_name, "1")
        wait_for(lambda: expected in _arrivals(receiver, model_name), 60, "the alias, at a scan")
        # The poll that brought it is logged before its delivery starts.
        assert any("models" in r for r in _scans_so_far(daemon)), "a models scan brought it"
        assert daemon.terminate() == 0


def test_a_rename_between_models_scans_is_one_event(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    """With the scans an hour apart, a steady poll reads the new name (MLflow moved its
    timestamp) and asks for the old one: one REGISTERED_MODEL_RENAMED with both names, and
    no deletion or creation, before any scan ran."""
    old, new = f"{model_name}-old", f"{model_name}-new"
    create_versions(client, old, 2)
    client.set_registered_model_alias(old, "champion", "2")
    watch = 'models_scan_interval = "1h"\nversions_scan_interval = "1h"\nhot_window = "off"\n'
    config = _hot_config(tmp_path, mlflow_server, receiver, f"{model_name}*", watch)
    with Daemon(config) as daemon:
        daemon.wait_logged("poll.baseline")
        client.rename_registered_model(old, new)
        receiver.wait_for_count(1, event="REGISTERED_MODEL_RENAMED", timeout=60)
        daemon.wait_polls(2)  # what "nothing more arrives" waits for
        assert _scans_so_far(daemon) == [], "seen by the polls, not a scan"
        events = [d.json for d in receiver.deliveries()]
        assert summary(events, "previous_name") == [("REGISTERED_MODEL_RENAMED", new, None, old)]
        assert daemon.terminate() == 0


def test_a_model_name_with_a_quote_is_read_by_name(
    client: Any, mlflow_server: MlflowServer, model_name: str
) -> None:
    from watcher.registry import ReaderSettings, RestReader

    name = f"o'brien-{model_name}"
    create_versions(client, name, 2)
    reader = RestReader(ReaderSettings(mlflow_server.url, mlflow_server.url, timeout=10))
    assert sorted(reader.versions_of(name)) == [(name, "1"), (name, "2")]


def test_a_registry_too_big_to_scan_in_a_poll_is_scanned_beside_the_polls(
    receiver: Receiver, tmp_path: Path
) -> None:
    """5,000 versions seeded into a server of its own: the version scan (about half a second
    here) takes more than a quarter of the 1 s interval, so the daemon runs it in the
    background. A tag only a scan can see, and transitions made while scans run, each arrive
    once; every poll stays short."""
    from bench.seed import create_schema, model_name, seed

    server = MlflowServer(tmp_path / "mlflow")
    create_schema(server.db)
    seed(server.db, 5000, 100)
    server.start(timeout=180)
    try:
        client = server.client()
        config = config_in(tmp_path, server, receiver, "*", interval="1s")
        config.write_text(
            config.read_text().replace(
                'events = ["MODEL_VERSION_TRANSITIONED_STAGE"]\n',
                'events = ["MODEL_VERSION_TRANSITIONED_STAGE", "MODEL_VERSION_TAG_SET"]\n',
            )
        )
        daemon = Daemon(config)
        daemon.start()
        try:
            daemon.wait_logged("poll.baseline", timeout=120)
            client.set_model_version_tag(model_name(3), "1", "e2e-reviewed", "yes")
            moved = []
            for index in range(10, 22):  # one transition a second for 12 s: across scans
                name = model_name(index)
                stage = (
                    "Staging"
                    if client.get_model_version(name, "1").current_stage != "Staging"
                    else "Production"
                )
                client.transition_model_version_stage(name, "1", stage)
                moved.append((name, stage))
                time.sleep(1.0)

            def arrived() -> list[dict[str, Any]]:
                return [d.json for d in receiver.deliveries()]

            wait_for(
                lambda: (
                    any(b["event"] == "MODEL_VERSION_TAG_SET" for b in arrived())
                    and len([b for b in arrived() if b["event"] != "MODEL_VERSION_TAG_SET"])
                    >= len(moved)
                ),
                90,
                "the tag and every transition",
            )
            merged = daemon.logged("scan.merged")
            assert merged, "no background scan was merged"
            assert any("versions" in str(m["kinds"]) for m in merged)
            tags = [b for b in arrived() if b["event"] == "MODEL_VERSION_TAG_SET"]
            assert [(t["model_name"], t["tag_key"], t["tag_value"]) for t in tags] == [
                (model_name(3), "e2e-reviewed", "yes")
            ]
            stages = sorted(
                (b["model_name"], b["to_stage"])
                for b in arrived()
                if b["event"] == "MODEL_VERSION_TRANSITIONED_STAGE"
            )
            assert stages == sorted(moved), "each transition once, none missed"
            polls = daemon.logged("poll.finished")[1:]
            assert any("(background)" in p["read"] for p in polls)
            # Polls never ran a version scan themselves after the baseline.
            assert not any(
                "versions" in p["read"] and "(background)" not in p["read"] for p in polls
            )
        finally:
            daemon.terminate()
    finally:
        server.stop()
