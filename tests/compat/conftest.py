from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.support import Registry, file_store, start_server, steps_in
from tests.e2e.harness import Receiver, Steps

BACKENDS = ["2.9", "2.22", "3", "file"]
"""MLflow 2.9.2 and 2.22.x servers from venvs of their own, the project's MLflow 3 server, and
the project's MLflow 3 on a file store (no server)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "compat: the MLflow version matrix (builds venvs of old MLflow versions)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/compat/" in str(item.fspath):
            item.add_marker(pytest.mark.compat)
            item.add_marker(pytest.mark.e2e)  # `make unit` leaves them out
            # Under xdist (--dist loadgroup) a group runs on one worker: each backend's server
            # (and the basic-auth one) starts once, not once on every worker.
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "registry" in callspec.params:
                item.add_marker(pytest.mark.xdist_group(f"mlflow-{callspec.params['registry']}"))
            elif "auth_server" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group("basic-auth"))


@pytest.fixture(scope="session", params=BACKENDS, ids=lambda b: f"mlflow-{b}")
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """One registry per backend for the session; tests keep apart by using their own models."""
    label: str = request.param
    workdir = tmp_path_factory.mktemp(f"registry-{label}")
    registry = file_store(workdir) if label == "file" else start_server(label, workdir)
    try:
        yield registry
    finally:
        registry.client.close()
        if registry.server is not None:
            registry.server.stop()


@pytest.fixture
def steps(registry: Registry, receiver: Receiver, model_name: str, tmp_path: Path) -> Steps:
    """A watcher on `registry` that watches only this test's models (model_name*)."""
    return steps_in(tmp_path, registry.tracking_uri, receiver, registry.env, f"{model_name}*")
