"""Read-only, always: local stores the watcher reads directly are never written to.

An MLflow 3 client given an older MLflow database silently migrates it, after which the older
server cannot start. The watcher must refuse such a database with one clear line naming both
schema revisions, and leave every byte as it was; a database of its own revision, and a file
store, it reads without changing a byte either.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.compat.support import Agent, python_for, steps_in, watcher_config
from tests.e2e.harness import Receiver, Steps, run_watcher, summary, watcher_env

pytestmark = pytest.mark.timeout(600)


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under folder (journals and WAL files included) and its sha256."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_no_stray_files(folder: Path) -> None:
    """The watcher ran in `folder`: it holds the test's files and the state, no mlflow.db or
    mlruns that MLflow's store would make in the working directory."""
    assert sorted(p.name for p in folder.iterdir()) == [
        "client",
        "registry",
        "state.db",
        "state.db.lock",
        "watcher.toml",
    ], "no stray mlflow.db or mlruns in the watcher's working directory"


def schema_revision(db: Path) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def populate(python: Path, uri: str, workdir: Path) -> None:
    """A model with two versions, a stage, a tag and an alias, made by that MLflow's client."""
    client = Agent(python, uri, workdir, {"MLFLOW_ALLOW_FILE_STORE": "true"})
    try:
        client.create_registered_model("fraud-model", tags={"team": "risk"})
        client.create_model_version("fraud-model", "s3://bucket/fraud-model/1")
        client.create_model_version("fraud-model", "s3://bucket/fraud-model/2")
        client.transition_model_version_stage("fraud-model", "1", "Production")
        client.set_model_version_tag("fraud-model", "2", "validated", "yes")
        client.set_registered_model_alias("fraud-model", "champion", "1")
    finally:
        client.close()


@pytest.mark.parametrize("version", ["2.9", "2.22"])
def test_an_older_database_is_refused_and_left_byte_identical(
    version: str, receiver: Receiver, tmp_path: Path
) -> None:
    from mlflow.store.db.utils import _get_latest_schema_revision

    store = tmp_path / "registry"
    db = store / "mlflow.db"
    store.mkdir()
    populate(python_for(version), f"sqlite:///{db}", tmp_path / "client")
    old, new = schema_revision(db), str(_get_latest_schema_revision())
    assert old != new
    before = fingerprint(store)
    config = watcher_config(tmp_path, tracking_uri=f"sqlite:///{db}", webhook_url=receiver.url)

    for mode in ("--once", "--dry-run"):
        result = run_watcher("run", mode, "-c", str(config), cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        if mode == "--once":
            assert len(lines) == 1, result.stderr  # --dry-run also logs poll.failed before it
        assert lines[-1].startswith("mlflow-watcher: "), result.stderr
        assert old in lines[-1], lines[-1]
        assert new in lines[-1], lines[-1]
        assert "http://" in lines[-1], "tells the user to point it at the server's REST URL"
        assert fingerprint(store) == before, "not one byte of the database changed"
    assert receiver.deliveries() == []
    assert schema_revision(db) == old


def test_a_database_of_the_watchers_revision_is_read_without_a_write(
    receiver: Receiver, tmp_path: Path
) -> None:
    store = tmp_path / "registry"
    db = store / "mlflow.db"
    store.mkdir()
    uri = f"sqlite:///{db}"
    populate(Path(sys.executable), uri, tmp_path / "client")
    steps = steps_in(tmp_path, uri, receiver)

    before = fingerprint(store)
    assert steps.run() == []
    assert (steps.last("poll.baseline")["models"], steps.last("poll.baseline")["versions"]) == (
        1,
        2,
    )
    assert steps.run() == []
    assert fingerprint(store) == before

    client = Agent(Path(sys.executable), uri, tmp_path / "client")
    try:
        client.transition_model_version_stage("fraud-model", "2", "Staging")
        client.set_registered_model_alias("fraud-model", "champion", "2")
    finally:
        client.close()
    changed = fingerprint(store)
    assert summary(steps.run()) == [
        ("MODEL_VERSION_ALIAS_CREATED", "fraud-model", "2"),
        ("MODEL_VERSION_TRANSITIONED_STAGE", "fraud-model", "2"),
        ("MODEL_VERSION_TRANSITIONED_TO_STAGING", "fraud-model", "2"),
    ]
    assert fingerprint(store) == changed
    assert_no_stray_files(tmp_path)


def _file_store_steps(receiver: Receiver, tmp_path: Path) -> tuple[Path, Steps]:
    mlruns = tmp_path / "registry" / "mlruns"
    populate(Path(sys.executable), mlruns.as_uri(), tmp_path / "client")
    assert "MLFLOW_ALLOW_FILE_STORE" not in watcher_env(), "the watcher must allow it itself"
    return mlruns, steps_in(tmp_path, mlruns.as_uri(), receiver)


def test_a_file_store_is_read_without_a_write(receiver: Receiver, tmp_path: Path) -> None:
    mlruns, steps = _file_store_steps(receiver, tmp_path)
    before = fingerprint(mlruns)
    assert steps.run() == []
    assert steps.last("poll.baseline")["versions"] == 2
    assert steps.run() == []
    assert fingerprint(mlruns) == before


def test_a_file_store_leaves_no_stray_database_and_is_silent(
    receiver: Receiver, tmp_path: Path
) -> None:
    _mlruns, steps = _file_store_steps(receiver, tmp_path)
    result = run_watcher("run", "--once", "-c", str(steps.config), env=steps.env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_no_stray_files(tmp_path)
    assert result.stderr == "", "run --once is silent on success (cron mails what it prints)"
