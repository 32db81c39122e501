from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import MlflowServer, Receiver, write_config

# MLflow warns that stages are deprecated on every transition; the watcher exists for them.
warnings.filterwarnings("ignore", category=FutureWarning)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real MLflow server for the session; tests keep apart by using their own models."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(mlflow_server: MlflowServer) -> Any:
    return mlflow_server.client()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    recv = Receiver()
    recv.start()
    yield recv
    recv.stop()


@pytest.fixture
def model_name() -> str:
    return f"model-{uuid.uuid4().hex[:8]}"


def create_versions(client: Any, name: str, count: int) -> None:
    client.create_registered_model(name)
    for i in range(1, count + 1):
        client.create_model_version(name, f"s3://bucket/models/{name}/{i}")


def watch_model(
    client: Any,
    server: MlflowServer,
    receiver: Receiver,
    name: str,
    tmp_path: Path,
    *,
    versions: int,
    **config: str,
) -> tuple[Path, Path]:
    """A model with versions, and a config watching only it: (config file, state file)."""
    create_versions(client, name, versions)
    state = tmp_path / "state.db"
    path = write_config(
        tmp_path / "watcher.toml",
        tracking_uri=server.url,
        webhook_url=receiver.url,
        state=state,
        models=name,
        **config,
    )
    return path, state


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
