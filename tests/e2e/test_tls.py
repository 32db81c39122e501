"""TLS to receivers: verified by default, with a private CA through ca_bundle."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import config_in, watch_model
from tests.e2e.harness import MlflowServer, Receiver, run_watcher


@pytest.fixture
def tls_receiver(private_ca: tuple[Path, ssl.SSLContext]) -> Iterator[Receiver]:
    receiver = Receiver(tls=private_ca[1])
    receiver.start()
    yield receiver
    receiver.stop()


def test_tls_is_verified_and_a_private_ca_can_be_trusted(
    client: Any,
    mlflow_server: MlflowServer,
    tls_receiver: Receiver,
    private_ca: tuple[Path, ssl.SSLContext],
    model_name: str,
    tmp_path: Path,
) -> None:
    config, _ = watch_model(client, mlflow_server, tls_receiver, model_name, tmp_path, versions=1)
    assert run_watcher("run", "--once", "-c", str(config)).returncode == 0
    client.transition_model_version_stage(model_name, "1", "Staging")

    refused = run_watcher("run", "--once", "--verbose", "-c", str(config))
    assert refused.returncode == 3
    assert "certificate verify failed" in refused.stderr
    assert tls_receiver.deliveries() == []

    trusted = config_in(
        tmp_path,
        mlflow_server,
        tls_receiver,
        model_name,
        webhook_extra=f'ca_bundle = "{private_ca[0]}"\n',
    )
    delivered = run_watcher("run", "--once", "-c", str(trusted))
    assert delivered.returncode == 0, delivered.stderr
    [delivery] = tls_receiver.deliveries()
    assert delivery.json["to_stage"] == "Staging"
